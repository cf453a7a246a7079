"""The CIRKD-lineage Cityscapes protocol (studies/modern_cityscapes.yaml), the knob that chooses
which evaluation a run reports (``schedule.select``), and the report's fairness audit
(analysis.fairness): which comparisons are like for like."""

import json
import re
from pathlib import Path

import pytest

from kdbench.ids import run_id
from kdbench.spec import parse_run
from kdbench.stages import load_study
from runners.selection import selection
from tests.results_fixtures import make_store, study_text
from tests.test_runspec import PINNED_ID, minimal_cwd_run

ROOT = Path(__file__).resolve().parents[1]
LOGITS = "decode_head.conv_seg"


def test_select_last_is_the_default_and_leaves_every_run_id_as_it_was():
    run = parse_run(minimal_cwd_run())
    assert run.schedule.select == "last" and "select" not in run.to_dict()["schedule"]
    assert run_id(run) == PINNED_ID
    best = parse_run(minimal_cwd_run(schedule={"val_interval": 5, "iterations": 10, "select": "best"}))
    assert best.to_dict()["schedule"]["select"] == "best"
    same_but_last = parse_run(minimal_cwd_run(schedule={"val_interval": 5, "iterations": 10}))
    assert run_id(best) != run_id(same_but_last)


def test_a_run_reports_its_last_or_its_best_evaluation_and_records_both():
    evaluations = [{"iter": 5, "val/mIoU": 40.0, "val/mAcc": 50.0}, {"iter": 10, "val/mIoU": 45.0, "val/mAcc": 55.0},
                   {"iter": 15, "val/mIoU": 43.0, "val/mAcc": 60.0}]
    last, record = selection("last", "seg", evaluations[-1], evaluations)
    assert last == {"val/mIoU": 43.0, "val/mAcc": 60.0}
    assert record["last"] == {"iter": 15, "metrics": last}
    assert record["best"] == {"iter": 10, "metrics": {"val/mIoU": 45.0, "val/mAcc": 55.0}}
    best, record_best = selection("best", "seg", evaluations[-1], evaluations)
    assert best == {"val/mIoU": 45.0, "val/mAcc": 55.0} and record_best["select"] == "best"
    assert record_best["metric"] == "val/mIoU" and record_best["last"] == record["last"]
    assert selection("best", "seg", None, []) == ({}, None)


@pytest.mark.slow
def test_a_best_run_writes_both_evaluations_to_final_json_and_reports_the_best(tmp_path):
    """Guarantee: `schedule.select: best` reports the best validation evaluation of a run and `last` its last one;
    final.json records both, each with its iteration."""
    from runners.train import execute

    spec = {"task": "seg", "student": {"config": "tiny_seg_student"}, "device": "cpu",
            "dataset": {"name": "fashion_scenes", "params": {"num_train": 16, "num_val": 8, "size": 32}},
            "schedule": {"iterations": 6, "batch_size": 4, "lr": 0.05, "val_interval": 2, "checkpoint_interval": 6,
                         "select": "best"}}
    record = execute(parse_run(spec), tmp_path / "run")
    written = json.loads((tmp_path / "run" / "final.json").read_text())
    chosen = written["selection"]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["iter"] for line in lines] == [2, 4, 6]
    top = max(line["val/mIoU"] for line in lines)
    assert chosen["best"]["metrics"]["val/mIoU"] == top == written["metrics"]["val/mIoU"]
    assert chosen["last"]["iter"] == 6 and chosen["last"]["metrics"]["val/mIoU"] == lines[-1]["val/mIoU"]
    assert written["recipe"]["select"] == "best" and written["recipe"]["val_interval"] == 2
    assert record["metrics"] == written["metrics"]


def test_smoke_accepts_schedule_select(tmp_path):
    text = (ROOT / "studies" / "smoke.yaml").read_text()
    assert "lr_schedule: poly, val_interval: 100," in text
    path = tmp_path / "smoke.yaml"
    path.write_text(text.replace("lr_schedule: poly, val_interval: 100,", "lr_schedule: poly, val_interval: 100, "
                                                                          "select: best,"))
    study = load_study(path, tmp_path / "results")
    students = [p for p in study.runs if p.run.role == "student"]
    assert students and all(p.run.schedule.select == "best" for p in students)
    before = {p.name: p.run_id for p in load_study(ROOT / "studies" / "smoke.yaml", tmp_path / "results").runs}
    assert all(before[p.name] != p.run_id for p in students)


