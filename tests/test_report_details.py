"""Report details a first-day user stumbled on: which cells Holm's correction ran over, timings taken
while other runs shared the machine, the first figure's legend, "best" marks that say nothing, and
"seeds to resolve Δ" beside a verdict within noise."""

import json

import matplotlib
import pytest

from analysis import plots
from analysis.collect import collect
from analysis.summary import summarise
from analysis.tables import Cell, Table, cost_table, mark_best, significance_table
from kdbench.stages import reload
from reports.render import render
from runners import contention
from tests.launch_helpers import run_cli
from tests.results_fixtures import budget_study, finish_run, make_store, study_text

LOGITS = "decode_head.conv_seg"
BASELINE = {0: 30.0, 1: 31.0, 2: 32.0}


def three_cells(tmp_path):
    """Three CWD cells beside the baseline 30, 31, 32 (seeds 0-2): big +9..+11 (a gain), up +2..+4
    (3 seeds resolve it alone; Holm over 3 leaves it within noise), down -4..-2."""
    cwd = f"{{method: cwd, params: {{tau: 4.0}}, weight: 3.0, student_location: {LOGITS}}}"
    text = study_text({"big": cwd, "up": cwd.replace("3.0", "2.0"), "down": cwd.replace("3.0", "1.0")})
    outcomes = {f"{name}_s{seed}": BASELINE[seed] + d
                for name, diffs in (("big", (9, 10, 11)), ("up", (2, 3, 4)), ("down", (-4, -3, -2)))
                for seed, d in enumerate(diffs)}
    return make_store(tmp_path, outcomes, text)


def test_the_verdict_and_report_json_name_the_cells_holm_s_correction_ran_over(tmp_path):
    """Guarantee: The verdict text and `report --json` name Holm's family (how many cells, which), so a
    corrected p that moves when a cell is added says why."""
    study, results = three_cells(tmp_path)
    code, out, err = run_cli("report", str(study.path), "--results", str(results), "--format", "md", "--json")
    assert code == 0, err
    found = json.loads(out)
    assert found["holm_family"] == {"comparison": "vs student baseline", "metric": "val/mIoU",
                                    "cells": ["big", "up", "down"]}
    sentence = ("Holm's family: the 3 cells tested against their student baseline on mIoU (big; up; down); a cell "
                "added to or removed from the study changes every corrected p.")
    assert sentence in found["headline"]
    assert sentence in (results / study.name / "report" / "README.md").read_text()


def test_seeds_to_resolve_beside_within_noise_says_why_that_is_no_contradiction(tmp_path):
    """Five cells of +4, +5, +6 over seeds 0-2 (s_d = 1, p = 0.013 each): 3 seeds resolve each alone,
    Holm over 5 leaves every one within noise; the seeds column says so."""
    cwd = f"{{method: cwd, params: {{tau: 4.0}}, weight: 3.0, student_location: {LOGITS}}}"
    methods = {f"c{w}": cwd.replace("3.0", f"{w}.0") for w in range(1, 6)}
    outcomes = {f"{name}_s{seed}": BASELINE[seed] + 4 + seed for name in methods for seed in range(3)}
    study, _ = make_store(tmp_path, outcomes, study_text(methods))
    table = significance_table(summarise(study, collect(study)))
    rows = {row[0].text: [c.text for c in row] for row in table.rows}
    assert {rows[name][7] for name in methods} == {"within noise"}
    assert rows["c1"][8] == "3 (has 3; enough on its own, within noise after Holm's correction over 5 cells)"
    (tmp_path / "gain").mkdir()
    study, _ = three_cells(tmp_path / "gain")
    rows = {row[0].text: [c.text for c in row] for row in significance_table(summarise(study, collect(study))).rows}
    assert rows["big"][7] == "gain" and rows["big"][8].endswith("(has 3)")   # a gain: nothing to explain


def test_best_is_never_a_cell_below_its_baseline_nor_the_only_entry_of_its_column():
    alone = Table("t", "t", ["Method", "Feature map", "Logits"], rows=[
        [Cell("at"), Cell("31.0", score=31.0, beats=False), Cell("—")],
        [Cell("cwd"), Cell("—"), Cell("33.0", score=33.0)]])
    mark_best(alone)
    assert not any(cell.best for row in alone.rows for cell in row)   # one entry per column
    below = Table("t", "t", ["Method", "mIoU"], rows=[
        [Cell("a"), Cell("29", score=29.0, beats=False)], [Cell("b"), Cell("28", score=28.0, beats=False)]])
    assert not any(row[1].best for row in mark_best(below).rows)   # every cell below its baseline
    mixed = Table("t", "t", ["Method", "mIoU"], rows=[
        [Cell("a"), Cell("35", score=35.0, beats=False)], [Cell("b"), Cell("33", score=33.0)]])
    assert [row[1].best for row in mark_best(mixed).rows] == [False, True]


