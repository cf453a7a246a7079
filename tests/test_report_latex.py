"""``kdbench report --format latex``: every table of the report as a booktabs tabular in
``report/tables.tex``, and ``tables_preview.tex`` that compiles on its own with pdflatex (Debian's
texlive-latex-base and texlive-latex-recommended, installed by tools/setup.sh)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from kdbench.cli import main
from reports.latex import FIT, SPECIAL, SYMBOLS, Tex, preview, tabular, tex
from tests.results_fixtures import REFERENCE, SCRIPT, STUDY, make_store

needs_pdflatex = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is missing (Debian packages "
                                    "texlive-latex-base and texlive-latex-recommended: tools/setup.sh)")
# A class name as a plugin dataset could write it: every character LaTeX gives a meaning, and more.
HOSTILE = "traffic_light & <sign> #1 100% $5 {x} ~a^b \\end{document} | \"q\" -- ,, Straße 中文 ±"


def compile_tex(folder: Path, name: str) -> subprocess.CompletedProcess:
    """pdflatex on ``folder/name`` in a fresh copy of the folder (no earlier .aux file)."""
    return subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", name], cwd=folder,
                          capture_output=True, text=True, timeout=120)


@needs_pdflatex
def test_report_format_latex_writes_every_table_and_a_preview_that_compiles(tmp_path):
    """Guarantee: `report --format latex` writes every table of the report as a booktabs tabular in
    `tables.tex` (a summary with mean ± std, Δ with its 95% interval, the verdict as a mark and the published
    number beside the measured one), and `tables_preview.tex` compiles on its own with pdflatex."""
    study, results = make_store(tmp_path)
    code = main(["report", str(study.path), "--results", str(results), "--format", "html,md,latex"])
    out = results / study.name / "report"
    assert code == 0 and (out / "index.html").is_file() and (out / "README.md").is_file()
    body = (out / "tables.tex").read_text()
    preview = (out / "tables_preview.tex").read_text()
    assert body in preview and preview.startswith(r"\documentclass")
    for key in ("summary", "results", "significance", "gap", "references", "cost"):
        assert f"tab:kdbench:{key}" in body, key
    assert body.count(r"\toprule") == body.count(r"\bottomrule") == body.count(r"\begin{table}") >= 8
    summary = body.split(r"\end{table}")[0]
    # the verdict as a mark, the Δ with its interval, the published number beside the measured one
    assert r"cwd\_logits & 35.50 \ensuremath{\pm} 0.71 (n=2) & +4.50 [+2.01, +6.99]\ensuremath{^{\uparrow}} & 40.25" \
        in summary
    assert r"-10.00 [-15.98, -4.02]\ensuremath{^{\downarrow}}" in summary and r"\uparrow} a gain" in summary
    assert SCRIPT not in body and r"\textless{}script\textgreater{}alert(1)\textless{}/script\textgreater{}" in body
    built = tmp_path / "compile"
    shutil.copytree(out, built)
    (built / "tables.tex").unlink()   # the preview compiles on its own
    done = compile_tex(built, "tables_preview.tex")
    assert done.returncode == 0, done.stdout[-3000:]
    assert (built / "tables_preview.pdf").stat().st_size > 1000
    assert "mktexpk" not in done.stdout + done.stderr   # no font built on the fly: the set-up's fonts suffice


def test_report_format_latex_alone_writes_no_html_or_markdown(tmp_path):
    study, results = make_store(tmp_path)
    assert main(["report", str(study.path), "--results", str(results), "--format", "latex"]) == 0
    out = results / study.name / "report"
    assert (out / "tables.tex").is_file() and not (out / "index.html").exists() and not (out / "README.md").exists()


def test_latex_special_characters_in_class_and_method_names_print_literally():
    """Guarantee: Names with LaTeX's special characters (a class or method name) are escaped to print
    literally; a character pdflatex cannot print is written as its code point."""
    assert tex("a_b&c%d#e{f}g") == r"a\_b\&c\%d\#e\{f\}g"
    assert tex("\\end{x}") == r"\textbackslash{}end\{x\}"
    assert tex("~^<>|") == r"\textasciitilde{}\textasciicircum{}\textless{}\textgreater{}\textbar{}"
    assert tex("$5") == r"\ensuremath{\$}5"
    assert tex("a--b ,,") == "a-{}-b ,{},"           # no dash or quote ligature
    assert tex("Straße ± Δ 中") == r"Straße \ensuremath{\pm} \ensuremath{\Delta} [U+4E2D]"
    assert tex("one\ntwo\rthree") == "one two three"
    escaped = tex(HOSTILE)
    for sequence in [v for v in [*SPECIAL.values(), *SYMBOLS.values()] if v[0] in "\\{"] + ["{}"]:
        escaped = escaped.replace(sequence, "")
    assert not set(escaped) & set("\\_&#%$^~<>|{}\"") and "中" not in escaped


@needs_pdflatex
def test_a_table_of_hostile_class_names_compiles_and_keeps_its_rows(tmp_path):
    rows = [[HOSTILE, "1.00"], ["[x] *y", Tex(r"\textbf{2.00}")], ["*z", "4"], ["x" * 400, "3"]]   # wider than a page
    table = tabular(f"Per-class IoU: {HOSTILE}", ["[class] *", "IoU"], rows, "kdbench:per class & more")
    (tmp_path / "t.tex").write_text(preview(FIT + "\n" + table))
    done = compile_tex(tmp_path, "t.tex")
    assert done.returncode == 0, done.stdout[-3000:]
    assert table.count(r" \\") == 5 and r"\label{tab:kdbench:per-class---more}" in table
    assert "\n{}[x] *y & " in table and "\n{}*z & " in table


def test_a_study_whose_reference_file_has_no_rows_says_no_published_number(tmp_path):
    """Guarantee: A study whose reference file has no rows yet says "No published number" in its report."""
    (tmp_path / "references").mkdir()
    (tmp_path / "references" / "paperx.csv").write_text(REFERENCE.splitlines()[0] + ",tag\n")   # columns, no row
    study, results = make_store(tmp_path, study_text=STUDY.replace("fixture_ref.csv", "paperx.csv"))
    assert main(["report", str(study.path), "--results", str(results), "--format", "md,latex"]) == 0
    out = results / study.name / "report"
    said = "No published number: paperx.csv holds no published row yet"
    assert said in (out / "README.md").read_text()
    summary = (out / "tables.tex").read_text().split(r"\end{table}")[0]
    assert said in summary and "Published" not in summary.split(r"\midrule")[0]   # in its caption, not a column


@needs_pdflatex
@pytest.mark.slow  # a whole report of a shipped study, figures included
def test_the_paper_students_study_reports_in_latex_with_a_row_per_student_and_no_published_number(tmp_path):
    from kdbench.stages import load_study
    from reports.render import render
    from tests.results_fixtures import write_run

    root = Path(__file__).resolve().parents[1]
    study = load_study(root / "studies" / "paper_cityscapes_students.yaml", tmp_path)
    for index, planned in enumerate(study.runs):
        write_run(tmp_path / study.name, planned, 60.0 + (index * 7) % 11)
    out = render(study, ("latex",))["latex"].parent
    summary = (out / "tables.tex").read_text().split(r"\end{table}")[0]
    assert "No published number: paper\\_cityscapes\\_students.csv holds no published row yet" in summary
    assert summary.count(r"student (no distillation): ") == 3 and summary.count(r"cwd\_both, student.config ") == 3
    done = compile_tex(out, "tables_preview.tex")
    assert done.returncode == 0, done.stdout[-3000:]


def test_a_row_typed_into_the_empty_students_reference_file_sits_beside_its_own_student_only(tmp_path):
    """The format studies/README.md documents for the rows a person adds: the row names its student."""
    from analysis.collect import collect
    from analysis.summary import summarise
    from kdbench.stages import load_study
    from tests.results_fixtures import write_run

    studies = Path(__file__).resolve().parents[1] / "studies"
    for name in ("paper_cityscapes_students.yaml", "_paper_cityscapes.yaml"):
        shutil.copy(studies / name, tmp_path / name)
    (tmp_path / "references").mkdir()
    header = (studies / "references" / "paper_cityscapes_students.csv").read_text()
    (tmp_path / "references" / "paper_cityscapes_students.csv").write_text(
        header + 'cwd,logits,cityscapes_val,pspnet_r101,deeplabv3_r18,mIoU,75.5,,,3,"A person, typed from Table 4",'
                 '"typed by hand for this test"\n')
    study = load_study(tmp_path / "paper_cityscapes_students.yaml", tmp_path / "results")
    for index, planned in enumerate(study.runs):
        write_run(tmp_path / "results" / study.name, planned, 60.0 + index % 5)
    found = summarise(study, collect(study))
    placed = [(m.cell.method, m.cell.axes["student.config"]) for m in found.matches]
    assert placed == [("cwd_logits", "mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py")]
