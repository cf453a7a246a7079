"""docs/guarantees.md is generated from the tests (tools/guarantees.py): it says what the tests'
``Guarantee:`` paragraphs say, and every relative link of the README and docs/ leads somewhere."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("guarantees", ROOT / "tools" / "guarantees.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_guarantees_page_is_what_the_tests_say():
    check = subprocess.run([sys.executable, str(ROOT / "tools" / "guarantees.py"), "--check"], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stderr + "\n(run: python tools/guarantees.py)"
    page = (ROOT / "docs" / "guarantees.md").read_text()
    assert page.count("`test_") >= 190 and "## `tests/test_bad_inputs.py`" in page


def test_a_guarantee_paragraph_becomes_a_row_and_a_test_without_one_is_left_out(tmp_path):
    (tmp_path / "test_sample.py").write_text('''"""Sample tests: what they are about."""


def test_plain():
    assert True


def test_proven():
    """Guarantee: a promise written over
    two lines | with a bar.

    More about the test, not a promise.

    Guarantee: a second promise."""


class TestGrouped:
    def test_in_a_class(self):
        """Guarantee: a promise in a class."""
''')
    (tmp_path / "test_nothing.py").write_text("def test_x():\n    pass\n")
    page = _generator().render(tmp_path)
    assert "## `tests/test_sample.py`\n\nSample tests: what they are about.\n" in page
    assert "| a promise written over two lines \\| with a bar. | `test_sample.py::test_proven` |" in page
    assert "| a second promise. | `test_sample.py::test_proven` |" in page
    assert "| a promise in a class. | `test_sample.py::test_in_a_class` |" in page
    assert "test_plain" not in page and "More about" not in page and "test_nothing" not in page


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold no links
    return re.findall(r"\]\(([^)\s]+)\)", text)


def _anchors(markdown: str) -> set[str]:
    from tests.test_docs import heading_anchors

    return heading_anchors(markdown)


def test_every_relative_link_of_the_readme_and_docs_leads_to_a_file_and_section_that_exist():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    checked, dangling = 0, []
    for page in pages:
        for link in _links(page):
            if re.match(r"[a-z]+:", link):  # https:, mailto:: not ours to check
                continue
            target, _, anchor = link.partition("#")
            path = (page.parent / target).resolve() if target else page
            checked += 1
            if not path.exists():
                dangling.append(f"{page.name}: {link} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path.read_text()):
                dangling.append(f"{page.name}: {link} (no such section)")
    assert checked >= 20 and dangling == []
