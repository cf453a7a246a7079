"""Hostile text in a study and its results reaches the report as text, never as markup.

Every string a spec or a results store can put in a report (names, axis values, locations, config
names, error text, env.json, reference files, the spec text, the folders' paths) holds a payload
that would run a script, add an element or break a markdown table wherever it were not escaped.
The HTML is checked as a real browser ends up with it, scripts run; the markdown as written, and
rendered to a page (CommonMark with tables, raw HTML let through) in the same browser.
"""

import csv
import io
import json
import re
from pathlib import Path

import markupsafe
import pytest

from reports.render import md, md_start, render
from tests.browser import Dom, dump_dom, needs_chromium
from tests.results_fixtures import ENV, write_run

TEMPLATES = Path(__file__).resolve().parents[1] / "reports" / "templates"


def payload(field: str, slash: bool = True, line_break: bool = False) -> str:
    """Markup that, if it ran, sets ``document.body.dataset.pwned<field>`` (the body gets the
    attribute ``data-pwned-<field>``, which no literal text contains), plus markdown that would
    start a list, make links, emphasis, code, strikethrough, math or a table cell. ``slash``: with
    the parts that need a "/" (not in a file name); ``line_break``: with a bare carriage return."""
    js = f"document.body.dataset.pwned{field}=1"
    parts = [f"- {field}", f"\"><svg onload='{js}'>", f"'><img src=x onerror=\"{js}\">"]
    if slash:
        parts += [f"</script><script>{js}</script>", "https://evil.example"]
    parts += ["\r" if line_break else "", f"| *b* _u_ `c` ~s~ [x](javascript:{js}) www.evil.example $^$ &amp;"]
    return " ".join(parts)


def _reference_file(folder: Path, shown: dict) -> str:
    """A reference file (its name a payload too) whose every field is a payload: one row that
    matches the study's CWD cells, one that matches none."""
    name = payload("Reffile", slash=False) + ".csv"
    rows = [["method", "location", "dataset", "teacher", "student", "metric", "value", "teacher_value",
             "student_value", "n_runs", "source"],
            ["cwd", "logits", payload("Refdataset"), payload("Refteacher"), shown["Refstudent"], "mIoU", 40.25,
             55.5, 33.75, 3, shown["Refsource"]],
            [shown["Refmethod"], shown["Reflocation"], "fashion_scenes_val", "t", "s", payload("Refmetric"), 1, 2,
             3, 3, "A Paper"]]
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    (folder / "references").mkdir(parents=True)
    (folder / "references" / name).write_text(text.getvalue())
    return name


def _study_text(shown: dict, reference: str) -> str:
    quoted = {field: json.dumps(text) for field, text in shown.items()}  # YAML flow scalars
    return f"""# {shown["Comment"]}
name: hostile
description: {quoted["Description"]}
base:
  task: seg
  teacher: {{config: {quoted["Teacherconfig"]}}}
  student: {{config: tiny_seg_student}}
  dataset: {{name: fashion_scenes, params: {{num_train: 16, num_val: 8, size: 32}}}}
  schedule: {{iterations: 10}}
methods:
  {quoted["Method"]}: {{method: cwd, params: {{tau: 4.0}}, weight: 3.0, student_location: decode_head.conv_seg}}
  plain: {{method: cwd, params: {{tau: 4.0}}, weight: 3.0, student_location: {quoted["Location"]}}}
grid:
  dataset.params.note: [{quoted["Axis"]}, plain]
seeds: [0, 1, 2]
references: [{json.dumps(reference)}]
"""


def _write_results(study, shown: dict) -> None:
    """Every run's files, each with hostile env.json values and key; one failed run whose error is
    a payload, one diverged on a payload key, the rest complete with a payload memory kind."""
    env = {**ENV, "torch": shown["Torch"], "device_name": shown["Devicename"], "git_sha": shown["Gitsha"],
           "hostname": payload("Hostname"), shown["Envkey"]: "1"}
    for index, planned in enumerate(study.runs):
        cell = planned.kind == "cell"
        outcome = ("failed" if cell and planned.name.startswith("- Method") and planned.run.seed == 1
                   else "diverged" if cell and planned.name.startswith("plain") and planned.run.seed == 2
                   else 30.0 + index)
        write_run(study.directory, planned, outcome)
        folder = study.directory / planned.run_id
        (folder / "env.json").write_text(json.dumps(env))
        if outcome == "failed":
            (folder / "error.json").write_text(json.dumps(
                {"status": "failed", "error": "Traceback (most recent call last):\n" + shown["Error"]}))
        elif outcome == "diverged":
            (folder / "error.json").write_text(json.dumps({"status": "diverged", "step": 7,
                                                           "key": shown["Divergedkey"]}))
        else:
            final = json.loads((folder / "final.json").read_text())
            final["cost"]["peak_memory_kind"] = shown["Memorykind"]
            final["per_class"] = {"classes": ["background", shown["Classname"]], "IoU": [50.0, 20.0 + index],
                                  "Acc": [60.0, 40.0]}  # a plugin dataset can name its classes anything
            (folder / "final.json").write_text(json.dumps(final))


