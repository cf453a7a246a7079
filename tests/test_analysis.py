"""Collect and aggregate on a hand-written results store: every planned run is a row, only
complete runs with finite metrics are averaged, and the numbers come out exactly."""

import dataclasses
import math

import pandas as pd
import pytest

from analysis import aggregate, tables
from analysis import format as fmt
from analysis.collect import cache_path, collect, collect_curves
from analysis.records import VS_STUDENT
from analysis.summary import summarise
from tests.results_fixtures import CONSTANT, SCRIPT, make_store, seeds


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path)


def by_method(found):
    return {cell.method: cell for cell in found.cells}


def summarised(study):
    return summarise(study, collect(study))


def test_collect_keeps_every_planned_run_as_a_row_with_its_state(store):
    study, results = store
    frame = collect(study)
    assert len(frame) == len(study.runs) == 13
    states = dict(zip(frame["name"], frame["status"]))
    assert states["cwd_logits_s2"] == "diverged" and states["pi_logits_s1"] == "failed"
    assert states["pi_logits_s2"] == "corrupt"  # NaN in final.json: complete on disk, but not a number
    assert states[f"{SCRIPT}_s1"] == "missing"
    assert frame["status"].value_counts().to_dict() == {"complete": 9, "diverged": 1, "failed": 1, "corrupt": 1,
                                                        "missing": 1}
    assert "CUDA out of memory" in frame.set_index("name").loc["pi_logits_s1", "detail"]


def test_collect_caches_the_frame_as_parquet_atomically(store):
    study, results = store
    frame = collect(study)
    cached = pd.read_parquet(cache_path(study))
    pd.testing.assert_frame_equal(cached, frame, check_dtype=False)
    assert not [p for p in cache_path(study).parent.iterdir() if p.name.endswith(".tmp")]


def test_cells_average_only_complete_finite_runs(store):
    study, results = store
    found = summarised(study)
    cells = by_method(found)
    cwd, pi, script = cells["cwd_logits"], cells["pi_logits"], cells[SCRIPT]
    assert (cwd.measured("val/mIoU").mean, cwd.measured("val/mIoU").n) == (35.5, 2)
    assert cwd.measured("val/mIoU").std == pytest.approx(math.sqrt(0.5))
    assert cwd.delta("val/mIoU") == pytest.approx(4.5) and cwd.group.states["diverged"] == 1
    assert (pi.measured("val/mIoU").mean, pi.measured("val/mIoU").n) == (33.0, 1)
    assert math.isnan(pi.measured("val/mIoU").std)
    assert pi.group.states["failed"] == 1 and pi.group.states["corrupt"] == 1
    assert (script.measured("val/mIoU").mean, script.measured("val/mIoU").n, script.group.states["missing"]) == (
        21.0, 2, 1)
    assert cwd.baseline.metrics["val/mIoU"].mean == 31.0 and cwd.baseline.metrics["val/mIoU"].std == 1.0
    assert cwd.teacher.metrics["val/mIoU"].mean == 50.0
    table = tables.results_table(found)
    rows = {row[0].text: row for row in table.rows}  # bold: the best mean and the best Δ
    assert rows["cwd_logits"][1].best and not rows["pi_logits"][1].best and rows["cwd_logits"][2].best


def test_a_statistic_a_cell_does_not_have_raises_instead_of_reading_as_missing(store):
    study, results = store
    cwd = by_method(summarised(study))["cwd_logits"]
    assert cwd.test(VS_STUDENT, "val/mIoU").verdict == "gain"
    for lookup in (lambda: cwd.measured("val/miou"), lambda: cwd.group.states["faild"],
                   lambda: cwd.test(VS_STUDENT, "val/bbox_mAP"), lambda: cwd.test("vs teacher", "val/mIoU"),
                   lambda: cwd.gap("val/bbox_mAP"), lambda: cwd.group.costs["seconds"],
                   lambda: cwd.group.recipe["lr "]):
        with pytest.raises(KeyError):
            lookup()
    with pytest.raises(AttributeError):
        cwd.slowdwn  # noqa: B018  (a typo of a field)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cwd.slowdown = 2.0  # built once: nothing downstream changes a record


