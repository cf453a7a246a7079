"""The modern COCO preset (studies/modern_coco_gfl.yaml): GFL R101 -> R50 1x with CWD, PKD, MGD, FGD, LD,
CrossKD and CrossKD + PKD cells at their sources' recipes, one teacher and one student baseline, and its
published rows beside the cells they describe."""

from pathlib import Path

from kdbench.stages import load_study
from kdbench.study import is_baseline_axis

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "modern_coco_gfl.yaml"


def test_the_modern_gfl_preset_plans_one_teacher_one_baseline_and_seven_cells_at_their_recipes():
    """Guarantee: `modern_coco_gfl` plans one evaluated GFL R101 teacher, one GFL R50 1x student baseline and the
    CWD, PKD, MGD, FGD, LD, CrossKD and CrossKD + PKD cells over 3 seeds; FGD distils the five FPN convs at its
    GFL config's weights (gamma 5e-4) and, like MGD, starts the student's neck and head from the teacher, which the
    shared student baseline does not."""
    study = load_study(STUDY, "/tmp/results")
    kinds = [p.kind for p in study.runs]
    assert (kinds.count("teacher"), kinds.count("student_baseline"), kinds.count("cell")) == (1, 3, 21)
    teacher = next(p for p in study.runs if p.kind == "teacher").run.teacher
    assert teacher.expect.value == 44.7 and teacher.checkpoint.endswith("dd12f847.pth")
    cells = {p.params["method"]: p.run for p in study.runs if p.kind == "cell" and p.params["seed"] == 0}
    assert sorted(cells) == ["crosskd", "crosskd_pkd", "cwd_fpn", "fgd_fpn", "ld", "mgd_fpn", "pkd_fpn"]
    fgd = cells["fgd_fpn"]
    assert [t.student_location for t in fgd.distill] == [(f"neck.fpn_convs.{i}.conv",) for i in range(5)]
    assert all(t.method == "fgd" and t.params == {"temp": 0.5, "alpha_fgd": 0.001, "beta_fgd": 0.0005,
                                                   "gamma_fgd": 0.0005, "lambda_fgd": 0.000005} for t in fgd.distill)
    assert {name: run.student.init_from_teacher for name, run in cells.items()} == {
        "cwd_fpn": (), "pkd_fpn": (), "mgd_fpn": ("neck", "bbox_head"), "fgd_fpn": ("neck", "bbox_head"),
        "ld": (), "crosskd": (), "crosskd_pkd": ()}
    assert [(t.method, t.weight, t.student_location) for t in cells["ld"].distill] == [("ld", 0.25, ("bbox_head",))]
    assert [(t.method, t.weight) for t in cells["crosskd_pkd"].distill] == [("crosskd", 1.0), ("pkd", 6.0)]
    assert cells["crosskd"].distill[0].params["reused_teacher_head_idx"] == 3
    assert all(run.teacher.forward == "full" and run.teacher.mode == "eval" for run in cells.values())
    assert all(run.schedule.iterations == 88704 and run.schedule.lr == 0.01 for run in cells.values())
    baselines = [p for p in study.runs if p.kind == "student_baseline"]
    assert [p.name for p in baselines] == ["student_s0", "student_s1", "student_s2"]
    assert all(p.run.student.init_from_teacher == () for p in baselines)
    assert not is_baseline_axis("student.init_from_teacher")  # every cell pairs with that one baseline


def test_the_modern_gfl_references_tag_each_row_with_its_recipe():
    """Each published row names its source file and its recipe (12 epochs, batch 16, lr 0.01, the teacher in
    eval mode) and says in its tag whether the student inherits from the teacher."""
    import pandas as pd

    table = pd.read_csv(ROOT / "studies" / "references" / "modern_coco_gfl.csv")
    assert sorted(table["method"]) == ["crosskd", "crosskd+pkd", "fgd", "ld"]
    assert dict(zip(table["method"], table["value"])) == {"fgd": 43.5, "crosskd": 43.7, "crosskd+pkd": 43.9,
                                                          "ld": 41.0}
    assert (table["recipe_epochs"] == 12).all() and (table["recipe_global_batch"] == 16).all()
    assert (table["recipe_lr"] == 0.01).all() and (table["recipe_teacher_mode"] == "eval").all()
    inherits = {m: "init_student" in tag for m, tag in zip(table["method"], table["tag"])}
    assert inherits == {"fgd": True, "crosskd": False, "crosskd+pkd": False, "ld": False}
