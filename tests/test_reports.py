"""Reports rendered from a hand-written results store: the numbers, the runs without a result,
the CWD sentence, provenance, escaping, and the HTML as a real browser shows it."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from reports.render import render
from tests.browser import CHROMIUM, dump_dom, needs_chromium, screenshot
from tests.launch_helpers import run_cli
from tests.results_fixtures import CONSTANT, SCRIPT, make_store, make_tuned_store


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    study, results = make_store(tmp_path)
    written = render(study, ("html", "md"))
    return study, results, written["html"].read_text(), written["md"].read_text(), written


def test_markdown_tables_reproduce_mean_std_n_and_delta(report):
    *_, md, _ = report
    assert "| cwd\\_logits | **35.50 ± 0.71 (n=2)** | **+4.50** |" in md
    assert "| pi\\_logits | 33.00 (n=1) | +2.00 |" in md
    assert "| student (no distillation) | 31.00 ± 1.00 (n=3) | +0.00 |" in md
    assert "| teacher | 50.00 (n=1) | — |" in md
    assert "| Location | Dataset | Teacher | Student | mIoU | mIoU(T) | mIoU(S) |" in md
    assert ("| cwd\\_logits @ decode\\_head.conv\\_seg | fashion\\_scenes | tiny\\_seg\\_teacher "
            "| tiny\\_seg\\_student | **35.50 ± 0.71 (n=2)** | 50.00 (n=1) | 31.00 ± 1.00 (n=3) |") in md


def test_diverged_failed_corrupt_and_missing_runs_are_listed(report):
    *_, html, md, _ = report
    for text in (html, md):
        assert "4 of 13 runs have no result and are not averaged" in text
        assert "diverged at step 7 (loss loss" in text and "RuntimeError: CUDA out of memory" in text
        assert "never started" in text and "missing or not finite in final.json" in text


def test_the_cwd_sentence_is_computed_from_the_data(report):
    *_, html, md, _ = report
    # cwd_logits 35, 36 (seeds 0, 1) vs the baseline 30, 31, 32 (seeds 0, 1, 2): other seeds, so Welch.
    # Δ = 35.5 - 31 = 4.5; se = sqrt(0.5 / 2 + 1 / 3) = 0.7638; df = 0.5833² / (0.25² / 1 + 0.3333² / 2) = 2.882;
    # t(0.975, 2.882) = 3.257 (R: qt(0.975, 2.882)), so 4.5 ± 2.488; p = 2 P(T > 5.892) = 0.0109. The other
    # tested cell (21 vs 31, Welch) has p = 0.0215: Holm over 2 makes both max(2 x 0.0109, 0.0215) = 0.022.
    sentence = ("a gain, Δ +4.50 mIoU vs the student baseline, 95% interval [+2.01, +6.99] (Welch, Holm-corrected "
                "p 0.022); 35.50 ± 0.71 (n=2) vs 31.00 ± 1.00 (n=3); it closes 23.7% of the teacher-student gap "
                "(95% interval [10.6%, 36.8%], the teacher taken as fixed).")
    # The teacher's 50 (one run) against the baseline's 31: a gap of 19; 4.5 / 19 = 23.7%, the interval
    # [2.01 / 19, 6.99 / 19] = [10.6%, 36.8%].
    assert "cwd_logits: " + sentence in html
    assert "cwd\\_logits: " + sentence.replace("[", "\\[").replace("]", "\\]") in md
    assert ("CWD beat the student baseline in 1 of 1 tested CWD cell (a gain beyond noise at 95%, Holm-corrected "
            "across the study's 2 tested cells).") in md


def test_the_cwd_sentence_says_so_when_cwd_loses(tmp_path):
    study, results = make_store(tmp_path, {"cwd_logits_s0": 30.5, "cwd_logits_s1": 31.0})
    md = render(study, ("md",))["md"].read_text()
    assert ("CWD beat the student baseline in 0 of 1 tested CWD cell (a gain beyond noise at 95%, Holm-corrected "
            "across the study's 2 tested cells); 1 within noise.") in md
    # Δ = 30.75 - 31 = -0.25, Welch: se = sqrt(0.125 / 2 + 1 / 3) = 0.629, t = -0.40, p = 0.72 (Holm: max(0.043,
    # 0.72)). Seeds: σ = sqrt((0.125 + 1) / 2) = 0.75, Δ / σ = 1/3; the normal approximation gives 2 (1.96 + 0.84)² x 9
    # = 141.3 per side; its t form, 2 (t(0.975, 2n - 2) + t(0.8, 2n - 2))² x 9 = 2 (1.968 + 0.843)² x 9 = 142.3 at
    # n = 142 or 143, first holds (<= n) at 143.
    assert ("cwd\\_logits: within noise, Δ -0.25 mIoU vs the student baseline, 95% interval") in md
    assert "a Δ this size needs 143 seeds to resolve (power 0.8), it has 2." in md


def test_reports_carry_their_provenance(report):
    study, _, html, md, _ = report
    import hashlib

    digest = hashlib.sha256(Path(study.path).read_bytes()).hexdigest()
    for text in (html, md):
        assert digest in text and str(study.path) in text and "0123456789abcdef" in text
        assert "torch" in text and "2.13.0+cpu" in text and "mmseg" in text
    assert "Hand-written results for the report tests." in html


def test_html_is_one_self_contained_file_and_markdown_has_its_figures_beside_it(report):
    *_, html, md, written = report
    assert html.count('src="data:image/png;base64,') >= 3
    assert not re.search(r'(src|href)="(https?:|//|file:)', html) and "<link" not in html
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert len(pictures) >= 3 and all((written["md"].parent / p).is_file() for p in pictures)


def test_a_script_name_stays_escaped_in_html_and_markdown(report):
    *_, html, md, _ = report
    assert SCRIPT not in html and SCRIPT not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md


def test_cli_collect_and_report_write_the_cache_and_only_the_formats_asked(tmp_path):
    study, results = make_store(tmp_path)
    code, out, err = run_cli("collect", str(study.path), "--results", str(results))
    assert code == 0, err
    assert "13 runs (9 complete, 1 corrupt, 1 diverged, 1 failed, 1 missing)" in out
    assert (results / "fixture" / "runs.parquet").is_file()
    code, out, err = run_cli("report", str(study.path), "--results", str(results), "--format", "md")
    assert code == 0, err
    assert (results / "fixture" / "report" / "README.md").is_file()
    assert "CWD beat the student baseline in 1 of 1 tested CWD cell" in out
    assert not (results / "fixture" / "report" / "index.html").exists()
    code, out, err = run_cli("report", str(study.path), "--results", str(results), "--format", "pdf")
    assert code == 2 and "unknown pdf" in err


@pytest.mark.slow  # a Chromium process: seconds
@needs_chromium
def test_a_headless_browser_shows_the_tables_and_keeps_the_script_inert(report, tmp_path):
    """Guarantee: A headless browser shows the tables and keeps the script inert."""
    *_, written = report
    dom = dump_dom(written["html"])
    assert dom.count("<table") >= 5 and "35.50 ± 0.71 (n=2)" in dom and "Did CWD beat the student baseline?" in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert 'id="numerics-provenance"' in dom and "complete runs recorded" in dom
    # How far CWD closes the gap: teacher 50, baseline mean 31 (gap 19); cwd_logits Δ 4.5, its Welch interval
    # [2.01, 6.99] (tests/test_statistics.py): 4.5 / 19 = 23.7%, [2.01 / 19, 6.99 / 19] = [10.6%, 36.8%].
    gap = dom[dom.index('<section id="gap">'):]
    gap = gap[:gap.index("</section>")]
    assert "How far distillation closes the teacher-student gap" in gap and "share of the gap closed" in gap
    assert "23.7%" in gap and "[10.6%, 36.8%]" in gap and "taken as fixed" in gap
    assert "it closes 23.7% of the teacher-student gap (95% interval [10.6%, 36.8%]" in dom
    assert "<script>alert(1)" not in dom and "<script" not in dom.lower().replace("&lt;script", "")
    shot = tmp_path / "page.png"
    screenshot(written["html"], shot, 1200, 900)
    import matplotlib.image

    pixels = (matplotlib.image.imread(shot)[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours = np.unique(pixels, axis=0)
    assert len(colours) > 50, f"the screenshot looks blank ({len(colours)} colours)"
    assert shutil.which(str(CHROMIUM))


@pytest.mark.slow  # a Chromium process: seconds
@needs_chromium
def test_a_headless_browser_shows_the_tuning_section_with_each_held_out_score_choice_and_budget(tmp_path):
    """Guarantee: A headless browser shows the tuning section with each held out score choice and budget."""
    from tests.browser import Dom

    study, _ = make_tuned_store(tmp_path)
    written = render(study, ("html", "md"))
    dom = Dom(dump_dom(written["html"]))
    tuning = [e for e in dom.elements if e[1].get("id") == "tuning-section"]
    assert tuning and "Tuning: every setting tried" in dom.text and "Tuning: choice and budget per method" in dom.text
    # Held-out mIoU: the baseline's lr 0.02 (29.50) beats 0.01 (28.00); cwd_logits' weight 1 diverged,
    # so weight 3 (33.00) is chosen and weight 1 is named as never chosen.
    assert "schedule.lr = 0.02" in dom.text and "29.50" in dom.text and "28.00" in dom.text
    assert "never: no held-out score" in dom.text and "tune_cwd_logits_w1_s0" in dom.text
    md = written["md"].read_text()
    assert "| student baseline | schedule.lr = 0.02 | **29.50** | complete | chosen |" in md
    assert "| cwd\\_logits | weight = 3 | 2 | 20 |" in md
    # The final cells are analysed as usual, against the tuned baseline (31.00 ± 1.00 on val); the only cell of
    # its column gets no "best" mark.
    assert "| cwd\\_logits | 36.00 ± 1.00 (n=3) | +5.00 |" in md


ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (ROOT / "studies").glob("[!_]*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_study_reports_before_any_run_has_finished(path, tmp_path):
    from kdbench.stages import load_study

    study = load_study(path, tmp_path)
    md = render(study, ("md",))["md"].read_text()
    assert f"{len(study.runs)} of {len(study.runs)} runs have no result" in md
    assert "No figure: no complete run yet." in md


def _filled(name, tmp_path):
    """A shipped study whose every run has a made-up result (seed-dependent, deterministic)."""
    from kdbench.stages import load_study
    from tests.results_fixtures import write_run

    study = load_study(ROOT / "studies" / f"{name}.yaml", tmp_path)
    for index, planned in enumerate(study.runs):
        write_run(tmp_path / study.name, planned, 30.0 + (index * 7) % 11)
    return render(study, ("md",))["md"]


@pytest.mark.slow  # five whole reports, figures included
@pytest.mark.parametrize("name, expected", [
    ("paper_table2_cityscapes", ["Feature map vs logits (the paper's Table 2 layout)", "| cwd (channel-wise) | ",
                                 "74.87",
                                 "cwd → cwd\\_logits",
                                 "![mIoU: spatial vs channel-wise distillation](location_bars.png)"]),
    ("ablation_norm_divergence", ["Ablation: norm x divergence", "| norm \\\\ divergence | kl | mse |",
                                  "![mIoU: normalisation x divergence](norm_divergence_bars.png)"]),
    ("ablation_loss_weight", ["Ablation: weight", "![mIoU vs weight](sweep_weight.png)"]),
    ("ablation_location", ["### Ablation: where to distil",
                           "| both | feature map + logits | decode\\_head.conv\\_seg; ",
                           "CWD beat the student baseline in 0 of 3 tested CWD cells",
                           "- feature: a loss, Δ -2.00 mIoU vs the student baseline"]),
    ("paper_table6_coco", ["| Location | Dataset | Teacher | Student | mAP | mAP(T) | mAP(S) |",
                           "| cwd → cwd\\_fpn | faster\\_rcnn\\_r50 |", "| cwd → cwd\\_fpn | reppoints\\_r50 |",
                           "| fbkd → fbkd\\_fpn | retinanet\\_r50 | 39.60 | — | 37.40 |",
                           'The "Location" column is left out: no row has a value there.']),
])
def test_shipped_studies_get_the_tables_their_axes_call_for(name, expected, tmp_path):
    """Guarantee: Shipped studies get the tables their axes call for."""
    path = _filled(name, tmp_path)
    md = path.read_text()
    for text in expected:
        assert text in md
    assert "None: every planned run is complete." in md


def test_markdown_escaping_keeps_names_literal():
    from reports.render import md

    assert md("a|b <img src=x> [x](y) *z* `c`\nd") == (
        "a\\|b &lt;img src=x&gt; \\[x\\](y) \\*z\\* \\`c\\` d")


def test_a_collapsed_student_baseline_is_called_out_beside_the_cwd_verdict(tmp_path):
    """Guarantee: A baseline that collapsed to predicting one class is called out beside the CWD verdict."""
    study, results = make_store(tmp_path, metrics={"student_s0": CONSTANT, "student_s2": CONSTANT,
                                                   "cwd_logits_s1": CONSTANT})
    written = render(study, ("html", "md"))
    warning = ("warning: 2 of 3 complete runs of the student baseline predict a single class everywhere "
               "(mAcc = 100 / classes evaluated); the comparison is against a collapsed baseline.")
    cell = "warning: 1 of 2 complete runs of cwd_logits predicts a single class everywhere"
    html, md = written["html"].read_text(), written["md"].read_text()
    assert warning in html and cell in html
    assert f"- **{warning}**" in md and cell.replace("_", "\\_") in md
    code, out, err = run_cli("report", str(study.path), "--results", str(results), "--format", "md")
    assert code == 0 and f"  - {warning}" in out


def test_no_collapse_warning_when_every_run_predicts_more_than_one_class(report):
    *_, html, md, _ = report
    assert "single class everywhere" not in html and "single class everywhere" not in md


def test_provenance_says_when_runs_come_from_several_commits_or_another_than_the_reports():
    from reports.render import provenance_notes

    shas = [{"sha": "aaaa1111", "runs": 9}, {"sha": "bbbb2222", "runs": 3}]
    notes = provenance_notes("aaaa1111ffff", shas)
    assert notes == ["The runs were made from 2 different commits: aaaa1111 (9 runs), bbbb2222 (3 runs).",
                     "3 runs recorded another commit (bbbb2222) than the code at report time (aaaa1111ffff)."]
    assert provenance_notes("aaaa1111ffff", shas[:1]) == []  # a short sha of the same commit
    assert provenance_notes("unknown", shas[:1]) == []
    assert provenance_notes("aaaa1111+dirty", shas[:1]) == [
        "The working tree had uncommitted changes at report time (+dirty): the report's code is not exactly any "
        "commit."]


def test_the_report_lists_the_runs_commits_with_their_counts(tmp_path):
    import json

    study, results = make_store(tmp_path)
    for name in ("student_s0", "student_s1"):
        run = next(p for p in study.runs if p.name == name)
        env_file = results / study.name / run.run_id / "env.json"
        env_file.write_text(json.dumps({**json.loads(env_file.read_text()), "git_sha": "fedcba9876543210"}))
    md = render(study, ("md",))["md"].read_text()
    assert "- Code the runs recorded (env.json): 0123456789abcdef (10 runs), fedcba9876543210 (2 runs)" in md
    assert ("- **The runs were made from 2 different commits: 0123456789abcdef (10 runs), fedcba9876543210 "
            "(2 runs).**") in md


def _git(where, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=where,
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_report_time_sha_is_marked_dirty_when_the_working_tree_has_changes(tmp_path, monkeypatch):
    from reports.render import git_sha

    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("one")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "one")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert git_sha(tmp_path) == head
    (tmp_path / "a.txt").write_text("two")
    assert git_sha(tmp_path) == head + "+dirty"
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above it
    assert git_sha(outside) == "unknown"
    monkeypatch.setenv("PATH", str(outside))  # no git at all
    assert git_sha(tmp_path) == "unknown"


def test_markdown_headings_are_never_repeated(report):
    *_, md, _ = report
    titles = [line.lstrip("#").strip() for line in md.splitlines() if line.startswith("#")]
    assert "Every run" in titles and "Runs without a result" in titles
    assert len(titles) == len(set(titles)), sorted(t for t in titles if titles.count(t) > 1)


def test_a_study_without_a_tau_or_alpha_axis_says_why_it_has_no_sweep_figure(report, tmp_path):
    from tests.results_fixtures import STUDY

    *_, html, md, _ = report
    note = "No sweep figures: this study varies no τ or α"
    assert note in md and note in html
    text = STUDY.replace("references: [fixture_ref.csv]", "grid: {method: [cwd_logits], term.params.tau: [1, 4]}")
    outcomes = {f"cwd_logits_tau{t}_s{i}": 30.0 + t + i for t in (1, 4) for i in range(3)}
    study, results = make_store(tmp_path, outcomes, text)
    swept = render(study, ("md",))["md"].read_text()
    assert note not in swept and "![mIoU vs tau](sweep_tau.png)" in swept


DEMO = ROOT / "tools" / "demo.sh"


def _demo(function: str, stdin: str) -> subprocess.CompletedProcess:
    """One of tools/demo.sh's functions, the script sourced (its main does not run), fed ``stdin``."""
    return subprocess.run(["bash", "-c", f'source "$1" && {function}', "demo", str(DEMO)], input=stdin,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_demo_sh_finds_the_report_paths_in_the_output_of_kdbench_report(tmp_path):
    (tmp_path / "a dir: with spaces").mkdir()
    study, results = make_store(tmp_path / "a dir: with spaces")
    code, out, err = run_cli("report", str(study.path), "--format", "html,md", "--results", str(results))
    assert code == 0, err
    html, md = _demo("report_path html", out), _demo("report_path md", out)
    assert html.returncode == 0 and md.returncode == 0, html.stderr + md.stderr
    assert html.stdout.strip() == str(results / "fixture" / "report" / "index.html")
    assert md.stdout.strip() == str(results / "fixture" / "report" / "README.md")
    sentences = _demo("report_sentences", out).stdout
    assert sentences.startswith("CWD beat the student baseline in 1 of 1 tested CWD cell")
    assert "kdbench report: " not in sentences


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_demo_sh_stops_with_a_reason_when_the_report_output_has_no_such_path(tmp_path):
    missing = _demo("report_path html", "kdbench report: smoke: md: /nowhere/README.md\nCWD beat ...\n")
    assert missing.returncode != 0 and 'expected one "kdbench report: <study>: html: <path>" line' in missing.stderr
    gone = _demo("report_path md", "kdbench report: smoke: md: /nowhere/README.md\n")
    assert gone.returncode != 0 and "/nowhere/README.md, which is not a file" in gone.stderr


def test_the_report_says_per_cell_whether_its_runs_were_deterministic_and_flags_runs_that_differ(tmp_path):
    """Guarantee: The report says per cell whether its runs were deterministic, with their threads and device, and
    flags a cell whose runs differ in any numerics setting or version."""
    import json

    study, results = make_store(tmp_path)

    def change(name: str, **values) -> None:
        run = next(p for p in study.runs if p.name == name)
        env_file = results / study.name / run.run_id / "env.json"
        env_file.write_text(json.dumps({**json.loads(env_file.read_text()), **values}))

    for name in ("pi_logits_s0", "pi_logits_s1"):  # s1 failed: not averaged, not compared
        change(name, deterministic=True, cudnn_deterministic=True)
    change("cwd_logits_s1", threads=2)
    md = render(study, ("md",))["md"].read_text()
    assert "| cwd\\_logits | 2 | no | 1, 2 | cpu | CPU threads (1, 2) |" in md
    assert "| pi\\_logits | 1 | yes | 1 | cpu | nothing |" in md
    assert "| student (no distillation) | 3 | no | 1 | cpu | nothing |" in md
    assert ("- **The runs of cwd\\_logits differ in CPU threads (1, 2): their spread is not seed noise alone.**"
            in md)
    assert ("- **This study's runs differ in CPU threads (1, 2); deterministic algorithms (false, true); cuDNN "
            "deterministic (false, true): a Δ between runs made under different settings includes that "
            "difference.**") in md
    assert "the CPU thread count, deterministic algorithms and cuDNN/cuBLAS settings" in md


def test_runs_that_agree_in_every_setting_get_no_warning(report):
    *_, md, _ = report
    assert "their spread is not seed noise alone" not in md and "This study's runs differ" not in md
    assert "| teacher | 1 | no | 1 | cpu | nothing |" in md


def test_a_kd_inactive_run_is_listed_with_its_term_and_reason_and_never_averaged(tmp_path):
    """Guarantee: A kd inactive run is listed with its term and reason and never averaged."""
    from analysis.collect import collect
    from kdbench.states import format_status, run_states
    from kdbench.store import scan

    study, results = make_store(tmp_path, {"pi_logits_s1": "kd_inactive"})
    frame = collect(study)
    row = frame[frame["name"] == "pi_logits_s1"].iloc[0]
    assert row["status"] == "kd_inactive"
    assert row["detail"] == ("distill term pi_logits inactive: its loss is exactly 0 at each of the first 5 training "
                             "steps")
    md = render(study, ("md",))["md"].read_text()
    assert "| pi\\_logits | 33.00 (n=1) | +2.00 |" in md  # seed 0 alone: s1 is not averaged
    assert "kd\\_inactive | distill term pi\\_logits inactive" in md
    statuses = run_states(study, scan(study.directory, [p.run_id for p in study.runs]), {})
    assert "kd_inactive" in format_status(study, statuses)


def test_the_report_shows_each_cells_recipe_and_calls_a_cell_not_comparable_to_a_row_whose_recipe_differs(tmp_path):
    """Guarantee: The report shows each cell's recipe and names a cell not comparable to a published row whose stated
    recipe fields (epochs, iterations, batch, crop, pipeline, lr, teacher mode, precision) differ, with both
    values."""
    import json

    study, results = make_store(tmp_path)
    card = {"global_batch": 2, "per_process_batch": 2, "processes": 1, "nodes": 1, "iterations": 10, "epochs": 1.25,
            "crop": [32, 32], "pipeline": "default", "optimizer": "sgd", "lr": 0.01, "lr_schedule": "poly",
            "teacher_checkpoint": None, "teacher_mode": None, "precision": "fp32"}
    for final in (results / study.name).glob("*/final.json"):
        record = json.loads(final.read_text())
        distilled = record["role"] == "student" and record["name"].startswith(("cwd", "pi", "<"))
        record["recipe"] = {**card, **({"teacher_checkpoint": "teacher run abc", "teacher_mode": "eval"}
                                       if distilled else {})}
        final.write_text(json.dumps(record))
    references = tmp_path / "references" / "fixture_ref.csv"
    rows = references.read_text().splitlines()
    references.write_text("\n".join([rows[0] + ",recipe_iterations,recipe_pipeline,recipe_crop"]
                                    + [row + ',40000,crop_only,"[32, 32]"' for row in rows[1:]]) + "\n")
    md = render(study, ("md",))["md"].read_text()
    assert "### Recipe per cell" in md
    assert ("| cwd\\_logits | 2 (2 x 1 x 1) | 10 (1.25) | 32x32 | default | sgd, 0.01, poly | teacher run abc, eval "
            "| fp32 |") in md
    assert ("cwd\\_logits is not comparable to fixture\\_ref.csv (cwd, s): published vs measured iterations 40000 vs "
            "10; pipeline crop\\_only vs default.") in md


def _markdown_tables(md: str) -> list[list[list[str]]]:
    """Every table of a markdown report: its rows (header first, the --- line dropped) as cell texts."""
    found, rows = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif rows:
            found.append([row for row in rows if not all(set(c) <= {"-"} for c in row)])
            rows = []
    return found


def test_the_mmrazor_layout_is_named_after_mmrazor_and_no_column_is_all_dashes(report):
    """Guarantee: The mmrazor layout is named after mmrazor and no column is all dashes."""
    import html as html_module

    *_, html, md, _ = report
    html = html_module.unescape(html)
    for text in (html, md):
        assert "seed's format" not in text and "Results in the layout of MMRazor's CWD README table" in text
    # A logits-only study: Table 2's feature-map columns would hold nothing but dashes.
    assert "| Method | Logits | Logits (published) |" in md
    assert ('The "Feature map" column is left out: no cell of this study distils a feature map. '
            'The "Feature map (published)" column is left out: no published number matches a feature map cell.'
            ) in md
    assert 'The "Feature map" column is left out: no cell of this study distils a feature map.' in html
    tables = _markdown_tables(md)
    assert len(tables) >= 6
    for table in tables:
        header, *body = table
        for index, name in enumerate(header[1:], start=1):
            assert not body or any(row[index] != "—" for row in body), f"column {name!r} is all dashes"


def test_a_table_with_nothing_but_labels_left_is_left_out_with_a_sentence():
    """Guarantee: A table with nothing but labels left is left out with a sentence."""
    from analysis.tables import Cell, Table, shown

    empty = Table("x", "Ablation: tau", ["tau", "cwd"], [[Cell("1"), Cell("—")], [Cell("4"), Cell("—")]])
    kept, notes = shown([empty, Table("y", "Other", ["a", "b"], [[Cell("1"), Cell("2")]])])
    assert [t.key for t in kept] == ["y"]
    assert notes == ['The table "Ablation: tau" is left out: none of its rows has a value yet.']


@pytest.mark.slow  # a Chromium process: seconds
@needs_chromium
def test_a_headless_browser_shows_the_equal_budget_section_and_its_pareto_figure(tmp_path):
    """Guarantee: A headless browser shows the equal budget section and its pareto figure."""
    from tests.browser import Dom
    from tests.results_fixtures import make_budget_store

    written = render(make_budget_store(tmp_path), ("html",))
    dom = Dom(dump_dom(written["html"]))
    assert "Equal budgets: Δ vs the student baseline and vs the student trained as long" in dom.text
    assert "Where each equal budget comes from" in dom.text and "student_budget_s0" in dom.text
    assert "student, equal budget" in dom.text and "+1.75" in dom.text
    figure = [attrs for tag, attrs, _ in dom.elements if tag == "figure" and attrs.get("id") == "fig-budget_front"]
    images = [attrs for tag, attrs, inside in dom.elements if tag == "img" and "figure" in inside
              and attrs.get("src", "").startswith("data:image/png;base64,")]
    assert figure and images


def test_the_report_flags_a_cell_whose_runs_ran_on_other_cpu_instruction_sets_and_a_run_resumed_under_another(
        tmp_path):
    """Guarantee: The report flags a cell whose runs recorded another CPU model, ATen CPU capability or oneDNN ISA,
    and a run whose attempts (a resume on another node) did."""
    import json

    study, results = make_store(tmp_path)

    def change(name: str, **values) -> None:
        run = next(p for p in study.runs if p.name == name)
        env_file = results / study.name / run.run_id / "env.json"
        env_file.write_text(json.dumps({**json.loads(env_file.read_text()), **values}))

    avx512 = "Intel AVX-512 with Intel DL Boost and bfloat16 support"
    for name in ("cwd_logits_s0", "cwd_logits_s2", "pi_logits_s0"):
        change(name, cpu_model="AMD EPYC", onednn_isa=avx512)
    change("cwd_logits_s1", cpu_model="AMD EPYC", onednn_isa="Intel AVX2")
    change("pi_logits_s0", earlier_attempts=[{"hostname": "node-a", "cpu_model": "Intel Xeon",
                                              "onednn_isa": "Intel AVX2"}])
    md = render(study, ("md",))["md"].read_text()
    assert (f"- **The runs of cwd\\_logits differ in oneDNN ISA ({avx512}, Intel AVX2): their spread is not seed "
            "noise alone.**") in md
    pi = next(p for p in study.runs if p.name == "pi_logits_s0")
    assert (f"Run pi\\_logits\\_s0 ({pi.run_id}) was resumed under other settings than its earlier attempts: CPU "
            f"model (AMD EPYC, Intel Xeon); oneDNN ISA ({avx512}, Intel AVX2); its result mixes them.") in md


def test_a_run_records_the_cpu_instruction_sets_its_kernels_dispatch_to_and_its_earlier_attempts(tmp_path):
    """env.json's CPU numerics come from the libraries themselves: oneDNN's ISA follows
    ONEDNN_MAX_CPU_ISA (measured: it alone changes a training run's weights), and a resumed
    attempt keeps the earlier attempt's settings."""
    import json
    import sys

    from runners.train import attempt_environment, cpu_numerics

    here = cpu_numerics()
    assert here["cpu_capability"] in ("DEFAULT", "AVX2", "AVX512") and here["onednn_isa"]
    capped = subprocess.run([sys.executable, "-c", "import json; from runners.train import cpu_numerics; "
                             "print(json.dumps(cpu_numerics()))"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}, cwd=ROOT)
    assert capped.returncode == 0, capped.stderr
    assert json.loads(capped.stdout.splitlines()[-1])["onednn_isa"] == "Intel AVX2"
    (tmp_path / "env.json").write_text(json.dumps({"hostname": "node-a", "onednn_isa": "Intel AVX2", "torch": "2"}))
    env = attempt_environment(tmp_path, {"hostname": "node-b", "onednn_isa": here["onednn_isa"], "torch": "2"})
    assert env["hostname"] == "node-b" and env["earlier_attempts"][0]["hostname"] == "node-a"
    assert env["earlier_attempts"][0]["onednn_isa"] == "Intel AVX2"
    assert attempt_environment(tmp_path / "fresh", {"hostname": "x"}) == {"hostname": "x"}
