"""``kdbench import mmrazor``: MMRazor's own CWD configs (tests/mmrazor_configs) become kdbench
runs and studies that load, with the models, locations, weights and schedule MMRazor's recipe has."""

import json
import re
from pathlib import Path

import pytest
import yaml

from kdbench.cli import main
from kdbench.expand import load_study
from kdbench.spec import parse_run
from tests.launch_helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).parent / "mmrazor_configs"
SEG = CONFIGS / "mmseg" / "cwd" / "cwd_logits_pspnet_r101-d8_pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py"
GFL = CONFIGS / "mmdet" / "cwd" / "cwd_cls_head_gfl_r101_fpn_gfl_r50_fpn_1x_coco.py"
FRCNN = CONFIGS / "mmdet" / "cwd" / "cwd_fpn_frcnn_r101_frcnn_r50_1x_coco.py"


def imported(capsys, *args) -> dict:
    assert main(["import", "mmrazor", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


def test_mmrazors_cwd_seg_config_becomes_the_run_of_the_hand_written_mmrazor_study(capsys):
    """Guarantee: `kdbench import mmrazor` turns MMRazor's own CWD configs (seg and det) into runs and studies that
    load, with the recipe's models, locations (FPN `data_idx` included), weights and schedule; a loss kdbench
    lacks is one line naming it and the methods, exit 2."""
    run = imported(capsys, SEG)
    parse_run(run, str(SEG))  # a valid run file
    hand = yaml.safe_load((ROOT / "studies" / "mmrazor_cwd_cityscapes.yaml").read_text())
    base = hand["base"]
    assert run["task"] == "seg"
    assert run["teacher"] == {k: base["teacher"][k] for k in ("config", "checkpoint", "mode")}  # bn_eval: MMRazor's
    assert run["student"] == base["student"]
    assert run["dataset"]["name"] == "cityscapes"
    expected = {k: v for k, v in base["schedule"].items() if k not in ("checkpoint_interval", "num_workers")}
    assert {k: run["schedule"][k] for k in expected} == {**expected, "crop": [512, 1024]}
    assert run["distill"] == [{"name": "cwd", "method": "cwd", "params": {"tau": 1}, "weight": 5,
                               "student_location": "decode_head.conv_seg", "teacher_location": "decode_head.conv_seg"}]


def test_fpn_recorders_with_data_idx_become_one_term_per_fpn_level_on_an_epoch_schedule(capsys):
    """Guarantee: Fpn recorders with data idx become one term per fpn level on an epoch schedule."""
    run = imported(capsys, GFL)
    parse_run(run, str(GFL))
    terms = [(t["name"], t["student_location"], t["teacher_location"], t["weight"], t["params"])
             for t in run["distill"]]
    assert terms == [(f"cwd_fpn{i}", f"neck[{i}]", f"neck[{i}]", 10, {"tau": 1}) for i in range(5)]  # data_idx
    assert run["teacher"]["config"] == "mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py"
    assert run["teacher"]["checkpoint"].endswith("gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth")
    per_epoch = -(-118287 // 16)                      # 8 GPUs x 2 images, COCO train2017
    schedule = run["schedule"]
    assert schedule["iterations"] == 12 * per_epoch and schedule["val_interval"] == per_epoch
    assert (schedule["batch_size"], schedule["lr"], schedule["lr_schedule"], schedule["warmup_iters"]) \
        == (16, 0.01, "step", 500)                    # lr: the retina config's override of mmdet's 0.02


def test_gpus_sets_the_global_batch_and_so_the_iterations_of_an_epoch_schedule(capsys):
    run = imported(capsys, GFL, "--gpus", "4")
    assert run["schedule"]["batch_size"] == 8 and run["schedule"]["iterations"] == 12 * -(-118287 // 8)


def test_import_study_writes_a_study_that_plans_the_mmrazor_cell(tmp_path):
    out = tmp_path / "cwd.yaml"
    assert main(["import", "mmrazor", str(SEG), "--study", "-o", str(out)]) == 0
    study = load_study(out, tmp_path / "results")
    cells = [r for r in study.runs if r.kind == "cell"]
    assert len(cells) == 3 and {r.run.seed for r in cells} == {0, 1, 2}
    assert cells[0].run.distill[0].student_location == ("decode_head.conv_seg",)
    assert {r.kind for r in study.runs} == {"cell", "teacher", "student_baseline"}


def derived(tmp_path: Path, body: str) -> Path:
    """A config that inherits MMRazor's seg config and changes its distiller."""
    path = tmp_path / "derived.py"
    path.write_text(f"_base_ = [{str(SEG)!r}]\n{body}")
    return path


def test_a_loss_kdbench_lacks_is_one_line_naming_it_and_the_methods_exit_2(tmp_path, capsys):
    """Guarantee: A loss kdbench lacks is one line naming it and the methods exit 2."""
    config = derived(tmp_path, "model = dict(distiller=dict(distill_losses=dict(loss_cwd=dict(_delete_=True, "
                               "type='KLDivergence', tau=1, loss_weight=5))))\n")
    out = tmp_path / "run.json"
    assert main(["import", "mmrazor", str(config), "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'KLDivergence'" in error and "distill_losses.loss_cwd" in error
    assert re.search(r"methods: .*\bcwd\b.*\bpi\b", error)
    assert not out.exists()


def test_a_student_convmodule_connector_becomes_an_adapter_with_its_norm_and_act(tmp_path, capsys):
    config = derived(tmp_path, """
model = dict(distiller=dict(
    student_recorders=dict(feat=dict(type='ModuleOutputs', source='decode_head.bottleneck')),
    teacher_recorders=dict(feat=dict(type='ModuleOutputs', source='decode_head.bottleneck')),
    student_connectors=dict(up=dict(type='ConvModuleConnector', in_channel=128, out_channel=512,
                                    norm_cfg=dict(type='BN'), act_cfg=None)),
    loss_forward_mappings=dict(loss_cwd=dict(
        preds_S=dict(from_student=True, recorder='feat', connector='up'),
        preds_T=dict(from_student=False, recorder='feat')))))
""")
    term = imported(capsys, config)["distill"][0]
    assert term["student_location"] == term["teacher_location"] == "decode_head.bottleneck"
    assert term["adapter"] == {"norm": True, "act": False}


def test_mmrazors_frcnn_config_is_refused_for_its_mmdet2_name_and_once_renamed_distils_all_five_levels(
        tmp_path, capsys):
    # MMRazor's own frcnn config names mmdet 2.x's file: refused, naming the packaged ones.
    assert main(["import", "mmrazor", str(FRCNN)]) == 2
    error = capsys.readouterr().err
    assert "model.architecture.cfg_path" in error and "faster-rcnn_r101_fpn_1x_coco.py" in error
    fixed = tmp_path / "frcnn.py"
    fixed.write_text(f"_base_ = [{str(FRCNN)!r}]\nmodel = dict(architecture=dict(cfg_path="
                     "'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'), teacher=dict("
                     "cfg_path='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py'))\n")
    run = imported(capsys, fixed)
    parse_run(run, str(fixed))
    # Level 4 is a max pool inside FPN.forward, made by no module: neck[4] taps it all the same.
    assert [t["student_location"] for t in run["distill"]] == [f"neck[{i}]" for i in range(5)]


@pytest.mark.slow
@pytest.mark.parametrize("config", [SEG, GFL], ids=["seg", "det"])
def test_an_imported_study_passes_plans_model_check_on_the_real_mmseg_and_mmdet_models(tmp_path, config):
    """Guarantee: An imported study passes plans model check on the real mmseg and mmdet models.

    Every location (FPN levels by data_idx included) exists, with matching shapes, in the real
    student and teacher (the preflight builds them; no data or weights needed)."""
    study = tmp_path / "imported.yaml"
    assert main(["import", "mmrazor", str(config), "--study", "-o", str(study)]) == 0
    code, out, err = run_cli("plan", str(study), "--results", str(tmp_path / "results"), "--no-data-check")
    assert code == 0, err
    assert "mmrazor_s0" in out
