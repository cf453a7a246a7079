"""The repository is self-contained: nothing in it cites a file a clone does not have, and every
pointer into docs/background.md names a section that exists."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BACKGROUND = ROOT / "docs" / "background.md"

# The team's design notes live in a folder beside the repository, so a citation of them is a dead
# end for anyone with a clone; their facts belong in docs/background.md. The names are spelled in
# pieces here, so that this file cites nothing itself and is checked like every other file.
NOTES, SHARED, DESIGN = "ANCH" "ORS", "sha" "red", "des" "ign"
OUTSIDE = re.compile(rf"\b{NOTES}\b|\.\./{SHARED}\b|\b{SHARED}/{DESIGN}\b|\b{DESIGN}/[A-Z][A-Z_]*\.md")
POINTER = re.compile(r"docs/background\.md#([\w-]+)")

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def tracked_texts() -> dict[str, str]:
    """Every tracked text file of the checkout, by path (binary files, with NUL bytes, left out)."""
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    texts = {}
    for name in listing.stdout.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" not in data:
            texts[name] = data.decode("utf-8", errors="replace")
    return texts


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped,
    spaces turned into hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            anchors.add(re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("citation", [
    f"({NOTES}.md section 2)",
    f"{DESIGN}/{NOTES}.md section 6",
    f"see ../{SHARED}/{DESIGN}/STYLE.md",
    f"/work/{SHARED}/{DESIGN}/ARCHITECTURE.md",
    f"{DESIGN}/SLURM_LOCAL.md",
])
def test_the_outside_citation_pattern_catches_each_form_the_code_used(citation):
    assert OUTSIDE.search(citation)


@pytest.mark.parametrize("text", [
    "octave_base_scale=4,  # anchors 32, 64, 128 px",
    "see docs/background.md#mmrazors-cwd",
    "shared/ and design choices",
])
def test_the_outside_citation_pattern_leaves_ordinary_words_alone(text):
    assert not OUTSIDE.search(text)


@needs_git
def test_no_tracked_file_cites_the_design_notes_outside_the_repository():
    texts = tracked_texts()
    assert "docs/background.md" in texts and "studies/smoke.yaml" in texts
    offenders = [
        f"{name}:{number}: {line.strip()}"
        for name, text in texts.items()
        for number, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)
    ]
    assert not offenders, "cite docs/background.md instead:\n" + "\n".join(offenders)


def test_heading_anchors_follow_githubs_rule():
    markdown = "# Top\n## MMRazor's CWD\n### The official code's logs and run-to-run spread\ntext # not\n"
    assert heading_anchors(markdown) == {
        "top", "mmrazors-cwd", "the-official-codes-logs-and-run-to-run-spread"}


@needs_git
def test_every_pointer_into_the_background_doc_names_a_section_that_exists():
    anchors = heading_anchors(BACKGROUND.read_text())
    pointers = {
        (name, anchor)
        for name, text in tracked_texts().items()
        for anchor in POINTER.findall(text)
    }
    # The doc's own links are written "(#anchor)".
    pointers |= {("docs/background.md", a) for a in re.findall(r"\]\(#([\w-]+)\)", BACKGROUND.read_text())}
    assert len(pointers) >= 10, "the studies, losses and tests point into the doc"
    dangling = sorted(f"{name}: #{anchor}" for name, anchor in pointers if anchor not in anchors)
    assert not dangling, f"no such section in docs/background.md: {dangling}"