def test_a_blocked_run_is_counted_as_not_averaged_like_a_failed_one(tmp_path):
    from kdbench import store

    study, results = make_store(tmp_path, {"teacher": "failed", "cwd_logits_s1": "missing"})
    planned = next(p for p in study.runs if p.name == "cwd_logits_s1")
    teacher = next(p for p in study.runs if p.kind == "teacher")
    run_dir = results / study.name / planned.run_id
    run_dir.mkdir(parents=True)  # its job was submitted, then ended without starting (its teacher failed)
    store.write_json_atomic(run_dir / store.JOB, {"executor": "local", "job_id": "1", "host": "elsewhere"})
    frame = collect(study)
    row = frame.set_index("name").loc["cwd_logits_s1"]
    assert row["status"] == "blocked" and f"teacher {teacher.run_id} failed" in row["detail"]
    found = summarise(study, frame)
    cwd = by_method(found)["cwd_logits"]
    assert (cwd.group.states["blocked"], cwd.measured("val/mIoU").n, cwd.group.planned) == (1, 1, 3)
    table = tables.results_table(found)
    rows = {row[0].text: [c.text for c in row] for row in table.rows}
    assert rows["cwd_logits"][-2:] == ["1 / 3", "1 diverged, 1 blocked"]


def test_a_run_held_back_by_its_teachers_gate_and_never_submitted_says_so(tmp_path):
    import json

    study, results = make_store(tmp_path, {"cwd_logits_s1": "missing"})
    teacher = next(p for p in study.runs if p.kind == "teacher")
    final = results / study.name / teacher.run_id / "final.json"
    record = json.loads(final.read_text())
    record["teacher_check"] = {"passed": False, "measured": 12.0, "metric": "mIoU", "expected": 50.0,
                               "tolerance": 1.0}
    final.write_text(json.dumps(record))
    row = collect(study).set_index("name").loc["cwd_logits_s1"]
    assert row["status"] == "blocked"
    assert row["detail"].startswith(f"teacher {teacher.run_id} scored 12.00 mIoU, expected 50.0")
    assert row["detail"].endswith(": never submitted") and "ended without starting" not in row["detail"]


def test_a_nan_or_inf_never_enters_a_mean():
    """Guarantee: A nan or inf never enters a mean."""
    assert aggregate.stats([1.0, float("nan"), 3.0, float("inf"), None]) == (2.0, pytest.approx(math.sqrt(2)), 2)
    assert aggregate.stats([float("nan")])[2] == 0


def test_results_table_text_reproduces_mean_std_n_and_delta(store):
    study, results = store
    table = tables.results_table(summarised(study))
    rows = {row[0].text: [c.text for c in row] for row in table.rows}
    assert rows["cwd_logits"][1:3] == ["35.50 ± 0.71 (n=2)", "+4.50"]
    assert rows["pi_logits"][1:3] == ["33.00 (n=1)", "+2.00"]
    assert rows[SCRIPT][1:3] == ["21.00 ± 1.41 (n=2)", "-10.00"]
    assert rows["student (no distillation)"][1] == "31.00 ± 1.00 (n=3)"
    assert rows["teacher"][1] == "50.00 (n=1)"
    assert rows["pi_logits"][-1] == "1 failed, 1 corrupt" and rows["cwd_logits"][-1] == "1 diverged"


def test_the_mmrazor_table_has_the_layout_of_mmrazors_readme_and_the_teacher_and_student_columns(store):
    study, results = store
    table = tables.mmrazor_table(summarised(study))
    assert table.header == ["Location", "Dataset", "Teacher", "Student", "mIoU", "mIoU(T)", "mIoU(S)"]
    first = [c.text for c in table.rows[0]]
    assert first == ["cwd_logits @ decode_head.conv_seg", "fashion_scenes", "tiny_seg_teacher", "tiny_seg_student",
                     "35.50 ± 0.71 (n=2)", "50.00 (n=1)", "31.00 ± 1.00 (n=3)"]
    assert table.rows[0][4].best


