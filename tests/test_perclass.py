"""Per-class results: each segmentation evaluation records every class's IoU and accuracy by name,
each detection evaluation every category's AP (final.json and metrics.jsonl ``per_class``), and the
report lays them out as the paper's Table 3, with each class's Δ against the student baseline tested
(Holm across the classes of a cell), a figure of channel-wise against spatial cells, and the same
numbers in ``kdbench report --json``."""

import json
import math

import numpy as np
import pytest

from analysis import perclass, perclass_plot
from analysis.collect import collect
from analysis.summary import summarise
from kdbench import store
from reports.render import md, render_report
from reports.statistics import statistics_json
from tests.browser import Dom, dump_dom, needs_chromium
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


def test_the_segmentation_metric_records_each_class_iou_and_accuracy_by_name():
    """The real mmseg IoUMetric (kdbench's unrounded subclass) on a known prediction: class 1 is
    half right, class 2 never in the ground truth but predicted (IoU 0, no accuracy), class 3 in
    neither (no IoU, no accuracy)."""
    import torch

    from runners.metrics import KDIoUMetric

    label = np.zeros((4, 4), dtype=np.int64)
    label[:2] = 1                      # 8 pixels of class 1, 8 of class 0
    prediction = label.copy()
    prediction[0] = 2                  # 4 pixels of class 1 predicted as class 2
    metric = KDIoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": ["road", "<b>car</b>", "sky", "bus"]}
    result = metric.intersect_and_union(torch.from_numpy(prediction), torch.from_numpy(label), 4, 255)
    found = metric.compute_metrics([result])
    assert found[store.PER_CLASS] == {"classes": ["road", "<b>car</b>", "sky", "bus"],
                                      "IoU": [100.0, 50.0, 0.0, None], "Acc": [100.0, 50.0, None, None]}
    assert found["mIoU"] == pytest.approx(50.0)  # the scalars are unchanged: (100 + 50 + 0) / 3


def _detection_split(num_val: int):
    """The generated detection val split and its evaluator's options."""
    from mmengine.runner import Runner

    from kdbench.spec import parse_run
    from runners.build import register_scope
    from runners.datasets import dataset_configs

    run = parse_run({"task": "det", "student": {"config": "tiny_det_student"},
                     "dataset": {"name": "fashion_scenes", "params": {"num_train": 2, "num_val": num_val, "size": 64,
                                                                      "seed": 3, "classes": [0, 1, 7, 8]}},
                     "schedule": {"iterations": 2, "batch_size": 2}})
    register_scope("det")
    data = dataset_configs(run)
    return Runner.build_dataloader(data["val_dataloader"]).dataset, {
        k: v for k, v in data["val_evaluator"].items() if k != "type"}


def test_the_detection_metric_records_each_category_ap_as_mmdets_classwise_table_unrounded():
    """kdbench's CocoMetric against mmdet's own classwise table (rounded to 3 decimals), on the
    same imperfect detections of generated scenes."""
    import torch
    from mmdet.evaluation.metrics import CocoMetric
    from mmengine.structures import InstanceData

    from runners.metrics import KDCocoMetric

    val, options = _detection_split(12)
    ours, theirs = KDCocoMetric(**options), CocoMetric(**{**options, "classwise": True})
    rng = np.random.default_rng(0)
    for metric in (ours, theirs):
        metric.dataset_meta = val.metainfo
    for index in range(len(val)):
        sample = val[index]["data_samples"]
        boxes = sample.gt_instances.bboxes
        boxes = (boxes.tensor if hasattr(boxes, "tensor") else boxes).clone()
        boxes += torch.from_numpy(rng.integers(-3, 4, size=boxes.shape)).float()  # off by a few pixels
        keep = torch.from_numpy(rng.random(len(boxes)) > 0.25)                    # some objects missed
        prediction = InstanceData(bboxes=boxes[keep], labels=sample.gt_instances.labels[keep],
                                  scores=torch.from_numpy(rng.random(int(keep.sum()))).float())
        for metric in (ours, theirs):
            metric.process({}, [{"img_id": sample.img_id, "ori_shape": sample.ori_shape, "pred_instances": prediction}])
    recorded = ours.compute_metrics(ours.results)[store.PER_CLASS]
    table = theirs.compute_metrics(theirs.results)
    assert recorded["classes"] == list(val.metainfo["classes"])
    compared = 0
    for name, ap in zip(recorded["classes"], recorded["AP"]):
        expected = table[f"{name}_precision"]
        if math.isnan(expected):
            assert ap is None
        else:
            assert abs(ap / 100 - expected) <= 0.0005 + 1e-9, name
            compared += 0 < ap < 100
    assert compared >= 2  # categories with an AP strictly between 0 and 100 were compared


