"""Per-class results: each segmentation evaluation records every class's IoU and accuracy by name,
each detection evaluation every category's AP (final.json and metrics.jsonl ``per_class``), and the
report lays them out as the paper's Table 3, with each class's Δ against the student baseline tested
(Holm across the classes of a cell), a figure of channel-wise against spatial cells, and the same
numbers in ``kdbench report --json``."""

import json

import numpy as np
import pytest

from analysis import perclass
from analysis.collect import collect
from analysis.summary import summarise
from kdbench import store
from reports.render import md, render_report
from reports.statistics import statistics_json
from tests.results_fixtures import SCRIPT, make_store

CLASSES = ["background", "T-shirt/top", "trouser", "sneaker", "bag", "never"]
# run name -> IoU per class (Acc = IoU + 5); "never" has no ground truth: IoU 0 (false positives), no Acc
IOU = {
    "teacher": [90, 60, 50, 40, 70],
    "student_s0": [80, 30, 20, 10, 40], "student_s1": [81, 31, 21, 11, 40.5], "student_s2": [82, 32, 22, 12, 41],
    "cwd_logits_s0": [80.4, 40, 10, 15, 40], "cwd_logits_s1": [80.6, 41.1, 11.05, 6, 40.5],
    "pi_logits_s0": [80, 30, 20, 10, 40],
    f"{SCRIPT}_s0": [70, 20, 10, 5, 30], f"{SCRIPT}_s2": [72, 22, 12, 7, 32],
}


def class_record(values, classes=CLASSES) -> dict:
    """A final.json ``per_class`` as runners.metrics.class_values writes it."""
    iou = list(values) + [0.0] * (len(classes) - len(values))
    acc = [v + 5 for v in values] + [None] * (len(classes) - len(values))
    return {"classes": list(classes), "IoU": iou, "Acc": acc}


def add_per_class(study, results, values=IOU, classes=CLASSES) -> None:
    """Write ``per_class`` into the complete runs' final.json (make_store writes none, as older runs)."""
    for planned in study.runs:
        path = results / study.name / planned.run_id / store.FINAL
        if planned.name in values and path.exists():
            final = json.loads(path.read_text())
            final[store.PER_CLASS] = class_record(values[planned.name], classes)
            path.write_text(json.dumps(final))


@pytest.fixture
def found(tmp_path):
    study, results = make_store(tmp_path)
    add_per_class(study, results)
    return summarise(study, collect(study))


def test_table3_has_a_row_per_teacher_baseline_and_cell_and_a_column_per_class_with_ground_truth(found):
    iou = found.per_class[0]
    assert [f.measure for f in found.per_class] == ["IoU", "Acc"]
    assert iou.classes == tuple(CLASSES[:5])  # "never" has no ground truth in any run: no column
    table = perclass.table3(iou, "seg", found.metric)
    assert table.header == ["Runs of", *CLASSES[:5], "mIoU"]
    rows = {row[0].text: [c.text for c in row[1:]] for row in table.rows}
    assert list(rows) == ["teacher", "student (no distillation)", "cwd_logits", "pi_logits", SCRIPT]
    assert rows["student (no distillation)"][:5] == ["81.00", "31.00", "21.00", "11.00", "40.50"]
    assert rows["cwd_logits"][:5] == ["80.50", "40.55", "10.53", "10.50", "40.25"]  # seed 2 diverged: not in
    assert rows["cwd_logits"][5] == "35.50"
    acc = {row.label: row.means for row in found.per_class[1].rows}
    assert acc["teacher"] == pytest.approx((95, 65, 55, 45, 75))
    best = [c.text for row in table.rows for c in row if c.best]
    assert "40.55" in best and "81.00" not in best  # the best distilled cell is bold, the baseline never