def hostile_store(tmp_path: Path):
    """(study, {field: the payload the report must show literally}); the study and its results sit
    in a folder whose name is a payload. Payloads only in places the report does not show
    (hostname, the references' teacher, dataset and metric) must not run either."""
    from kdbench.stages import load_study

    shown = {field: payload(field) for field in (
        "Comment", "Axis", "Error", "Divergedkey", "Torch", "Devicename", "Gitsha", "Envkey",
        "Memorykind", "Refmethod", "Reflocation", "Refstudent", "Refsource")}
    shown.update(Description=payload("Description", line_break=True), Method=payload("Method"),
                 Location=payload("Location", line_break=True),  # a table cell (figures draw no "\r")
                 Teacherconfig=payload("Teacherconfig", slash=False) + ".py",
                 Classname=payload("Classname") + r" \textbf{x} {} % # ^ ~ 50%")  # LaTeX's specials too
    folder = tmp_path / payload("Dir", slash=False)
    reference = _reference_file(folder, shown)
    (folder / "hostile.yaml").write_text(_study_text(shown, reference))
    study = load_study(folder / "hostile.yaml", folder / "results")
    _write_results(study, shown)
    shown.update(Reffile=reference, Dir=str(folder), Teacherconfig=shown["Teacherconfig"].removesuffix(".py"))
    assert len(shown["Error"]) <= 300  # the detail column keeps an error's last line up to 300 characters
    return study, shown


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    study, shown = hostile_store(tmp_path_factory.mktemp("hostile"))
    written = render(study, ("html", "md"))
    return study, shown, written


def _words(text: str) -> str:
    """Text with its whitespace runs (line breaks included) as single spaces, as a page shows it."""
    return " ".join(text.split())


def injected(dom: Dom, tags: set[str], image_source: str) -> list[str]:
    """What in a DOM no escaped text could have made: a tag outside ``tags``, an element inside one
    of its kind (a list in a list item: the templates nest none), an event handler, a payload's body
    attribute, a ``javascript:`` URL, an image whose source does not match ``image_source`` (a
    regular expression)."""
    found = []
    for tag, attributes, parents in dom.elements:
        if tag not in tags:
            found.append(f"<{tag}>")
        if tag in parents:
            found.append(f"<{tag}> in <{tag}>")
        found += [f"<{tag} {name}>" for name in attributes if name.startswith(("on", "data-pwned"))]
        found += [f"<{tag} {name}={value}>" for name, value in attributes.items() if "javascript:" in value.lower()]
        if tag == "img" and not re.fullmatch(image_source, attributes.get("src", "")):
            found.append(f"<img src={attributes.get('src')}>")
    return found


def not_literal(dom: Dom, shown: dict) -> list[str]:
    """The fields whose payload the page does not show as the very text it was."""
    text = _words(dom.text)
    return [field for field, value in shown.items() if _words(value) not in text]


HTML_TAGS = set(re.findall(r"<([a-z][a-z0-9]*)", (TEMPLATES / "report.html.j2").read_text()))
MARKDOWN_TAGS = {"html", "head", "meta", "body",  # the page around it
                 "h1", "h2", "h3", "p", "strong", "em", "ul", "li", "table", "thead", "tbody", "tr", "th", "td", "img",
                 "details", "summary", "pre"}  # what report.md.j2 makes, with its raw HTML


@needs_chromium
def test_the_payloads_run_and_show_in_this_browser_when_left_unescaped(tmp_path):
    """The checks below can fail: unescaped, each payload runs (onload, onerror, a script) and
    adds elements, and its text is not shown as written."""
    values = {field: payload(field) for field in ("Svg", "Img", "Script")}
    values["Svg"] = values["Svg"].replace("onerror", "x").replace("<script>", "<x>")
    values["Img"] = values["Img"].replace("onload", "x").replace("<script>", "<x>")
    values["Script"] = values["Script"].replace("onload", "x").replace("onerror", "x")
    page = tmp_path / "raw.html"
    page.write_text("<!DOCTYPE html><html><body>" + "".join(f'<p title="{v}">{v}</p>' for v in values.values())
                    + "</body></html>")
    dom = Dom(dump_dom(page))
    body = next(attributes for tag, attributes, _ in dom.elements if tag == "body")
    assert {"data-pwned-svg", "data-pwned-img", "data-pwned-script"} <= set(body)
    assert {"<svg>", "<script>", "<img src=x>"} <= set(injected(dom, HTML_TAGS, r"data:image/png;base64,.*"))
    assert not_literal(dom, values) == list(values)


@pytest.fixture(scope="module")
def html_dom(hostile):
    """The hostile HTML report as Chromium ends up with it."""
    *_, written = hostile
    return Dom(dump_dom(written["html"]))


@needs_chromium
def test_no_payload_adds_an_element_or_runs_in_the_html_report(html_dom):
    """Guarantee: Reports (HTML and markdown) show everything from specs and results as text: names, axis values,
    errors, env.json, reference files, the spec, paths; no payload adds an element, runs, breaks a table row or
    makes a link, checked in a real browser (the markdown rendered to a page too)."""
    assert html_dom.text.count("pwnedMethod") > 5  # the payloads are on the page, as text
    assert injected(html_dom, HTML_TAGS, r"data:image/png;base64,[A-Za-z0-9+/=]+") == []