def test_cost_table_reports_seconds_slowdown_memory_and_the_teacher_and_kd_shares_apart(store):
    study, results = store
    table = tables.cost_table(summarised(study))
    assert table.header[4:6] == ["teacher forward", "KD terms"]
    rows = {row[0].text: [c.text for c in row] for row in table.rows}
    assert rows["cwd_logits"][1:7] == ["0.15 s", "1.50x", "1,000 MB (cpu_max_rss)", "20.0%", "10.0%", "2"]
    assert rows["student (no distillation)"][2] == "1.00x"


def test_runs_without_a_teacher_share_show_a_dash_and_say_what_their_kd_share_includes(tmp_path):
    study, results = make_store(tmp_path, drop_costs=("teacher_share",))
    frame = collect(study)
    assert frame["cost:teacher_share"].isna().all()
    table = tables.cost_table(summarise(study, frame))
    rows = {row[0].text: [c.text for c in row] for row in table.rows}
    assert rows["cwd_logits"][4:6] == ["—", "10.0% (with the teacher forward)"]


def test_published_numbers_sit_beside_the_measured_cell_with_their_source(store):
    study, results = store
    found = summarised(study)
    table = tables.reference_table(found)
    row = [c.text for c in table.rows[0]]
    assert row[0] == "cwd → cwd_logits" and row[3:7] == ["40.25", "55.50", "33.75", "35.50 ± 0.71 (n=2)"]
    assert row[9] == "A Paper, Table 9 (fixture_ref.csv)"
    layout = tables.table2(found)
    assert layout.header == ["Method", "Feature map", "Logits", "Feature map (published)", "Logits (published)",
                             "Feature map: Δ vs best spatial", "Logits: Δ vs best spatial"]
    cwd_row = next([c.text for c in r] for r in layout.rows if r[0].text == "cwd (channel-wise)")
    # The best spatial cell on the logits by mean: pi_logits, 33 (one run; the at cell has 21): Δ +2.50, no interval.
    assert cwd_row == ["cwd (channel-wise)", "—", "35.50 ± 0.71 (n=2) [+4.50]", "—", "40.25", "—",
                       "+2.50 vs pi_logits: no interval (n = 1)"]


def test_a_tau_axis_gets_an_ablation_table_and_a_sweep_plot(tmp_path):
    from analysis import plots
    from tests.results_fixtures import STUDY

    text = STUDY.replace("references: [fixture_ref.csv]", "grid: {method: [cwd_logits], term.params.tau: [1, 4]}")
    outcomes = {"cwd_logits_tau1_s0": 32.0, "cwd_logits_tau1_s1": 34.0, "cwd_logits_tau1_s2": 36.0,
                "cwd_logits_tau4_s0": 35.0, "cwd_logits_tau4_s1": 36.0, "cwd_logits_tau4_s2": 37.0}
    study, results = make_store(tmp_path, outcomes, text)
    frame = collect(study)
    found = summarise(study, frame)
    (table,) = tables.ablation_tables(found)
    assert table.header == ["tau", "cwd_logits"]
    assert [[c.text for c in r] for r in table.rows] == [["1", "34.00 ± 2.00 (n=3) [+3.00]"],
                                                         ["4", "36.00 ± 1.00 (n=3) [+5.00]"]]
    keys = [f.key for f in plots.all_figures(frame, found, collect_curves(study, frame))]
    assert keys == ["methods", "sweep_tau", "curves", "gain_vs_cost"]


def test_format_shows_missing_values_as_a_dash_and_single_runs_without_spread():
    assert fmt.mean_std(float("nan"), float("nan"), 0) == "—"
    assert fmt.mean_std(3.14159, float("nan"), 1) == "3.14 (n=1)"
    assert fmt.mean_std(3.14159, 0.5, 4, with_n=False) == "3.14 ± 0.50"
    assert fmt.signed(-0.004) == "-0.00" and fmt.signed(float("inf")) == "—"


def bold(table) -> dict[str, list[str]]:
    """Header -> the texts of the bold cells in that column."""
    return {h: [row[i].text for row in table.rows if row[i].best] for i, h in enumerate(table.header)}


