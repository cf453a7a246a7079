"""Method against method, on every metric: each channel-wise cell against the best spatial cell at its
location, the pairs a study names in ``compare:``, and every metric's Δ against the student baseline,
in the report, its verdict box and ``kdbench report --json``. Every expected number is computed here
with scipy's own t tests (``ttest_rel``, ``ttest_ind(equal_var=False)``), not with kdbench's code.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from analysis import aggregate, comparisons
from analysis import format as fmt
from analysis.collect import collect
from analysis.records import CW_VS_SPATIAL, NAMED, VS_STUDENT
from analysis.summary import summarise
from kdbench.stages import load_study
from reports.render import md, md_start
from tests.launch_helpers import run_cli
from tests.results_fixtures import FEATURE, LOGITS, make_store, seeds, study_text

METRICS = ("val/mIoU", "val/mAcc", "val/aAcc")
TERMS = {"cwd_logits": f"{{method: cwd, params: {{tau: 4.0}}, weight: 3.0, student_location: {LOGITS}}}",
         "pi_logits": f"{{method: pi, weight: 10.0, student_location: {LOGITS}}}",
         "at_logits": f"{{method: at, weight: 1.0, student_location: {LOGITS}}}",
         "cwd_feature": f"{{method: cwd, params: {{tau: 4.0}}, weight: 50.0, student_location: {FEATURE}}}",
         "at_feature": f"{{method: at, weight: 1.0, student_location: {FEATURE}}}"}
COMPARE = "compare: [[cwd_logits, at_logits], [cwd_feature, pi_logits]]\n"
# mIoU by seed (the fixture writes mAcc = mIoU + 10); at_feature's third seed failed, so it is compared by Welch.
MIOU = {"teacher": 50.0, **seeds("student", 30.0, 31.0, 32.0), **seeds("cwd_logits", 36.0, 38.0, 37.0),
        **seeds("pi_logits", 33.0, 34.0, 36.0), **seeds("at_logits", 31.0, 35.0, 33.0),
        **seeds("cwd_feature", 34.0, 33.0, 36.0), **seeds("at_feature", 32.0, 33.0, "failed")}
# aAcc, where at_logits (mean 74.33) is above pi_logits (72.5): the best spatial cell differs by metric.
AACC = {"teacher": 80.0, **seeds("student", 70.0, 71.0, 72.0), **seeds("cwd_logits", 75.0, 76.0, 77.5),
        **seeds("pi_logits", 72.0, 72.5, 73.0), **seeds("at_logits", 74.0, 74.0, 75.0),
        **seeds("cwd_feature", 73.0, 74.0, 74.5), **seeds("at_feature", 71.0, 72.0, 0.0)}


def _values(name: str, metric: str) -> list[float]:
    """A cell's values by seed on a metric, its complete runs only, as the fixture writes them."""
    table = AACC if metric == "val/aAcc" else MIOU
    shift = 10.0 if metric == "val/mAcc" else 0.0
    return [table[f"{name}_s{s}"] + shift for s in range(3) if isinstance(MIOU[f"{name}_s{s}"], float)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("compare")
    metrics = {name: {"val/aAcc": value} for name, value in AACC.items()}
    return make_store(tmp_path, MIOU, study_text(TERMS, COMPARE), metrics)


@pytest.fixture(scope="module")
def found(store):
    study, _ = store
    return summarise(study, collect(study))


def _scipy(first: list[float], second: list[float], paired: bool):
    """(Δ, 95% interval, p) of scipy's paired or Welch t test."""
    result = (scipy_stats.ttest_rel(first, second) if paired
              else scipy_stats.ttest_ind(first, second, equal_var=False))
    interval = result.confidence_interval(0.95)
    return float(np.mean(first) - np.mean(second)), (interval.low, interval.high), float(result.pvalue)


def _holm(p: list[float]) -> list[float]:
    """Holm (1979) written out: the k-th smallest of m p-values times (m - k + 1), at least the one before."""
    adjusted, running = [0.0] * len(p), 0.0
    for rank, index in enumerate(sorted(range(len(p)), key=lambda i: p[i])):
        running = max(running, min(1.0, (len(p) - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def _check(found_versus, expected: list[tuple[str, str, bool]], metric: str) -> None:
    """Each comparison's Δ, interval, test and Holm-corrected p against scipy's, in order."""
    assert [(v.cell.method, v.other.method) for v in found_versus] == [(a, b) for a, b, _ in expected]
    by_scipy = [_scipy(_values(a, metric), _values(b, metric), paired) for a, b, paired in expected]
    adjusted = _holm([p for *_, p in by_scipy])
    for each, (delta, (low, high), p), p_holm, (_, _, paired) in zip(found_versus, by_scipy, adjusted, expected):
        test = each.test
        assert (test.test, test.metric) == ("paired" if paired else "welch", metric)
        assert (test.delta, test.low, test.high, test.p, test.p_holm) == pytest.approx((delta, low, high, p, p_holm))
        assert test.verdict == ("within noise" if p_holm >= 0.05 else "gain" if delta > 0 else "loss")


def test_each_channel_wise_cell_is_tested_against_the_best_spatial_cell_at_its_location_as_scipy_does(found):
    """Guarantee: Each channel-wise cell is tested against the spatial cell with the highest mean at its own
    location (paired by seed where both sides share their seeds, Welch otherwise), Holm's correction across
    that family alone, per metric; the numbers equal scipy's paired and Welch t tests."""
    # mIoU (and mAcc): at the logits pi (34.33) beats at (33.00); at the feature map at_feature is the only one.
    for metric in ("val/mIoU", "val/mAcc"):
        _check(comparisons.of_family(found.versus, CW_VS_SPATIAL, metric),
               [("cwd_logits", "pi_logits", True), ("cwd_feature", "at_feature", False)], metric)
    # aAcc: at_logits (74.33) is the best spatial cell at the logits there.
    _check(comparisons.of_family(found.versus, CW_VS_SPATIAL, "val/aAcc"),
           [("cwd_logits", "at_logits", True), ("cwd_feature", "at_feature", False)], "val/aAcc")
    logits = comparisons.of_family(found.versus, CW_VS_SPATIAL, "val/mIoU")[0]
    assert (logits.location, [c.method for c in logits.chosen_from]) == (LOGITS, ["pi_logits", "at_logits"])
    assert [(f.metric, f.tested) for f in found.families if f.name == CW_VS_SPATIAL] == [(m, 2) for m in METRICS]


def test_the_pairs_a_study_names_in_compare_are_tested_as_one_more_family_as_scipy_does(found):
    """Guarantee: The pairs a study names in compare: are tested (first minus second) as a Holm family of
    their own on every metric; the numbers equal scipy's paired t test."""
    for metric in METRICS:
        _check(comparisons.of_family(found.versus, NAMED, metric),
               [("cwd_logits", "at_logits", True), ("cwd_feature", "pi_logits", True)], metric)
    assert [(f.metric, f.tested) for f in found.families if f.name == NAMED] == [(m, 2) for m in METRICS]


def test_every_metric_is_tested_against_the_student_baseline_in_a_family_of_its_own(found):
    """Guarantee: Every metric the runs record (mIoU, mAcc, aAcc) gets each cell's Δ against the student
    baseline with its interval, paired test and verdict, Holm's correction over each metric's cells apart."""
    for metric in METRICS:
        by_scipy = [_scipy(_values(cell.method, metric), _values("student", metric), cell.method != "at_feature")
                    for cell in found.cells]
        adjusted = _holm([p for *_, p in by_scipy])
        assert found.family(VS_STUDENT, metric).tested == len(found.cells) == 5
        for cell, (delta, (low, high), p), p_holm in zip(found.cells, by_scipy, adjusted):
            test = cell.test(VS_STUDENT, metric)
            assert (test.delta, test.low, test.high, test.p, test.p_holm) == pytest.approx(
                (delta, low, high, p, p_holm))


def test_the_verdict_box_answers_channel_wise_against_spatial_in_one_sentence_per_location(store, found):
    """Guarantee: The verdict box says, per location, how the channel-wise cell fares against the best
    spatial one by mean (named, with the cells it was chosen from), Δ with its 95% interval and verdict,
    and that choosing the best after the fact favours the spatial side."""
    from reports.comparisons import WORDS, versus_lines

    lines = versus_lines(found)
    logits = comparisons.of_family(found.versus, CW_VS_SPATIAL, "val/mIoU")[0].test
    interval = fmt.interval(logits.low, logits.high, sign=True)
    assert lines[0] == (f"At {LOGITS} (logits): cwd_logits (cwd on the logits) beats the best spatial method there "
                        f"by mean (of pi_logits, at_logits), pi_logits, by {fmt.signed(logits.delta)} mIoU {interval}: "
                        f"{WORDS[logits.verdict]} (paired by seed; Holm-corrected p {fmt.p_value(logits.p_holm)} "
                        "over the 2 channel-wise-vs-spatial comparisons).")
    assert lines[1].startswith(f"At {FEATURE} (feature map): cwd_feature (cwd on the feature map) beats the only "
                               "spatial method there, at_feature, by +1.83 mIoU [")
    assert "(Welch; Holm-corrected p" in lines[1]
    assert "chosen after seeing the results: that favours the spatial side" in lines[2]
    assert lines[3].startswith("cwd_logits beats at_logits by +4.00 mIoU [+1.52, +6.48]: a gain (paired by seed; ")
    assert lines[4].startswith("cwd_feature ") and "pi_logits by +0.00 mIoU [" in lines[4]
    study, results = store
    code, out, err = run_cli("report", str(study.path), "--results", str(results), "--format", "md,html", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert all(line in report["lines"] for line in lines)
    text = Path(report["written"]["md"]).read_text()
    assert all(f"- {md_start(line)}" in text for line in lines)
    html = Path(report["written"]["html"]).read_text()
    assert html.index('id="cwd-verdict"') < html.index('id="versus"') < html.index("<h2>Runs without a result")


def _markdown_rows(text: str, title: str) -> list[dict[str, str]]:
    """The rows of the markdown table under ``### <title>``, each {header: cell} as written (escaped)."""
    lines = text[text.index(f"### {md(title)}\n"):].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        if not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip()[1:-1].split(" | ")])
    header, *body = rows
    return [dict(zip(header, row)) for row in body]


def _tested_text(entry: dict) -> tuple:
    interval = md(fmt.interval(*entry["delta_ci95"], sign=True)) if entry["delta_ci95"] else fmt.MISSING
    return (fmt.signed(entry["delta"]), interval, entry["test"] or fmt.MISSING, md(fmt.p_value(entry["p_holm"])),
            md(entry["verdict"]))


def test_report_json_has_every_metrics_intervals_and_the_markdown_shows_the_same_numbers(store):
    """Guarantee: kdbench report --json gives every cell, teacher and student baseline an interval on every
    metric (mIoU, mAcc, aAcc), each cell's Δ on each with its test and verdict, and the comparisons; the
    markdown's tables show the same Δ, interval, test, p and verdict."""
    study, results = store
    code, out, err = run_cli("report", str(study.path), "--results", str(results), "--format", "md", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["metrics"] == list(METRICS)
    for cell in report["cells"]:
        for metric in METRICS:
            entry = cell["by_metric"][metric]
            assert entry["n"] >= 2 and len(entry["ci95"]) == 2 and len(entry["delta_ci95"]) == 2
            assert entry["verdict"] in ("gain", "within noise", "loss") and entry["family"] == VS_STUDENT
    assert all(len(b["by_metric"][m]["ci95"]) == 2 for b in report["baselines"] for m in METRICS)
    assert {(f["name"], f["metric"]) for f in report["holm_families"]} == {
        (name, m) for name in (VS_STUDENT, CW_VS_SPATIAL, NAMED) for m in METRICS}
    text = Path(report["written"]["md"]).read_text()
    others = _markdown_rows(text, "Gain or noise on the other metrics: Δ vs the student baseline")
    assert len(others) == 2 * len(report["cells"])
    for row in others:
        cell = next(c for c in report["cells"] if md(c["name"]) == row["Cell"])
        entry = cell["by_metric"][f"val/{row['metric']}"]
        assert (row["Δ"], row["Δ 95% interval"], row["test"], row["p (Holm)"], row["verdict"]) == _tested_text(entry)
        assert row["95% interval"] == md(fmt.interval(*entry["ci95"]))
    for key, title in (("channel_wise_vs_spatial", "Channel-wise vs the best spatial method at each location"),
                       ("named", "Comparisons named in compare:")):
        primary = [e for e in report[key] if e["metric"] == "val/mIoU"]
        rows = _markdown_rows(text, title)
        assert len(rows) == len(primary) == 2
        for row, entry in zip(rows, primary):
            shown = (row["Δ"], row["Δ 95% interval"], row["test"], row["p (Holm)"], row["verdict"])
            assert row["Cell"] == md(entry["cell"]) and shown == _tested_text(entry)
        assert len(_markdown_rows(text, title + " (other metrics)")) == 4


def test_a_compare_key_changes_no_run_id(tmp_path):
    """Guarantee: compare: is read by the report alone: a study with it plans exactly the runs, with the same
    ids, as the study without it."""
    plain, named = tmp_path / "plain.yaml", tmp_path / "named.yaml"
    plain.write_text(study_text(TERMS))
    named.write_text(study_text(TERMS, COMPARE))
    ids = [[(p.name, p.run_id) for p in load_study(path, tmp_path / "results").runs] for path in (plain, named)]
    assert ids[0] == ids[1] and len(ids[0]) == 1 + 3 + 5 * 3
    assert load_study(named, tmp_path / "results").spec.compare == (("cwd_logits", "at_logits"),
                                                                   ("cwd_feature", "pi_logits"))


def test_a_cell_within_noise_on_two_seeds_gets_the_sentence_on_the_t_quantile_of_two_seeds(tmp_path):
    """Guarantee: With two seeds, a cell within noise gets one sentence saying that a 95% interval on two
    seeds takes the t quantile 12.7; with three seeds it does not."""
    from reports.comparisons import two_seeds_line

    text = study_text({"cwd_logits": TERMS["cwd_logits"]}).replace("seeds: [0, 1, 2]", "seeds: [0, 1]")
    study, _ = make_store(tmp_path, {**seeds("cwd_logits", 40.0, 46.0)}, text)
    found = summarise(study, collect(study))
    assert found.cells[0].test(VS_STUDENT, "val/mIoU").verdict == "within noise"  # Δ +12.5, yet noise
    line = two_seeds_line(found)
    assert line.startswith("With 2 seeds a 95% interval takes the t quantile t(0.975; 1) = 12.7 (with 3 seeds, 4.30)")
    assert two_seeds_line(summarise(*_three(tmp_path))) is None


def _three(tmp_path):
    (tmp_path / "three").mkdir()
    study, _ = make_store(tmp_path / "three", {**seeds("cwd_logits", 31.0, 31.5, 33.5)},
                          study_text({"cwd_logits": TERMS["cwd_logits"]}))
    return study, collect(study)


def test_detection_reports_every_coco_metric_its_runs_record():
    """Guarantee: A detection study's metrics are mAP, then AP50, AP75 and AP for small, medium and large
    objects, each that its runs recorded."""
    import pandas as pd

    frame = pd.DataFrame({"task": ["det"], "val/bbox_mAP": [40.0], "val/bbox_mAP_50": [60.0],
                          "val/bbox_mAP_s": [20.0], "val/bbox_mAP_m": [44.0], "val/bbox_mAP_l": [52.0]})
    assert aggregate.metrics_of(frame) == ["val/bbox_mAP", "val/bbox_mAP_50", "val/bbox_mAP_s", "val/bbox_mAP_m",
                                           "val/bbox_mAP_l"]


def test_cells_are_compared_only_within_their_own_teacher_student_pair(tmp_path):
    """Guarantee: Channel-wise cells meet the best spatial cell, and named pairs meet each other, only within
    one teacher-student pair (here one per learning rate), and the sentences name the pair."""
    from reports.comparisons import versus_lines

    text = study_text({k: TERMS[k] for k in ("cwd_logits", "pi_logits")},
                      "grid: {schedule.lr: [0.01, 0.02]}\ncompare: [[cwd_logits, pi_logits]]\n")
    outcomes = {"teacher_lr0.01": 50.0, "teacher_lr0.02": 50.0, **seeds("student_lr0.01", 30.0, 31.0, 32.0),
                **seeds("student_lr0.02", 20.0, 21.0, 22.0), **seeds("cwd_logits_lr0.01", 35.0, 36.0, 38.0),
                **seeds("cwd_logits_lr0.02", 25.0, 26.0, 28.0), **seeds("pi_logits_lr0.01", 33.0, 33.0, 34.0),
                **seeds("pi_logits_lr0.02", 40.0, 41.0, 42.0)}
    study, _ = make_store(tmp_path, outcomes, text)
    found = summarise(study, collect(study))
    for family in (CW_VS_SPATIAL, NAMED):
        pairs = [(v.cell.axes["schedule.lr"], v.other.axes["schedule.lr"], v.test.delta)
                 for v in comparisons.of_family(found.versus, family, "val/mIoU")]
        # lr 0.01: 36.33 - 33.33 = +3; lr 0.02: 26.33 - 41 = -14.67 (never against the other rate's cells)
        assert pairs == [(0.01, 0.01, pytest.approx(3.0)), (0.02, 0.02, pytest.approx(-44 / 3))]
    lines = versus_lines(found)
    assert lines[0].startswith(f"At {LOGITS}, teacher_lr0.01, student_lr0.01 (logits): cwd_logits, schedule.lr 0.01 ")
    assert lines[1].startswith(f"At {LOGITS}, teacher_lr0.02, student_lr0.02 (logits): cwd_logits, schedule.lr 0.02 "
                               "(cwd on the logits) trails the only spatial method there, pi_logits, schedule.lr 0.02, "
                               "by -14.67")