def test_the_first_figure_s_legend_sits_beside_the_bars_not_over_them(tmp_path, monkeypatch):
    """The method bars' legend (teacher, baseline, chance lines) is drawn outside the axes, so it
    covers none of the bars, the last ones included."""
    study, _ = three_cells(tmp_path)
    frame = collect(study)
    drawn = []

    def keep(figure):
        figure.canvas.draw()
        (axis,) = figure.axes
        legend = axis.get_legend().get_window_extent()
        bars = [patch.get_window_extent() for patch in axis.patches if patch.get_height() > 0]
        drawn.append((legend, bars, axis.get_window_extent()))
        return b""

    monkeypatch.setattr(plots, "_png", keep)
    plots.method_bars(frame, "val/mIoU")
    ((legend, bars, box),) = drawn
    assert len(bars) == 4 and legend.x0 >= box.x1   # the baseline and three cells; the legend right of the axes
    assert not any(legend.overlaps(bar) for bar in bars)
    assert matplotlib.get_backend().lower() == "agg"


def test_a_run_timed_beside_other_runs_is_marked_in_the_cost_table(tmp_path):
    study, _ = three_cells(tmp_path)
    for planned in study.runs:
        final = study.directory / planned.run_id / "final.json"
        if final.is_file() and planned.name in ("up_s0", "up_s1"):
            record = json.loads(final.read_text())
            record["cost"].update(shared=True, parallel=2, load_average=3.1)
            final.write_text(json.dumps(record))
        elif final.is_file():
            record = json.loads(final.read_text())
            record["cost"].update(shared=False, parallel=1, load_average=0.9)
            final.write_text(json.dumps(record))
    table = cost_table(summarise(study, collect(study)))
    rows = {row[0].text: row[1].text for row in table.rows}
    assert rows["up"].endswith(" (shared 2/3)") and "shared" not in rows["big"]
    assert '"shared k/n"' in table.caption
    md = render(study, ("md",))["md"].read_text()
    assert " (shared 2/3) |" in md


@pytest.mark.parametrize("parallel, load, threads, cpus, shared", [
    (2, 0.5, 1, 16, True),       # the launch ran another run beside it
    (1, 1.2, 1, 2, False),       # its own thread, a little noise
    (1, 2.3, 1, 2, True),        # another busy core on a 2-core machine
    (None, 3.0, 1, 64, False),   # 2 busy cores of 64: under a quarter of the machine
    (None, None, 1, 2, False),   # nothing known
])
def test_contention_is_the_launch_s_parallelism_or_a_load_beyond_the_run_s_own_threads(parallel, load, threads,
                                                                                         cpus, shared):
    assert contention.is_shared(parallel, load, threads, cpus) is shared


def test_an_equal_budget_from_runs_timed_beside_other_work_warns_in_plan_and_report(tmp_path):
    """Guarantee: An equal budget computed from runs that were timed while other work shared the
    machine says so where it is planned (`kdbench plan`) and in the report's basis table."""
    study = budget_study(tmp_path)
    for name, pace in (("student_s0", 0.1), ("student_s1", 0.1), ("cwd_s0", 0.15), ("cwd_s1", 0.15),
                       ("at_s0", 0.2), ("at_s1", 0.2)):
        finish_run(study, name, seconds_per_iter=pace)
    planned = {p.name: p for p in study.runs}
    for name in ("at_s0", "student_s0"):   # the slowest cell of seed 0 and its baseline
        final = study.directory / planned[name].run_id / "final.json"
        record = json.loads(final.read_text())
        record["cost"]["shared"] = True
        final.write_text(json.dumps(record))
    study = reload(study)
    records = {b["baseline"]: b for b in study.records["budget"]["budgets"]}
    assert records["student_s0"]["shared"] == ["at_s0", "student_s0"] and records["student_s1"]["shared"] == []
    warning = ("warning: the equal budget of student_s0 comes from at_s0, student_s0, timed while other work shared "
               "the machine")
    assert records["student_s0"]["warning"].startswith(warning) and records["student_s1"]["warning"] == ""
    code, out, err = run_cli("plan", str(study.path), "--results", str(tmp_path / "results"), "--no-data-check",
                             "--no-model-check")
    assert code == 0, err
    assert [line for line in out.splitlines() if "warning" in line] == [f"budget: {records['student_s0']['warning']}"]
