"""``kdbench plan STUDY --show RUN``: one run resolved, each value with where it comes from."""

import json
from pathlib import Path

from tests.launch_helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "studies"


def _show(study: str, run: str) -> dict:
    code, out, err = run_cli("plan", str(STUDIES / study), "--show", run)
    assert code == 0, err
    shown = json.loads(out)
    return {path: (item["value"], item["from"]) for path, item in shown["values"].items()} | {"": shown}


def test_show_names_the_axis_planner_and_base_behind_each_value_of_an_evaluated_teacher_run():
    """Guarantee: `plan --show RUN` gives each value of a run with its origin (axis, method, teacher_run, base or
    defaults file, planner, built-in default); an unknown run is one line with close matches, exit 2."""
    values = _show("paper_table6_coco.yaml", "teacher_retinanet_r101_fpn_2x_coco")
    assert values["teacher.config"] == ("mmdet::retinanet/retinanet_r101_fpn_2x_coco.py", "axis zip[0].teacher.config")
    assert values["teacher.expect.value"] == (38.9, "axis zip[0].teacher.expect.value")
    assert values["teacher.expect.metric"] == ("val/bbox_mAP", "base.teacher.expect.metric in paper_table6_coco.yaml")
    assert values["schedule.iterations"] == (0, "planner: a teacher given by checkpoint is evaluated, not trained")
    assert values["schedule.momentum"] == (0.9, "base.schedule.momentum in paper_table6_coco.yaml")
    assert values["schedule.min_lr"] == (0.0001, "built-in default")
    assert values["seed"] == (0, "teacher_run.seed")
    assert values[""]["kind"] == "teacher"


def test_show_of_a_trained_teacher_names_its_teacher_run_schedule_and_the_axis_it_shares(tmp_path):
    """Guarantee: Show of a trained teacher names its teacher run schedule and the axis it shares."""
    from tests.launch_helpers import write_study

    path = write_study(tmp_path, "show_lr", grid={"schedule.lr": [0.01, 0.02]},
                       teacher_run={"schedule": {"iterations": 6}})
    code, out, err = run_cli("plan", str(path), "--show", "teacher_lr0.02")
    values = json.loads(out)["values"]
    assert code == 0 and values["schedule.lr"] == {"value": 0.02, "from": "axis grid.schedule.lr"}
    assert values["schedule.iterations"] == {"value": 6, "from": "teacher_run.schedule.iterations in show_lr.yaml"}


def test_show_names_the_defaults_file_the_method_and_the_planner_behind_a_cells_values():
    """Guarantee: Show names the defaults file the method and the planner behind a cells values."""
    values = _show("paper_table2_cityscapes.yaml", "cwd_logits_s1")
    assert values["schedule.crop"] == ([512, 512], "base.schedule.crop in defaults file _paper_cityscapes.yaml")
    assert values["dataset.pipeline"] == ("crop_only", "base.dataset.pipeline in defaults file _paper_cityscapes.yaml")
    shown = values[""]["values"]
    assert shown["dataset.pipeline"]["source"].startswith("TorchDistiller SemSeg-distill/dataset/datasets.py")
    assert shown["distill.0.weight"]["source"].startswith("paper section 4.1 (T = 4, alpha = 3 on the logits")
    assert values["distill.0.params.tau"] == (4.0, "methods.cwd_logits in paper_table2_cityscapes.yaml")
    assert values["distill.0.teacher_location"] == (["decode_head.conv_seg"], "built-in default: the student location")
    assert values["seed"] == (1, "planner: one of the study's seeds")
    assert values["schedule.warmup_iters"] == (0, "built-in default")


def test_show_points_a_cell_at_its_teacher_run_and_accepts_a_run_id(tmp_path):
    code, out, _ = run_cli("plan", str(STUDIES / "smoke.yaml"), "--results", str(tmp_path), "--json",
                           "--no-model-check", "--no-data-check")
    rows = {row["name"]: row for row in json.loads(out)}
    code, out, err = run_cli("plan", str(STUDIES / "smoke.yaml"), "--results", str(tmp_path),
                             "--show", rows["pi_s2"]["run_id"])
    shown = json.loads(out)
    assert code == 0 and shown["name"] == "pi_s2" and shown["depends_on"] == [rows["teacher"]["run_id"]]
    assert shown["values"]["teacher.checkpoint.run"] == {
        "value": str(tmp_path / "smoke" / rows["teacher"]["run_id"]),
        "from": f"planner: the teacher run {rows['teacher']['run_id']}"}


def test_show_of_an_unknown_run_is_one_line_with_close_matches_and_exit_2():
    """Guarantee: Show of an unknown run is one line with close matches and exit 2."""
    code, out, err = run_cli("plan", str(STUDIES / "smoke.yaml"), "--show", "cwd_logit_s0")
    assert code == 2 and out == ""
    assert err.strip().endswith("'cwd_logit_s0' is neither the name nor the id of a run of "
                                f"{STUDIES / 'smoke.yaml'}; close matches: cwd_logits_s0, cwd_logits_s2, cwd_logits_s1")
    assert len(err.strip().splitlines()) == 1


def test_show_config_prints_the_complete_mmengine_config_a_run_trains_with():
    """Guarantee: `plan --show RUN --config` prints the complete mmengine config the run trains with, a config mmengine
    reads back.

    MMRazor's recipe: mmseg's augmentation, 80k iterations, poly to 1e-4, the bn_eval teacher;
    the paper's: a plain random crop. The text is a config mmengine reads back."""
    from mmengine.config import Config

    code, out, err = run_cli("plan", str(STUDIES / "mmrazor_cwd_cityscapes.yaml"), "--show", "cwd_logits_s0",
                             "--config")
    assert code == 0, err
    cfg = Config.fromstring(out, ".py")
    assert cfg.train_cfg.max_iters == 80000 and cfg.train_cfg.val_interval == 8000
    assert cfg.optim_wrapper.optimizer == {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005}
    assert cfg.param_scheduler[0]["type"] == "PolyLR" and cfg.param_scheduler[0]["eta_min"] == 0.0001
    assert [t["type"] for t in cfg.train_dataloader.dataset.pipeline][2:6] == [
        "RandomResize", "RandomCrop", "RandomFlip", "PhotoMetricDistortion"]
    assert cfg.train_dataloader.batch_size == 8 and cfg.model.decode_head.num_classes == 19
    assert cfg.teacher.mode == "bn_eval" and cfg.teacher.model.backbone.depth == 101
    assert cfg.distill[0]["student_location"] == ["decode_head.conv_seg"] and cfg.distill[0]["weight"] == 5.0
    code, out, err = run_cli("plan", str(STUDIES / "paper_table2_cityscapes.yaml"), "--show", "cwd_logits_s0",
                             "--config")
    paper = Config.fromstring(out, ".py")
    assert [t["type"] for t in paper.train_dataloader.dataset.pipeline] == [
        "LoadImageFromFile", "LoadAnnotations", "RandomCrop", "PackSegInputs"]
    assert paper.param_scheduler[0]["eta_min"] == 0.0 and paper.teacher.mode == "eval"


def test_config_without_show_is_one_line_and_exit_2():
    code, out, err = run_cli("plan", str(STUDIES / "smoke.yaml"), "--config")
    assert code == 2 and err.strip().endswith("--config: give the run with --show RUN (its name or id)")