def named_location_store(tmp_path, outcomes: dict):
    """A study of the cells ``outcomes`` names (``<method>_<logits|feature>``, in that order), each
    that distillation method, weight 1, on the student's logits or feature map as its name says."""
    from tests.results_fixtures import FEATURE, LOGITS, study_text

    names = dict.fromkeys(name.rsplit("_s", 1)[0] for name in outcomes)
    text = study_text({m: f"{{method: {m.split('_')[0]}, weight: 1.0, student_location: "
                          f"{LOGITS if m.endswith('logits') else FEATURE}}}" for m in names})
    return make_store(tmp_path, outcomes, text)


def test_table2_bolds_the_best_distilled_cell_of_each_column_not_of_the_whole_table(tmp_path):
    outcomes = {**seeds("cwd_logits", 35.0, 36.0, 37.0), **seeds("cwd_feature", 32.0, 33.0, 34.0),
                **seeds("pi_logits", 33.0, 33.0, 33.0), **seeds("pi_feature", 34.0, 34.0, 34.0)}
    study, results = named_location_store(tmp_path, outcomes)
    table = tables.table2(summarised(study))
    assert bold(table) == {"Method": [], "Feature map": ["34.00 ± 0.00 (n=3) [+3.00]"],
                           "Logits": ["36.00 ± 1.00 (n=3) [+5.00]"],
                           "Feature map: Δ vs best spatial": [], "Logits: Δ vs best spatial": []}
    assert "bold = best distilled cell of the column" in table.caption


def test_an_ablation_grid_bolds_the_best_cell_of_each_column(tmp_path):
    from tests.results_fixtures import LOGITS, study_text

    text = study_text({"logits": f"{{method: norm_divergence, params: {{norm: channel, divergence: kl}}, "
                                 f"weight: 3.0, student_location: {LOGITS}}}"},
                      "grid: {term.params.norm: [channel, spatial], term.params.divergence: [kl, mse]}\n")
    outcomes = {**seeds("logits_channel_kl", 40.0, 40.0, 40.0), **seeds("logits_spatial_kl", 35.0, 35.0, 35.0),
                **seeds("logits_channel_mse", 30.0, 30.0, 30.0), **seeds("logits_spatial_mse", 33.0, 33.0, 33.0)}
    study, results = make_store(tmp_path, outcomes, text)
    (table,) = tables.ablation_tables(summarised(study))
    assert table.header == ["norm \\ divergence", "kl", "mse"]
    assert bold(table) == {"norm \\ divergence": [], "kl": ["40.00 ± 0.00 (n=3) [+9.00]"],
                           "mse": ["33.00 ± 0.00 (n=3) [+2.00]"]}
    assert "bold = best distilled cell of the column" in table.caption


def test_the_teacher_and_baseline_rows_are_never_bold_even_when_they_are_highest(store):
    study, results = store
    table = tables.results_table(summarised(study))
    rows = {row[0].text: row for row in table.rows}
    assert not any(c.best for c in rows["teacher"]) and not any(c.best for c in rows["student (no distillation)"])
    assert rows["cwd_logits"][1].best and rows["cwd_logits"][2].best and not rows["pi_logits"][1].best


def location_store(tmp_path, outcomes=None):
    """A study shaped like studies/ablation_location.yaml: CWD on the logits, on the feature map, and
    on both, the methods named after the place (no _logits / _feature suffix, no 'cwd' in a name),
    and cwd_pi, a pi term whose name says cwd."""
    from tests.results_fixtures import FEATURE, LOGITS, study_text

    cwd = "method: cwd, params: {tau: 4.0}"
    text = study_text({
        "logits": f"{{{cwd}, weight: 3.0, student_location: {LOGITS}}}",
        "feature": f"{{{cwd}, weight: 50.0, student_location: {FEATURE}, adapter: {{norm: true, act: true}}}}",
        "both": f"[{{name: a, {cwd}, weight: 3.0, student_location: {LOGITS}}}, "
                f"{{name: b, {cwd}, weight: 50.0, student_location: {FEATURE}, adapter: {{norm: true, act: true}}}}]",
        "cwd_pi": f"{{method: pi, weight: 10.0, student_location: {LOGITS}}}",
    })
    base = {**seeds("logits", 35.0, 36.0, 37.0), **seeds("feature", 33.0, 33.0, 34.0),
            **seeds("both", 38.0, 39.0, 40.0), **seeds("cwd_pi", 32.0, 32.0, 32.0)}
    return make_store(tmp_path, {**base, **(outcomes or {})}, text)