def test_the_modern_preset_plans_its_three_students_and_nine_methods_without_the_data(tmp_path):
    from tests.launch_helpers import run_cli

    code, out, err = run_cli("plan", str(ROOT / "studies" / "modern_cityscapes.yaml"), "--results", str(tmp_path))
    assert code == 0, err
    assert "study modern_cityscapes: 100 runs" in out   # 9 methods x 3 students x 3 seeds, 18 baselines, a teacher
    name = "deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024_cwd_as_cirkd_grad_clip-None_s0"
    code, out, err = run_cli("plan", str(ROOT / "studies" / "modern_cityscapes.yaml"), "--results", str(tmp_path),
                             "--show", name)
    assert code == 0, err
    shown = json.loads(out)["values"]
    protocol = {"schedule.iterations": 40000, "schedule.batch_size": 16, "schedule.crop": [512, 1024],
                "schedule.lr": 0.02, "schedule.momentum": 0.9, "schedule.weight_decay": 0.0001,
                "schedule.lr_schedule": "poly", "schedule.min_lr": 0.0, "schedule.warmup_iters": 0,
                "schedule.val_interval": 800, "schedule.select": "last", "dataset.pipeline": "default"}
    for key, value in protocol.items():
        assert shown[key]["value"] == value, key
        assert "source" in shown[key], key
    assert "CIRKD" in shown["schedule.weight_decay"]["source"]
    terms = [shown[f"distill.{i}.method"]["value"] for i in range(4)]
    assert terms == ["pi", "ho", "cwd", "cwd"] and "distill.4.method" not in shown
    assert "train_cwd.sh" in shown["distill.0.method"]["source"]


UNEQUAL = """method,location,dataset,teacher,student,metric,value,teacher_value,student_value,n_runs,source,\
recipe_weight_decay,recipe_select,recipe_val_interval,recipe_terms,recipe_iterations,\
baseline_recipe_weight_decay,baseline_recipe_select,baseline_recipe_val_interval,tag
cwd,logits,fashion_scenes_val,t,s,mIoU,40.25,55.5,33.75,1,"A Paper, Table 9",0.0005,best,400,cwd+pi,10,0.0001,last,,\
"another weight decay, the best checkpoint and an extra term"
"""


def _store_with_cards(tmp_path):
    """The report fixture with recipe cards on its complete runs and an unequal published row."""
    text = study_text({"cwd_logits": f"{{method: cwd, params: {{tau: 4.0}}, weight: 3.0, student_location: {LOGITS}}}"},
                      "references: [fixture_ref.csv]\n")
    study, results = make_store(tmp_path, study_text=text)
    (tmp_path / "references" / "fixture_ref.csv").write_text(UNEQUAL)
    for final in (results / study.name).glob("*/final.json"):
        record = json.loads(final.read_text())
        cell = record["name"].startswith("cwd")
        record["recipe"] = {"weight_decay": 0.0005, "iterations": 10, "val_interval": 10, "select": "last",
                            "student_init": "random", "terms": "cwd@decode_head.conv_seg x3" if cell else None,
                            "global_batch": 8}
        if not cell and record["role"] == "student":
            record["recipe"]["weight_decay"] = 0.0005
        final.write_text(json.dumps(record))
    return load_study(tmp_path / "fixture.yaml", results)


def test_the_audit_names_each_recipe_field_an_unequal_published_row_differs_in(tmp_path):
    """Guarantee: The report's fairness audit lists, for each comparison (a cell against its baseline, a published
    row against its own baseline, a measured cell against the published row of its method), the recipe fields that
    differ, and calls it like for like only when none does; `report --json` holds the same."""
    from analysis import fairness
    from analysis.collect import collect
    from analysis.summary import summarise
    from reports.statistics import statistics_json

    study = _store_with_cards(tmp_path)
    found = summarise(study, collect(study))
    audits = fairness.audits(found)
    by_kind = {a["comparison"]: a for a in audits}
    own = by_kind["cell vs its student baseline"]
    assert own["like_for_like"] and own["differences"] == []
    published = by_kind["published row vs its own baseline"]
    assert not published["like_for_like"]
    assert {d["field"] for d in published["differences"]} == {"weight decay", "selection"}
    measured = by_kind["measured cell vs published row"]
    named = {d["field"]: (d["of"], d["against"]) for d in measured["differences"]}
    assert set(named) == {"selection", "loss terms"}   # weight decay: 5e-4 on both sides
    assert named["loss terms"] == ("cwd", "cwd+pi")
    assert named["selection"][1] == "best of every 400 iterations (selected on val: optimistic)"
    assert statistics_json(found)["fairness"] == audits
    table = fairness.audit_table(found)
    words = {row[0].text: row[3].text for row in table.rows}
    assert re.search(r"weight decay 0\.0001 vs 0\.0005|weight decay 0.0005 vs 0.0001",
                     words["published row vs its own baseline"])


