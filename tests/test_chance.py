"""Chance levels: what a constant predictor scores, recorded by the real mmseg metric at
evaluation, shown beside the cells in the report, and the cells within a few points of it flagged."""

import numpy as np
import pytest

from analysis import aggregate, chance
from analysis.collect import collect
from reports.render import render
from tests.launch_helpers import run_cli
from tests.results_fixtures import CHANCE, make_store, seeds


def _evaluate(prediction: np.ndarray, label: np.ndarray, classes: int) -> dict:
    """The metrics kdbench's IoU metric (mmseg's IoUMetric, unrounded) gives ``prediction``."""
    import torch

    from runners.metrics import KDIoUMetric

    metric = KDIoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": [str(c) for c in range(classes)]}
    result = metric.intersect_and_union(torch.from_numpy(prediction), torch.from_numpy(label), classes, 255)
    return metric.compute_metrics([result])


def test_the_recorded_chance_levels_are_what_the_best_constant_predictor_scores():
    """Guarantee: Each metric's chance level (the best constant predictor, recorded from the split's class areas at
    evaluation) sits beside the cells, and a teacher, baseline or cell less than 3 points above it is flagged,
    not only one that collapsed to one class."""
    rng = np.random.default_rng(0)
    classes = 5
    label = rng.choice(classes, size=(40, 40), p=[0.55, 0.25, 0.1, 0.1, 0.0]).astype(np.int64)
    label[:3] = 255  # ignored pixels count for nobody
    scores = {k: _evaluate(np.full_like(label, k), label, classes) for k in range(classes)}
    recorded = scores[0]
    best = {name: max(s[name] for s in scores.values()) for name in ("mIoU", "mAcc", "aAcc")}
    assert recorded["chance_mIoU"] == pytest.approx(best["mIoU"], rel=1e-6)
    assert recorded["chance_mAcc"] == pytest.approx(best["mAcc"], rel=1e-6)
    assert recorded["chance_mAcc"] == pytest.approx(100 / 4)  # the classes present: class 4 never is
    assert recorded["chance_aAcc"] == pytest.approx(best["aAcc"], rel=1e-6)
    assert recorded["chance_mIoU"] == pytest.approx(100 * np.mean(label[3:] == 0) / 4)
    # the split's levels, whatever the model predicts
    learnt = _evaluate(label.copy(), label, classes)
    assert {k: learnt[k] for k in recorded if k.startswith("chance_")} == {
        k: v for k, v in recorded.items() if k.startswith("chance_")}
    assert learnt["mIoU"] == pytest.approx(100.0)


def near_store(tmp_path):
    """The fixture study (chance mIoU 7.27, mAcc 9.09) with pi_logits a few points above chance
    and the teacher far above it."""
    outcomes = {**seeds("pi_logits", 8.0, 9.0, 10.0)}
    # the fixture's mAcc is mIoU + 10: pi_logits's mAcc 19 is far from its chance 9.09
    return make_store(tmp_path, outcomes)


def test_each_metrics_chance_level_sits_beside_the_cells_in_the_report(tmp_path):
    """Guarantee: Each metrics chance level sits beside the cells in the report."""
    study, results = make_store(tmp_path)
    frame = collect(study)
    assert chance.levels(frame, aggregate.metrics_of(frame)) == {"val/mIoU": "7.27", "val/mAcc": "9.09"}
    md = render(study, ("html", "md"))["md"].read_text()
    assert "| Method | mIoU | Δ vs student | mAcc | complete / planned | not averaged |" in md
    assert "| chance (a constant predictor) | 7.27 |  | 9.09 |  |  |" in md
    assert "Chance: what the best constant predictor scores on the validation split" in md
    assert "within 3 points of chance" not in md  # every mean here is far above it


def test_a_cell_a_few_points_above_chance_is_flagged_not_only_one_that_collapsed(tmp_path):
    """Guarantee: A cell a few points above chance is flagged not only one that collapsed."""
    study, results = near_store(tmp_path)
    written = render(study, ("html", "md"))
    warning = ("warning: pi_logits is within 3 points of chance (what a constant predictor scores): "
               "mIoU 9.00 ± 1.00 (n=3) vs chance 7.27 (+1.73 points).")
    html, md = written["html"].read_text(), written["md"].read_text()
    assert warning in html and f"- **{warning.replace('_', chr(92) + '_')}**" in md
    assert "single class everywhere" not in md  # no run predicts one class: only the chance line tells
    assert md.count("within 3 points of chance") == 1
    code, out, err = run_cli("report", str(study.path), "--results", str(results), "--format", "md")
    assert code == 0 and f"  - {warning}" in out


def test_runs_recorded_before_chance_levels_still_get_the_mean_accuracys_and_detection_ap_is_against_zero(tmp_path):
    study, results = make_store(tmp_path)
    frame = collect(study).drop(columns=list(CHANCE))  # as runs from before they were recorded
    assert chance.levels(frame, ["val/mIoU", "val/mAcc"]) == {"val/mIoU": "—", "val/mAcc": "9.09"}
    boxes = frame.assign(**{"val/bbox_mAP": [2.0] * len(frame)})
    assert np.all(chance.run_chance(boxes, "val/bbox_mAP") == 0.0)
    flagged = chance.near_chance_warnings(boxes, ["val/bbox_mAP"])
    assert any(w.startswith("warning: the student baseline is within 3 points of chance") and
               "mAP 2.00 ± 0.00 (n=3) vs chance 0.00 (+2.00 points)" in w for w in flagged)


def test_a_grid_of_many_near_chance_cells_gets_a_bounded_list_and_a_count_of_the_rest(tmp_path, monkeypatch):
    study, results = make_store(tmp_path)
    frame = collect(study)
    frame["val/chance_mIoU"] = frame["val/mIoU"] - 1  # every complete run 1 point above chance
    monkeypatch.setattr(chance, "MAX_WARNINGS", 2)
    flagged = chance.near_chance_warnings(frame, ["val/mIoU"])
    assert flagged[0].startswith("warning: the teacher is within 3 points of chance")
    assert flagged[1].startswith("warning: the student baseline is within 3 points of chance")
    assert flagged[2:] == ["warning: 3 more (teachers, student baselines or cells) within 3 points of chance; every "
                           "mean is in the All cells table, beside the chance row."]