def test_the_location_each_run_distils_comes_from_its_student_locations(tmp_path):
    study, results = location_store(tmp_path)
    frame = collect(study).set_index("name")
    assert frame.loc["logits_s0", "location_kind"] == "logits" and frame.loc["feature_s0", "location_kind"] == "feature"
    assert frame.loc["both_s0", "location_kind"] == "feature + logits"
    assert frame.loc["both_s0", "kd_method"] == "cwd; cwd" and frame.loc["cwd_pi_s0", "kd_method"] == "pi"
    assert pd.isna(frame.loc["student_s0", "location_kind"])


def test_cells_that_differ_only_by_location_get_a_location_table(tmp_path):
    study, results = location_store(tmp_path, {f"cwd_pi_s{i}": "missing" for i in range(3)})
    found = summarised(study)  # the other method family aside: only CWD, three places
    found = dataclasses.replace(found, cells=tuple(cell for cell in found.cells if cell.method != "cwd_pi"))
    table = tables.location_table(found)
    assert table is not None and table.header == ["Method", "Distils", "Student location(s)", "mIoU [Δ vs student]"]
    assert [[c.text for c in row] for row in table.rows] == [
        ["logits", "logits", "decode_head.conv_seg", "36.00 ± 1.00 (n=3) [+5.00]"],
        ["feature", "feature map", "decode_head.bottleneck", "33.33 ± 0.58 (n=3) [+2.33]"],
        ["both", "feature map + logits", "decode_head.conv_seg; decode_head.bottleneck", "39.00 ± 1.00 (n=3) [+8.00]"]]
    assert bold(table)["mIoU [Δ vs student]"] == ["39.00 ± 1.00 (n=3) [+8.00]"]
    assert tables.table2(found) is None  # one method family: no Table 2


def test_no_location_table_when_the_cells_use_different_methods(tmp_path):
    study, results = location_store(tmp_path)
    assert tables.location_table(summarised(study)) is None


def test_cwd_cells_are_found_by_their_terms_method_not_by_their_name(tmp_path):
    study, results = location_store(tmp_path)
    verdicts = aggregate.cwd_verdicts(summarised(study).cells, "val/mIoU")
    assert [v["cell"].method for v in verdicts] == ["logits", "feature", "both"]  # not cwd_pi (method: pi)
    assert [round(v["gap"], 2) for v in verdicts] == [5.0, 2.33, 8.0]


def test_runs_that_predict_one_class_everywhere_are_counted_as_collapsed(tmp_path):
    """Guarantee: Runs that predict one class everywhere are counted as collapsed."""
    near = {"val/mAcc": 100 / 11 + 5e-4, "val/classes_evaluated": 11.0}   # within the tolerance
    apart = {"val/mAcc": 100 / 11 + 0.01, "val/classes_evaluated": 11.0}  # a real, if poor, predictor
    fewer = {"val/mAcc": 100 / 7, "val/classes_evaluated": 7.0}           # the classes the split has
    study, results = make_store(tmp_path, metrics={"student_s0": CONSTANT, "student_s1": near,
                                                   "student_s2": apart, "cwd_logits_s0": fewer})
    frame = collect(study)
    flagged = dict(zip(frame["name"], aggregate.collapsed(frame)))
    assert [flagged[f"student_s{i}"] for i in range(3)] == [True, True, False]
    assert flagged["cwd_logits_s0"] and not flagged["cwd_logits_s1"] and not flagged["teacher"]
    found = summarise(study, frame)
    assert [group.collapsed for group in found.baselines] == [2]
    assert by_method(found)["cwd_logits"].group.collapsed == 1


def test_runs_without_classes_evaluated_are_never_called_collapsed(tmp_path):
    study, results = make_store(tmp_path, metrics={"student_s0": {"val/mAcc": 100 / 11}})
    frame = collect(study).drop(columns=["val/classes_evaluated"])
    assert not aggregate.collapsed(frame).any()