def test_each_class_delta_is_tested_with_holm_across_the_classes_of_the_cell(found):
    cwd = next(c for c in found.per_class[0].cells if c.label == "cwd_logits")
    by_name = {d.name: d for d in cwd.deltas}
    # cwd_logits has seeds 0 and 1 (seed 2 diverged), its baseline 0, 1 and 2: Welch, as for the cell's mIoU
    from scipy import stats

    sides = [([80.4, 80.6], [80, 81, 82]), ([40, 41.1], [30, 31, 32]), ([10, 11.05], [20, 21, 22]),
             ([15, 6], [10, 11, 12]), ([40, 40.5], [40, 40.5, 41])]
    ps = [stats.ttest_ind(a, b, equal_var=False).pvalue for a, b in sides]
    assert [d.test for d in cwd.deltas] == ["welch"] * 5
    assert [d.p for d in cwd.deltas] == pytest.approx(ps, rel=1e-6)
    assert by_name["T-shirt/top"].delta == pytest.approx(40.55 - 31)
    order = np.argsort(ps)  # Holm by hand: the k-th smallest p times (5 - k), running maximum
    holm = np.maximum.accumulate([min(1, (5 - k) * ps[i]) for k, i in enumerate(order)])
    assert [cwd.deltas[i].p_holm for i in order] == pytest.approx(holm, rel=1e-6)
    assert [d.verdict for d in cwd.deltas] == ["within noise", "gain", "loss", "within noise", "within noise"]
    assert perclass.cell_sentence(cwd) == ("cwd_logits: a gain on T-shirt/top; a loss on trouser; "
                                           "3 classes within noise.")
    # one run on a side: a Δ without an interval, never a verdict
    pi = next(c for c in found.per_class[0].cells if c.label == "pi_logits")
    assert {d.verdict for d in pi.deltas} == {"no interval (n = 1)"}


def test_the_report_and_its_json_show_the_per_class_tables_and_figure(tmp_path):
    study, results = make_store(tmp_path)
    add_per_class(study, results)
    frame = collect(study)
    found = summarise(study, frame)
    written, _, _ = render_report(study, frame, ("html", "md"), found)
    html, markdown = written["html"].read_text(), written["md"].read_text()
    assert 'id="per_class_IoU"' in html and 'id="per_class_IoU_delta"' in html
    assert 'id="fig-per_class_delta"' in html and (written["md"].parent / "per_class_delta.png").exists()
    assert md("cwd_logits: a gain on T-shirt/top; a loss on trouser;") in markdown
    as_json = statistics_json(found)["per_class"]
    assert [m["measure"] for m in as_json] == ["IoU", "Acc"]
    cwd = next(c for c in as_json[0]["cells"] if c["name"] == "cwd_logits")
    assert cwd["distils"] == "channel-wise"
    assert [d["verdict"] for d in cwd["deltas"]][1:3] == ["gain", "loss"]
    assert json.loads(json.dumps(as_json)) == as_json  # plain JSON: NaN became null


def test_results_without_per_class_values_still_collect_and_report(tmp_path):
    study, _ = make_store(tmp_path)  # final.json as written before per-class values were recorded
    frame = collect(study)
    found = summarise(study, frame)
    assert found.per_class == () and "per_class" not in statistics_json(found)
    written, _, _ = render_report(study, frame, ("html", "md"), found)
    assert perclass.NO_PER_CLASS in written["html"].read_text()
    assert "per_class_IoU" not in written["html"].read_text()


def test_a_malformed_per_class_record_makes_the_run_corrupt_not_a_wrong_number(tmp_path):
    study, results = make_store(tmp_path)
    add_per_class(study, results)
    planned = next(p for p in study.runs if p.name == "student_s0")
    path = results / study.name / planned.run_id / store.FINAL
    final = json.loads(path.read_text())
    final[store.PER_CLASS]["IoU"] = final[store.PER_CLASS]["IoU"][:2]
    path.write_text(json.dumps(final))
    frame = collect(study)
    row = frame[frame["name"] == "student_s0"].iloc[0]
    assert row["status"] == "corrupt" and "per_class: 'IoU' is not one number or null per class" in row["detail"]


def test_detection_tables_show_the_ten_categories_with_the_largest_delta_and_say_where_the_rest_are():
    names = tuple(f"category {i}" for i in range(15))
    deltas = [0.1 * i if i % 2 else -0.2 * i for i in range(15)]
    cell = perclass.CellClasses("cwd", "channel-wise", tuple(
        perclass.ClassDelta(n, d, d - 1, d + 1, "paired", 0.5, 0.9, "within noise") for n, d in zip(names, deltas)))
    rows = (perclass.ClassRow("student (no distillation)", "student", (10.0,) * 15, (3,) * 15, 20.0),
            perclass.ClassRow("cwd", "cell", tuple(10 + d for d in deltas), (3,) * 15, 21.0))
    found = perclass.PerClass("AP", names, rows, (cell,))
    kept = perclass.shown_classes(found, "det")
    largest = sorted(range(15), key=lambda i: -abs(deltas[i]))[:10]
    assert kept == sorted(largest)
    table = perclass.table3(found, "det", "val/bbox_mAP")
    assert table.header[1:-1] == [names[i] for i in kept]
    assert "the other 5 are in kdbench report --json (per_class)" in table.caption
    assert len(perclass.delta_table(found, "det").rows) == 10
    plain = perclass.plain(table)
    assert plain.columns == table.header and plain.rows[1][0] == "cwd"