@needs_chromium
def test_the_html_report_shows_every_payload_as_the_text_it_was(hostile, html_dom):
    _, shown, _ = hostile
    assert not_literal(html_dom, shown) == []


def _outside_pre(text: str) -> str:
    """The markdown around the spec's <pre> block (raw HTML, its text entity-escaped)."""
    before, pre, after = re.split(r"<pre>(.*?)</pre>", text, flags=re.S)
    assert "<" not in pre and ">" not in pre
    return before + after


def _unescaped(text: str) -> str:
    """Markdown with its backslash escapes taken out: what is left is read as markup."""
    return re.sub(r"\\.", "", text)


def test_the_markdown_file_holds_every_payload_escaped_and_nothing_raw(hostile):
    """Guarantee: The markdown file holds every payload escaped and nothing raw."""
    _, shown, written = hostile
    text = written["md"].read_bytes().decode()  # as written: a bare "\r" kept
    assert "\r" not in text
    for field, value in shown.items():
        if field != "Comment":  # only in the spec's <pre> block
            assert md(value) in text, field
        assert value not in text, field
    assert str(markupsafe.escape(shown["Comment"])) in text
    assert set(re.findall(r"<[^>]*>", text)) == {"<details>", "<summary>", "</summary>", "<pre>", "</pre>",
                                                  "</details>"}  # the template's own, no other
    assert re.findall(r"&(?!lt;|gt;|amp;|#34;|#39;)", text) == []
    markup = _unescaped(_outside_pre(text))
    assert "$" not in markup and "://" not in markup and "www." not in markup.lower()
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+\.png", target) for target in re.findall(r"\]\(([^)]*)\)", markup))
    lines = re.sub(r"\r\n?", "\n", markup)  # CommonMark's line endings
    for block in re.findall(r"(?:^\|.*\n)+", lines, flags=re.M):  # each table: as many cells in every row
        assert len({line.count("|") for line in block.splitlines()}) == 1, block[:300]


def _rendered(markdown: Path, folder: Path) -> Path:
    """The markdown as a page: CommonMark with GitHub's tables and strikethrough, raw HTML kept."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(markdown.read_text())
    page = folder / "README.html"
    page.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{body}</body></html>')
    return page


@needs_chromium
def test_the_markdown_rendered_to_a_page_shows_every_payload_as_text_and_runs_none(hostile, tmp_path):
    """Guarantee: The markdown rendered to a page shows every payload as text and runs none."""
    _, shown, written = hostile
    dom = Dom(dump_dom(_rendered(written["md"], tmp_path)))
    assert injected(dom, MARKDOWN_TAGS, r"[A-Za-z0-9_.-]+\.png") == []
    assert not_literal(dom, shown) == []
    assert sum(tag == "table" for tag, *_ in dom.elements) >= 5  # the tables are tables


@needs_chromium
def test_unescaped_markdown_would_fail_the_rendered_page_checks(tmp_path):
    """The rendered-markdown checks can fail: the same payloads, not escaped, start lists, add
    elements and run."""
    value = payload("Raw")
    markdown = tmp_path / "raw.md"
    markdown.write_text(f"{value}\n\n- {value}\n\n| a | b |\n|---|---|\n| {value} | x |\n")
    dom = Dom(dump_dom(_rendered(markdown, tmp_path)))
    found = injected(dom, MARKDOWN_TAGS, r"[A-Za-z0-9_.-]+\.png")
    assert {"<body data-pwned-raw>", "<svg>", "<script>", "<code>", "<ul> in <ul>"} <= set(found)
    assert not_literal(dom, {"Raw": value}) == ["Raw"]


def test_markdown_escaping_stops_autolinks_math_line_breaks_and_leading_list_markers():
    assert md("see https://x.y and www.Evil.com, $a^2$ a\rb\r\nc") == (
        "see https\\://x.y and www\\.Evil.com, \\$a^2\\$ a b c")
    assert [md_start(t) for t in ("- x", "+ x", "1. x", "12) x", "---", "  - x", "x - y")] == [
        "\\- x", "\\+ x", "1\\. x", "12\\) x", "\\---", "\\- x", "x - y"]


def test_dollar_signs_in_names_are_drawn_as_text_not_mathtext(tmp_path):
    """A pair of "$" in a method name would be typeset as math; "$^$" is no valid mathtext (it
    stopped every figure with a ValueError), so a figure drawn at all drew it as text."""
    from analysis import plots
    from analysis.collect import collect
    from tests.results_fixtures import STUDY, make_store

    study, _ = make_store(tmp_path, study_text=STUDY.replace("pi_logits", "pi $^$ $\\frac$"),
                          outcomes={"pi $^$ $\\frac$_s0": 33.0})
    figure = plots.method_bars(collect(study), "val/mIoU")
    assert figure is not None and figure.png.startswith(b"\x89PNG")