def test_training_curves_average_only_complete_runs(store):
    """Guarantee: Training curves average complete runs only."""
    from analysis import plots

    study, results = store
    frame = collect(study)
    curve_frame = collect_curves(study, frame)
    averaged, others = plots.curve_data(curve_frame, "val/mIoU")
    ids = dict(zip(frame["name"], frame["run_id"]))
    assert ids["cwd_logits_s2"] not in set(averaged["run_id"]) and ids["pi_logits_s1"] not in set(averaged["run_id"])
    assert set(others["run_id"]) == {ids["cwd_logits_s2"], ids["pi_logits_s1"]}  # their evaluations before stopping
    assert (others["status"] != "complete").all() and (averaged["status"] == "complete").all()
    at_five = averaged[(averaged["method"] == "cwd_logits") & (averaged["iter"] == 5)]["value"]
    assert at_five.mean() == 30.5  # seeds 0 and 1 (30, 31); the diverged seed's 5 would make it 22.0
    figure = plots.curves(curve_frame, "val/mIoU")
    assert "2 runs without a result" in figure.caption and figure.png.startswith(b"\x89PNG")


def test_a_value_axis_is_zoomed_only_when_zero_would_hide_the_differences():
    from analysis.plots import value_limits

    low, high = value_limits([70.1, 70.6, 71.3])
    assert 69.0 < low < 70.1 and high > 71.3
    assert value_limits([5.0, 70.0]) is None and value_limits([-1.0, 1.0]) is None and value_limits([]) is None


def test_norm_divergence_bars_group_by_normalisation_and_colour_by_divergence(tmp_path):
    from analysis import plots
    from tests.results_fixtures import LOGITS, study_text

    text = study_text({"logits": f"{{method: norm_divergence, params: {{norm: channel, divergence: kl}}, "
                                 f"weight: 3.0, student_location: {LOGITS}}}"},
                      "grid: {term.params.norm: [channel, spatial], term.params.divergence: [kl, mse]}\n")
    outcomes = {**seeds("logits_channel_kl", 70.0, 70.2, 70.4), **seeds("logits_spatial_kl", 70.5, 70.5, "diverged"),
                **seeds("logits_channel_mse", 71.0, 71.0, 71.0), **seeds("logits_spatial_mse", 70.9, 71.1, 71.3),
                **seeds("student", 70.0, 70.1, 70.2)}
    study, results = make_store(tmp_path, outcomes, text)
    figure = plots.norm_divergence_bars(collect(study), "val/mIoU")
    means = figure.data.groupby(["norm", "divergence"])["val/mIoU"].agg(["mean", "count"])
    assert means.loc[("spatial", "kl")].tolist() == [70.5, 2]  # the diverged seed is not a bar's value
    assert means.loc[("channel", "kl"), "mean"] == pytest.approx(70.2)
    assert set(figure.data["norm"]) == {"channel", "spatial"} and set(figure.data["divergence"]) == {"kl", "mse"}
    assert "axis starts at" in figure.caption and "not 0" in figure.caption


def test_location_bars_tell_channel_wise_from_spatial_methods_by_location(tmp_path):
    from analysis import plots

    outcomes = {**seeds("cwd_logits", 35.0, 36.0, 37.0), **seeds("cwd_feature", 5.0, 6.0, 7.0),
                **seeds("pi_logits", 33.0, 33.0, 33.0), **seeds("at_feature", 34.0, 34.0, 34.0)}
    study, results = named_location_store(tmp_path, outcomes)
    frame = collect(study)
    figure = plots.location_bars(frame, summarise(study, frame))
    groups = figure.data.groupby(["where", "family"])["val/mIoU"].mean().to_dict()
    assert groups == {("feature map", "cwd (channel-wise)"): 6.0, ("feature map", "at (spatial)"): 34.0,
                      ("logits", "cwd (channel-wise)"): 36.0, ("logits", "pi (spatial)"): 33.0}
    assert "starts at" not in figure.caption  # 6 to 37: the axis starts at 0