def test_a_cell_that_reports_its_best_evaluation_is_labelled_optimistic_in_every_table(tmp_path):
    from analysis import fairness
    from analysis.collect import collect
    from analysis.summary import summarise
    from reports.render import _tables

    study = _store_with_cards(tmp_path)
    for final in (study.directory).glob("*/final.json"):
        record = json.loads(final.read_text())
        record["recipe"]["select"] = "best"
        final.write_text(json.dumps(record))
    frame = collect(study)
    found = summarise(study, frame)
    assert all(fairness.selected_on_val(cell) for cell in found.cells)
    built, _ = _tables(found, frame, [])
    labelled = [t.key for t in built if any(row[0].text.endswith("[selected on val (optimistic)]") for row in t.rows)]
    assert "results" in labelled and "significance" in labelled


def test_each_cirkd_lineage_row_sits_beside_the_cell_of_its_method_or_of_its_combination_and_student():
    """Guarantee: A published row that states the terms it trained together (`recipe_terms`) sits beside the cell
    whose terms are that combination as well as beside the cells of its method alone, for its own student only."""
    from analysis import references
    from tests.results_fixtures import cell_record

    study = load_study(ROOT / "studies" / "modern_cityscapes.yaml", "/tmp/none")
    cells = []
    for planned in study.runs:
        if planned.kind != "cell" or planned.run.seed != 0:
            continue
        terms = planned.run.distill
        kinds = {"logits" if "conv_seg" in t.student_location[0] else "feature" for t in terms}
        cells.append(cell_record(planned.params["method"], {"student.config": planned.params["student.config"]},
                                 dataset="cityscapes", location_kind=" + ".join(sorted(kinds)),
                                 kd_method="; ".join(t.method for t in terms)))
    published = references.read_references(study.path, ["cirkd_lineage.csv"])
    matches = references.match_references(published, cells, study.spec.methods, "seg")

    def beside(method: str, student: str) -> set[str]:
        return {m.cell.method for m in matches if m.cell is not None and m.reference["method"] == method
                and m.reference["student"] == student}

    assert beside("cwd", "deeplabv3_r18") == {"cwd", "cwd_as_cirkd"}
    assert beside("pa", "deeplabv3_r18") == {"skd_as_cirkd"}
    assert beside("ifvd", "deeplabv3_r18") == {"ifvd_as_cirkd"}
    assert beside("cirkd", "deeplabv3_r18") == {"cirkd"}
    assert beside("dist", "deeplabv3_r18") == {"dist"}
    assert beside("afdcd", "deeplabv3_r18") == {"afdcd"}
    assert beside("pi", "deeplabv3_r18") == {"pixel_kd"}
    assert beside("cirkd", "mobilenet_v2_deeplabv3") == {"cirkd"}
    assert beside("maskd", "deeplabv3_r18") == set()   # no kdbench loss: listed as not measured
    stems = {"deeplabv3_r18": "deeplabv3_r18-d8", "mobilenet_v2_deeplabv3": "mobilenet-v2-d8_deeplabv3",
             "pspnet_r18": "pspnet_r18-d8"}
    assert all(stems[m.reference["student"]] in str(m.cell.axes["student.config"]) for m in matches
               if m.cell is not None)


def test_a_comparison_whose_sides_state_no_field_in_common_is_unchecked_not_like_for_like():
    from analysis.fairness import LIKE, UNCHECKED, UNLIKE, audit

    entry = audit("cell vs its student baseline", "cwd", "student baseline", {}, {"weight_decay": 1e-4})
    assert entry["verdict"] == UNCHECKED and not entry["like_for_like"] and entry["unstated"] == ["weight decay"]
    assert audit("k", "a", "b", {"crop": [512, 1024]}, {"crop": "[512, 1024]"})["verdict"] == LIKE
    differs = audit("k", "a", "b", {"weight_decay": 1e-4, "global_batch": 16},
                    {"weight_decay": 5e-4, "global_batch": 16})
    assert differs["verdict"] == UNLIKE and differs["differences"] == [
        {"field": "weight decay", "of": "0.0001", "against": "0.0005"}]