@pytest.mark.slow  # a Chromium process: seconds
@needs_chromium
def test_a_headless_browser_shows_the_per_class_tables_and_the_channel_wise_vs_spatial_figure(tmp_path):
    """Guarantee: The report shows per-class results in the paper's Table 3 layout (a row per teacher, baseline and
    cell, a column per class), each class's Δ vs the student baseline with its interval and verdict (Holm across
    the cell's classes), a sentence naming the classes that gain and lose, and a figure of channel-wise against
    spatial cells, checked in a real browser; ``kdbench report --json`` has the same numbers."""
    import base64
    import io

    from PIL import Image

    study, results = make_store(tmp_path)
    add_per_class(study, results)
    frame = collect(study)
    found = summarise(study, frame)
    written, _, _ = render_report(study, frame, ("html",), found)
    dom = Dom(dump_dom(written["html"], tmp_path / "profile"))
    assert "Per-class IoU (the paper's Table 3 layout)" in dom.text and "Per-class Δ IoU vs the student baseline" \
        in dom.text
    ids = {attrs.get("id") for _, attrs, _ in dom.elements}
    assert {"per_class_IoU", "per_class_IoU_delta", "fig-per_class_delta"} <= ids
    assert "40.55" in dom.text and "+9.55 [" in dom.text  # T-shirt/top: cwd_logits' mean and its Δ
    assert "cwd_logits: a gain on T-shirt/top; a loss on trouser; 3 classes within noise." in dom.text
    images = [attrs["src"] for tag, attrs, inside in dom.elements
              if tag == "img" and "figure" in inside and attrs.get("alt", "").startswith("Per-class Δ IoU")]
    picture = Image.open(io.BytesIO(base64.b64decode(images[0].split(",", 1)[1])))
    assert picture.size[0] > 400 and len(np.unique(np.asarray(picture.convert("RGB")).reshape(-1, 3), axis=0)) > 50
    drawn = perclass_plot.figures(found)[0].data
    assert set(drawn["kind"]) == {"channel-wise", "spatial"}  # CWD beside spatial cells, from the declarations
    assert set(drawn[drawn["kind"] == "channel-wise"]["cell"]) == {"cwd_logits"}


@pytest.mark.slow  # trains a tiny model: seconds
@pytest.mark.parametrize("task", ["seg", "det"])
def test_a_real_run_records_per_class_values_in_final_json_and_metrics_jsonl(task, tmp_path):
    """A tiny student trained and evaluated by mmengine's Runner on generated scenes: every
    evaluation line and final.json hold each class's IoU and accuracy (each category's AP) under the
    dataset's names."""
    from runners.data.fashion_scenes import DET_CLASSES, SEG_CLASSES
    from tests.run_fixtures import execute, seg_run

    schedule = {"iterations": 2, "batch_size": 2, "val_interval": 1, "checkpoint_interval": 2}
    run = seg_run(schedule=schedule) if task == "seg" else seg_run(
        task="det", student={"config": "tiny_det_student"}, schedule=schedule)
    record = execute(run, tmp_path)
    lines = store.read_jsonl(tmp_path / store.METRICS)
    assert [line["iter"] for line in lines] == [1, 2]
    names = list(SEG_CLASSES if task == "seg" else DET_CLASSES)
    assert all(line[store.PER_CLASS]["classes"] == names for line in lines)
    final = json.loads((tmp_path / store.FINAL).read_text())
    assert final[store.PER_CLASS] == lines[-1][store.PER_CLASS] == record[store.PER_CLASS]
    assert store.PER_CLASS not in final["metrics"] and store.final_problem(final) is None
    if task == "det":
        assert set(final[store.PER_CLASS]) == {"classes", "AP"}
        return
    iou = [v for v in final[store.PER_CLASS]["IoU"] if v is not None]
    assert final["metrics"]["val/mIoU"] == pytest.approx(np.mean(iou))  # the classes the mean is over


def test_class_names_with_html_markdown_and_latex_characters_render_escaped_in_html_and_markdown(tmp_path):
    """A plugin dataset can name its classes anything: each name is shown as the text it is, in the
    table headers, the Δ rows and the sentences (the hostile report of test_report_escaping.py checks
    the same in a browser)."""
    import markupsafe

    names = ["<b>bold</b>", "a|b *c* _d_ [x](y)", r"\textbf{x} $y$ 50% #1 & ~^{}", "- list", "bag", "never"]
    study, results = make_store(tmp_path)
    add_per_class(study, results, IOU, names)
    written, _, _ = render_report(study, None, ("html", "md"))
    html, markdown = written["html"].read_text(), written["md"].read_text()
    for name in names[:5]:
        assert f"<th>{markupsafe.escape(name)}</th>" in html and f"<td>{markupsafe.escape(name)}</td>" in html
        assert f"| {md(name)} |" in markdown
    assert "<b>bold</b>" not in html and "<b>bold</b>" not in markdown
    assert md("cwd_logits: a gain on a|b *c* _d_ [x](y); a loss on ") + md(names[2]) in markdown


def test_without_a_single_detection_each_category_with_ground_truth_scores_ap_0_and_the_others_none():
    from mmengine.structures import InstanceData

    from runners.metrics import KDCocoMetric

    val, options = _detection_split(6)
    metric = KDCocoMetric(**options)
    metric.dataset_meta = val.metainfo
    present = set()
    for index in range(len(val)):
        sample = val[index]["data_samples"]
        present |= {int(label) for label in sample.gt_instances.labels}
        nothing = InstanceData(bboxes=sample.gt_instances.bboxes[:0], labels=sample.gt_instances.labels[:0],
                               scores=sample.gt_instances.labels[:0].float())
        metric.process({}, [{"img_id": sample.img_id, "ori_shape": sample.ori_shape, "pred_instances": nothing}])
    found = metric.compute_metrics(metric.results)
    assert found["bbox_mAP"] == 0.0 and present == {0, 1, 7, 8}  # the scenes' four classes
    assert found[store.PER_CLASS]["AP"] == [0.0 if i in present else None for i in range(10)]