def test_gain_vs_cost_plots_the_slowdown_with_the_baseline_at_one_and_zero(store):
    from analysis import plots

    study, results = store
    figure = plots.gain_vs_cost(summarised(study))
    points = figure.data.set_index("label")
    assert points.loc["student (no KD)", ["slowdown", "delta"]].tolist() == [1.0, 0.0]
    assert points.loc["student (no KD)", "std"] == 1.0
    assert points.loc["cwd_logits", ["slowdown", "delta"]].tolist() == [pytest.approx(1.5), pytest.approx(4.5)]
    assert "slowdown" in figure.caption and "(1x, 0)" in figure.caption


def test_channel_wise_and_spatial_come_from_each_terms_loss_never_from_the_methods_name(tmp_path):
    """Guarantee: Channel-wise against spatial, in every figure, table and sentence, comes from the loss each term uses
    (its declared `kind`; `norm_divergence` by its `norm`), never from the method's name; a column with no value
    in any row is left out of its table with a sentence saying why.

    The issue's study (CWD at tau 1 and 4 and PI, all on the logits) plus names that lie: a
    method called ``spatial_pi`` that uses cwd, one called ``cwd_like`` that uses pi, and
    norm_divergence, whose kind follows its ``norm``. Figure, Table 2 and the collected rows all
    say what each term's loss declares."""
    from analysis import plots
    from tests.results_fixtures import LOGITS, study_text

    on_logits = f"weight: 3.0, student_location: {LOGITS}"
    text = study_text({
        "cwd_tau1": f"{{method: cwd, params: {{tau: 1.0}}, {on_logits}}}",
        "cwd_tau4": f"{{method: cwd, params: {{tau: 4.0}}, {on_logits}}}",
        "pi": f"{{method: pi, {on_logits}}}",
        "spatial_pi": f"{{method: cwd, {on_logits}, teacher_location: {LOGITS}}}",
        "cwd_like": f"{{method: pi, params: {{tau: 2.0}}, {on_logits}}}",
        "nd_channel_mean": f"{{method: norm_divergence, params: {{norm: channel_mean}}, {on_logits}}}",
        "nd_spatial": f"{{method: norm_divergence, params: {{norm: spatial}}, {on_logits}}}",
        "nd_none": f"{{method: norm_divergence, params: {{norm: none}}, {on_logits}}}",
    })
    names = ("cwd_tau1", "cwd_tau4", "pi", "spatial_pi", "cwd_like", "nd_channel_mean", "nd_spatial", "nd_none")
    outcomes = {k: v for i, name in enumerate(names) for k, v in seeds(name, 30.0 + i, 31.0 + i, 32.0 + i).items()}
    study, results = make_store(tmp_path, outcomes, text)
    frame = collect(study)
    kinds = {row["method"]: row["distils"] if isinstance(row["distils"], str) else None
             for row in frame[frame["kind"] == "cell"].to_dict("records")}
    assert kinds == {"cwd_tau1": "channel-wise", "cwd_tau4": "channel-wise", "pi": "spatial",
                     "spatial_pi": "channel-wise", "cwd_like": "spatial", "nd_channel_mean": "channel-wise",
                     "nd_spatial": "spatial", "nd_none": None}
    found = summarise(study, frame)
    figure = plots.location_bars(frame, found)
    families = set(figure.data["family"])
    assert {"cwd_tau1 (channel-wise)", "cwd_tau4 (channel-wise)", "spatial_pi (channel-wise)",
            "cwd_like (spatial)", "nd_spatial (spatial)", "nd_channel_mean (channel-wise)", "nd_none"} <= families
    assert "never from the method's name" in figure.caption
    table = tables.table2(found)
    labels = [row[0].text for row in table.rows]
    assert "cwd_tau1 (channel-wise)" in labels and "cwd_like (spatial)" in labels and "nd_none" in labels
    assert "spatial_pi (channel-wise)" in labels


def test_a_plugin_loss_that_declares_no_kind_is_neither_channel_wise_nor_spatial():
    from kdbench.losses.params import CWDParams, LossParams, NormDivergenceParams, PIParams

    assert LossParams().distils() is None
    assert CWDParams(tau=4.0).distils() == "channel-wise" and PIParams().distils() == "spatial"
    assert NormDivergenceParams(norm="none").distils() is None
