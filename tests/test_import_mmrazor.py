"""``kdbench import mmrazor``: MMRazor's own dense distillation configs (tests/mmrazor_configs, all 11)
become kdbench runs and studies that load and plan, with the models, locations, weights and
schedule MMRazor's recipe has; what kdbench cannot represent is one line and exit 2."""

import json
import re
from pathlib import Path

import pytest
import yaml

from kdbench.cli import main
from kdbench.spec import parse_run
from kdbench.stages import load_study
from tests.launch_helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).parent / "mmrazor_configs"
ALL = sorted(CONFIGS.rglob("*.py"))
SEG = CONFIGS / "mmseg" / "cwd" / "cwd_logits_pspnet_r101-d8_pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py"
GFL = CONFIGS / "mmdet" / "cwd" / "cwd_cls_head_gfl_r101_fpn_gfl_r50_fpn_1x_coco.py"
FRCNN = CONFIGS / "mmdet" / "cwd" / "cwd_fpn_frcnn_r101_frcnn_r50_1x_coco.py"
RETINA_CWD = CONFIGS / "mmdet" / "cwd" / "cwd_fpn_retina_r101_retina_r50_1x_coco.py"
FBKD = CONFIGS / "mmdet" / "fbkd" / "fbkd_fpn_faster-rcnn_r101_faster-rcnn_r50_1x_coco.py"
MGD = CONFIGS / "mmdet" / "mgd" / "mgd_fpn_retina_x101_retina_r50_2x_coco.py"
PKD = CONFIGS / "mmdet" / "pkd"
ZOO = "https://download.openmmlab.com/mmdetection/v2.0/"
PER_EPOCH = -(-118287 // 16)                      # 8 GPUs x 2 images, COCO train2017


def imported(capsys, *args) -> dict:
    assert main(["import", "mmrazor", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


def test_all_eleven_dense_configs_of_mmrazor_main_import_as_valid_runs(capsys):
    """Guarantee: `kdbench import mmrazor` turns each of the 11 dense distillation configs of MMRazor's main branch
    into a valid run, its teacher checkpoint a model-zoo URL and its teacher gate on the task's metric."""
    assert len(ALL) == 11
    for config in ALL:
        run = imported(capsys, config)
        parse_run(run, str(config))
        assert run["teacher"]["checkpoint"].startswith("https://download.openmmlab.com/"), config.name
        assert run["teacher"]["expect"]["metric"] in ("val/mIoU", "val/bbox_mAP"), config.name


def test_mmrazors_cwd_seg_config_becomes_the_run_of_the_hand_written_mmrazor_study(capsys):
    """Guarantee: MMRazor's Cityscapes PSPNet CWD config imports as exactly the run of
    `studies/mmrazor_cwd_cityscapes.yaml` (models, teacher checkpoint, mode and gate, schedule, crop, the CWD
    term), and a student `ConvModuleConnector` becomes an adapter with its norm and act."""
    run = imported(capsys, SEG)
    hand = yaml.safe_load((ROOT / "studies" / "mmrazor_cwd_cityscapes.yaml").read_text())
    base = hand["base"]
    assert run["task"] == "seg"
    assert run["teacher"] == {k: base["teacher"][k] for k in ("config", "checkpoint", "mode", "expect")}
    assert run["student"] == base["student"]
    assert run["dataset"]["name"] == "cityscapes"
    expected = {k: v for k, v in base["schedule"].items() if k not in ("num_workers",)}
    assert {k: run["schedule"][k] for k in expected} == {**expected, "crop": [512, 1024]}
    assert run["distill"] == [{"name": "cwd", "method": "cwd", "params": {"tau": 1}, "weight": 5,
                               "student_location": "decode_head.conv_seg", "teacher_location": "decode_head.conv_seg"}]


def test_an_imported_study_is_as_complete_as_the_hand_written_preset(tmp_path):
    out = tmp_path / "studies" / "cwd.yaml"
    (tmp_path / "studies" / "references").mkdir(parents=True)
    (tmp_path / "studies" / "references" / "mmrazor.csv").write_text(
        (ROOT / "studies" / "references" / "mmrazor.csv").read_text())
    assert main(["import", "mmrazor", str(SEG), "--study", "-o", str(out)]) == 0
    study = yaml.safe_load(out.read_text())
    hand = yaml.safe_load((ROOT / "studies" / "mmrazor_cwd_cityscapes.yaml").read_text())
    assert list(study["methods"]) == list(hand["methods"]) == ["cwd_logits"]   # named after what it distils
    assert study["references"] == hand["references"] == ["mmrazor.csv"]
    assert study["base"]["teacher"]["expect"] == hand["base"]["teacher"]["expect"]
    assert study["base"]["schedule"]["checkpoint_interval"] == hand["base"]["schedule"]["checkpoint_interval"]
    resources = study["resources"]
    assert resources["gpus"] == 4 and resources["mem_gb"] >= 64     # the recipe's 4 GPUs, not 1 and 240 minutes
    assert resources["time_min"] >= 80000 * 2 * 0.3 / 60             # 80k iterations of 2 images per GPU
    assert set(study["provenance"]) >= {"base.teacher.config", "methods.cwd_logits", "base.schedule.lr"}
    planned = load_study(out, tmp_path / "results")
    cells = [r for r in planned.runs if r.kind == "cell"]
    assert len(cells) == 3 and {r.run.seed for r in cells} == {0, 1, 2}
    assert {r.kind for r in planned.runs} == {"cell", "teacher", "student_baseline"}


def test_fpn_recorders_with_data_idx_become_one_term_per_fpn_level_on_an_epoch_schedule(capsys):
    """Guarantee: Fpn recorders with data idx become one term per fpn level on an epoch schedule."""
    run = imported(capsys, GFL)
    terms = [(t["name"], t["student_location"], t["teacher_location"], t["weight"], t["params"])
             for t in run["distill"]]
    assert terms == [(f"cwd_fpn{i}", f"neck[{i}]", f"neck[{i}]", 10, {"tau": 1}) for i in range(5)]  # data_idx
    assert run["teacher"]["config"] == "mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py" and run["teacher"]["forward"] == "neck"
    assert run["teacher"]["checkpoint"].endswith("gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth")
    assert run["teacher"]["expect"] == {"metric": "val/bbox_mAP", "value": 44.7, "tolerance": 1.0}
    schedule = run["schedule"]
    assert schedule["iterations"] == 12 * PER_EPOCH and schedule["val_interval"] == PER_EPOCH
    assert (schedule["batch_size"], schedule["lr"], schedule["lr_schedule"], schedule["warmup_iters"]) \
        == (16, 0.01, "step", 500)                    # lr: the retina config's override of mmdet's 0.02


def test_gpus_sets_the_global_batch_and_so_the_iterations_of_an_epoch_schedule(capsys):
    run = imported(capsys, GFL, "--gpus", "4")
    assert run["schedule"]["batch_size"] == 8 and run["schedule"]["iterations"] == 12 * -(-118287 // 8)


def test_the_frcnn_configs_mmdet2_names_and_bare_checkpoint_name_are_mapped_through_the_metafiles(capsys):
    run = imported(capsys, FRCNN)
    notes = capsys.readouterr().err
    assert run["student"]["config"] == "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"
    assert run["teacher"]["config"] == "mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py"
    assert run["teacher"]["checkpoint"] == (ZOO + "faster_rcnn/faster_rcnn_r101_fpn_2x_coco/"
                                            "faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth")
    assert run["teacher"]["expect"]["value"] == 39.8
    assert [t["student_location"] for t in run["distill"]] == [f"neck[{i}]" for i in range(5)]
    main(["import", "mmrazor", str(FRCNN)])
    notes = capsys.readouterr().err
    assert "mmdet 2.x's name" in notes and "bare file name" in notes and notes.count("\n") == 3


def test_the_retinanet_cwd_configs_inherited_faster_rcnn_checkpoint_is_flagged_in_one_line_and_replaced(capsys):
    assert main(["import", "mmrazor", str(RETINA_CWD)]) == 0
    out, err = capsys.readouterr()
    flagged = [line for line in err.splitlines() if "faster_rcnn" in line and "retinanet" in line]
    assert len(flagged) == 1 and "not one of the teacher" in flagged[0]
    teacher = json.loads(out)["teacher"]
    assert teacher["checkpoint"] == (ZOO + "retinanet/retinanet_r101_fpn_2x_coco/"
                                     "retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth")
    assert teacher["expect"]["value"] == 38.9


def test_fbkd_connectors_become_the_fbkd_terms_own_non_local_settings(capsys):
    run = imported(capsys, FBKD)
    assert [(t["name"], t["student_location"], t["params"]) for t in run["distill"]] == [
        ("fbkd_s0", "neck.fpn_convs.0.conv", {"reduction": 4, "sub_sample": True, "maxpool_stride": 8}),
        ("fbkd_s1", "neck.fpn_convs.1.conv", {"reduction": 4, "sub_sample": True, "maxpool_stride": 4}),
        ("fbkd_s2", "neck.fpn_convs.2.conv", {"sub_sample": True}),
        ("fbkd_s3", "neck.fpn_convs.3.conv", {"sub_sample": True})]
    assert "forward" not in run["teacher"]                 # SingleTeacherDistill: the teacher runs whole
    main(["import", "mmrazor", str(FBKD)])
    assert "model.architecture.pretrained=True" in capsys.readouterr().err  # said, not silently dropped


def test_mgd_starts_the_students_neck_and_head_from_the_teacher_and_its_connector_is_the_losss(capsys):
    run = imported(capsys, MGD)
    assert run["student"] == {"config": "mmdet::retinanet/retinanet_r50_fpn_2x_coco.py",
                              "init_from_teacher": ["neck", "bbox_head"]}
    assert run["teacher"]["forward"] == "neck" and run["teacher"]["expect"]["value"] == 41.0
    assert [(t["name"], t["method"], t["student_location"], t["params"]) for t in run["distill"]] == [
        (f"mgd_fpn{i}", "mgd", f"neck.fpn_convs.{i}.conv", {"alpha_mgd": 2e-5, "lambda_mgd": 0.65}) for i in range(5)]
    schedule = run["schedule"]
    assert (schedule["iterations"], schedule["lr"], schedule["lr_schedule"], schedule["warmup_iters"]) == (
        24 * PER_EPOCH, 0.01, "step", 500)
    assert "grad_clip" not in schedule                    # optimizer_config: mmcv 1.x, ignored by mmengine


def test_pkd_configs_read_four_fpn_levels_with_their_weights_and_learning_rates(capsys):
    expected = {  # config: (student, teacher, weight, lr, epochs)
        "pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco": ("faster_rcnn/faster-rcnn_r50_fpn_2x_coco", 6, 0.02, 24),
        "pkd_fpn_retina_x101_retina_r50_2x_coco": ("retinanet/retinanet_r50_fpn_2x_coco", 10, 0.01, 24),
        "pkd_fpn_reppoints_x101-dcn_reppoints_r50_2x_coco": (
            "reppoints/reppoints-moment_r50_fpn-gn_head-gn_2x_coco", 10, 0.01, 24),
        "pkd_fpn_fcos_x101_retina_r50_1x_coco": ("retinanet/retinanet_r50_fpn_1x_coco", 10, 0.01, 12),
        "pkd_fpn_mask-rcnn_swin_retina_r50_2x_coco": ("retinanet/retinanet_r50_fpn_2x_coco", 6, 0.01, 24)}
    for config in sorted(PKD.glob("*.py")):
        run = imported(capsys, config)
        student, weight, lr, epochs = expected[config.stem]
        assert run["student"]["config"] == f"mmdet::{student}.py"
        assert [(t["method"], t["student_location"], t["weight"], t["params"]) for t in run["distill"]] == [
            ("pkd", f"neck[{i}]", weight, {}) for i in range(4)]          # not the fifth level
        assert (run["schedule"]["lr"], run["schedule"]["iterations"]) == (lr, epochs * PER_EPOCH)
        assert run["teacher"]["forward"] == "neck"


def test_the_pkd_and_mgd_presets_are_what_the_import_makes_of_mmrazors_configs(capsys, tmp_path):
    """The preset's cells have the run ids of the imported configs' runs: the same runs."""
    for preset, configs in (("mmrazor_mgd_coco", [MGD]),
                            ("mmrazor_pkd_coco", [PKD / "pkd_fpn_retina_x101_retina_r50_2x_coco.py",
                                                  PKD / "pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py",
                                                  PKD / "pkd_fpn_reppoints_x101-dcn_reppoints_r50_2x_coco.py"])):
        cells = {r.run_id for r in load_study(ROOT / "studies" / f"{preset}.yaml", tmp_path).runs if r.kind == "cell"}
        for config in configs:
            out = tmp_path / f"{config.stem}.yaml"
            assert main(["import", "mmrazor", str(config), "--study", "-o", str(out)]) == 0
            mine = {r.run_id for r in load_study(out, tmp_path).runs if r.kind == "cell"}
            assert mine and mine <= cells, (preset, config.name)


def test_the_optimizers_gradient_clipping_becomes_schedule_grad_clip(tmp_path, capsys):
    config = derived(tmp_path, "optim_wrapper = dict(clip_grad=dict(_delete_=True, max_norm=35, norm_type=2))\n")
    assert imported(capsys, config)["schedule"]["grad_clip"] == 35
    config = derived(tmp_path, "optim_wrapper = dict(clip_grad=dict(_delete_=True, max_norm=35, norm_type=1))\n")
    assert main(["import", "mmrazor", str(config)]) == 2
    assert "norm_type 2" in capsys.readouterr().err


def derived(tmp_path: Path, body: str, base: Path = SEG) -> Path:
    """A config that inherits one of MMRazor's and changes it."""
    path = tmp_path / "derived.py"
    path.write_text(f"_base_ = [{str(base)!r}]\n{body}")
    return path


def test_a_loss_kdbench_lacks_is_one_line_naming_it_and_the_methods_exit_2(tmp_path, capsys):
    """Guarantee: A loss kdbench lacks is one line naming it and the methods exit 2."""
    config = derived(tmp_path, "model = dict(distiller=dict(distill_losses=dict(loss_cwd=dict(_delete_=True, "
                               "type='OFDLoss', loss_weight=5))))\n")
    out = tmp_path / "run.json"
    assert main(["import", "mmrazor", str(config), "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'OFDLoss'" in error and "distill_losses.loss_cwd" in error
    assert re.search(r"methods: .*\bcwd\b.*\bpi\b", error)
    assert not out.exists()


def test_kldivergence_imports_as_pi_with_its_tau_reduction_and_weight_and_none_is_refused(tmp_path, capsys):
    """MMRazor's KLDivergence (default reduction batchmean) is pi with the same tau, reduction and
    weight; reduction='none' (a map, not a loss) is one line, exit 2, nothing written."""
    body = ("model = dict(distiller=dict(distill_losses=dict(loss_cwd=dict(_delete_=True, "
            "type='KLDivergence', tau=2, loss_weight=5{}))))\n")
    term = imported(capsys, derived(tmp_path, body.format("")))["distill"][0]
    assert (term["method"], term["weight"], term["params"]) == ("pi", 5, {"tau": 2, "reduction": "batchmean"})
    term = imported(capsys, derived(tmp_path, body.format(", reduction='sum'")))["distill"][0]
    assert term["params"] == {"tau": 2, "reduction": "sum"}
    out = tmp_path / "run.json"
    assert main(["import", "mmrazor", str(derived(tmp_path, body.format(", reduction='none'"))), "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'none'" in error and "distill_losses.loss_cwd" in error
    assert not out.exists()


def test_mmrazors_atloss_written_from_its_formula_equals_kdbenchs_at_which_it_imports_as():
    """ATLoss: the mean squared difference of the L2-normalised channel means of the squared maps."""
    import torch
    import torch.nn.functional as F

    from kdbench import losses

    student, teacher = torch.randn(2, 8, 5, 7, dtype=torch.float64), torch.randn(2, 16, 5, 7, dtype=torch.float64)

    def attention(x):
        return F.normalize(x.pow(2).mean(1).view(x.size(0), -1))

    expected = 3.0 * (attention(student) - attention(teacher)).pow(2).mean()
    assert torch.allclose(losses.build("at", loss_weight=3.0)(student, teacher), expected, rtol=1e-12, atol=0)


def test_l2loss_without_normalisation_and_per_element_is_fitnets_and_otherwise_refused(tmp_path, capsys):
    body = ("model = dict(distiller=dict(distill_losses=dict(loss_cwd=dict(_delete_=True, type='L2Loss', "
            "loss_weight=3{}))))\n")
    run = imported(capsys, derived(tmp_path, body.format(", normalize=False, div_element=True")))
    assert (run["distill"][0]["method"], run["distill"][0]["weight"]) == ("fitnets", 3)
    assert main(["import", "mmrazor", str(derived(tmp_path, body.format("")))]) == 2
    assert "normalize=False, div_element=True" in capsys.readouterr().err


def test_mmrazors_dist_loss_is_dist_with_its_batch_wise_intra_relation(tmp_path, capsys):
    body = ("model = dict(distiller=dict(distill_losses=dict(loss_cwd=dict(_delete_=True, type='DISTLoss', "
            "tau=4, inter_loss_weight=2, loss_weight=3))))\n")
    term = imported(capsys, derived(tmp_path, body))["distill"][0]
    assert (term["method"], term["weight"], term["params"]) == (
        "dist", 3, {"tau": 4, "inter_loss_weight": 2, "intra": "batch"})   # MMRazor's DISTLoss on a 4-D map


def test_a_student_convmodule_connector_becomes_an_adapter_with_its_norm_and_act(tmp_path, capsys):
    config = derived(tmp_path, """
model = dict(distiller=dict(
    student_recorders=dict(feat=dict(type='ModuleOutputs', source='decode_head.bottleneck')),
    teacher_recorders=dict(feat=dict(type='ModuleOutputs', source='decode_head.bottleneck')),
    connectors=dict(up=dict(type='ConvModuleConnector', in_channel=128, out_channel=512,
                            norm_cfg=dict(type='BN'), act_cfg=None)),
    loss_forward_mappings=dict(loss_cwd=dict(
        preds_S=dict(from_student=True, recorder='feat', connector='up'),
        preds_T=dict(from_student=False, recorder='feat')))))
""")
    term = imported(capsys, config)["distill"][0]
    assert term["student_location"] == term["teacher_location"] == "decode_head.bottleneck"
    assert term["adapter"] == {"norm": True, "act": False}


@pytest.mark.parametrize("body, expected", [
    ("model = dict(type='DAFLDataFreeDistillation')\n", r"model\.type 'DAFLDataFreeDistillation': kdbench imports"),
    ("model = dict(distiller=dict(student_recorders=dict(logits=dict(_delete_=True, type='MethodOutputs', "
     "source='x.y'))))\n", r"recorder type 'MethodOutputs' has no kdbench counterpart"),
    ("param_scheduler = [dict(type='CosineAnnealingLR', T_max=10)]\n", r"param_scheduler\[0\]: CosineAnnealingLR"),
    ("optim_wrapper = dict(paramwise_cfg=dict(bias_lr_mult=2.0))\n", r"optim_wrapper: paramwise_cfg has no kdbench"),
    ("model = dict(teacher=dict(cfg_path='mmseg::pspnet/pspnet_r999.py'))\n",
     r"model\.teacher\.cfg_path: 'mmseg::pspnet/pspnet_r999\.py' is not a config packaged with mmseg"),
], ids=["distiller", "recorder", "scheduler", "paramwise", "teacher_config"])
def test_a_config_kdbench_cannot_represent_is_one_line_and_exit_2(tmp_path, body, expected):
    """Guarantee: An MMRazor config kdbench cannot represent (another distiller, a recorder type, a scheduler, an
    optimizer wrapper setting, a model config mmseg does not ship) is one line saying which key and why, exit 2,
    nothing printed."""
    code, out, err = run_cli("import", "mmrazor", str(derived(tmp_path, body)), "--study")
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(expected, err), err


def _model(cfg_path: str) -> dict:
    from mmengine.config import Config

    from runners.config_files import resolve_config

    return Config.fromfile(str(resolve_config(cfg_path))).model.to_dict()


def _schedulers(mmrazor, per_epoch: int) -> list[dict]:
    """MMRazor's param_scheduler by iteration: epochs x the iterations of an epoch."""
    found = []
    for item in mmrazor.param_scheduler:
        by_epoch = item.get("by_epoch", True)
        at = (lambda v: v * per_epoch) if by_epoch else (lambda v: v)
        entry = {"type": item["type"], "begin": at(item.get("begin", 0)), "end": at(item["end"])}
        entry.update({k: item[k] for k in ("start_factor", "gamma", "power", "eta_min") if k in item})
        if "milestones" in item:
            entry["milestones"] = [at(m) for m in item["milestones"]]
        found.append(entry)
    return found


@pytest.mark.parametrize("config", ALL, ids=lambda p: p.stem)
def test_plan_show_config_has_the_mmrazor_configs_model_optimizer_and_schedule(config, tmp_path):
    """Guarantee: For each of MMRazor's 11 dense configs, `plan --show RUN --config` of the imported run has the
    config's student and teacher models, optimizer, gradient clipping, parameter schedulers and iterations.

    ``plan --show RUN --config`` (the mmengine config the run trains with) against the MMRazor
    config read by mmengine: the student's and the teacher's model (the packaged configs it names,
    or the model dict MGD gives, init_cfg included), the optimizer, gradient clipping, the
    parameter schedulers and the iterations, epochs counted at COCO's or Cityscapes' size."""
    from mmengine.config import Config

    from runners.mmrazor_import import read_config

    study = tmp_path / "imported.yaml"
    assert main(["import", "mmrazor", str(config), "--study", "-o", str(study)]) == 0
    written = yaml.safe_load(study.read_text())
    code, out, err = run_cli("plan", str(study), "--results", str(tmp_path / "results"), "--show",
                             f"{next(iter(written['methods']))}_s0", "--config")
    assert code == 0, err
    shown, mmrazor = Config.fromstring(out, ".py"), read_config(config)
    arch = mmrazor.model.architecture
    student = _model(written["base"]["student"]["config"]) if "cfg_path" in arch else arch.to_dict()
    assert shown.model.to_dict() == student
    assert shown.teacher.model.to_dict() == _model(written["base"]["teacher"]["config"])
    assert shown.teacher.checkpoint == written["base"]["teacher"]["checkpoint"]
    optimizer = mmrazor.optim_wrapper.optimizer
    assert shown.optim_wrapper.optimizer.to_dict() == {k: optimizer[k] for k in ("type", "lr", "momentum",
                                                                                  "weight_decay")}
    assert shown.optim_wrapper.clip_grad == mmrazor.optim_wrapper.get("clip_grad")
    images = 2975 if written["base"]["task"] == "seg" else 118287
    batch = written["base"]["schedule"]["batch_size"]
    assert batch == written["resources"]["gpus"] * mmrazor.train_dataloader.batch_size
    per_epoch = -(-images // batch)
    epochs = mmrazor.train_cfg.get("max_epochs")
    assert shown.train_cfg.max_iters == (epochs * per_epoch if epochs else mmrazor.train_cfg.max_iters)
    assert [{k: v for k, v in item.items() if k != "by_epoch"} for item in shown.param_scheduler] == \
        _schedulers(mmrazor, per_epoch)


@pytest.mark.slow
@pytest.mark.parametrize("config", ALL, ids=lambda p: p.stem)
def test_every_imported_study_plans_with_the_model_check_on_the_real_models(tmp_path, config):
    """Guarantee: every MMRazor dense config imports as a study that plans with the model check on the real models.

    Every location (FPN levels by data_idx included) exists, with matching shapes, in the real
    student and teacher, and MGD's student parts fit the teacher's (the preflight builds the models;
    no data or weights needed, and no loss is built: pkd and mgd plan on their declarations)."""
    study = tmp_path / "imported.yaml"
    assert main(["import", "mmrazor", str(config), "--study", "-o", str(study)]) == 0
    code, out, err = run_cli("plan", str(study), "--results", str(tmp_path / "results"), "--no-data-check")
    assert code == 0, err


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["mmrazor_pkd_coco", "mmrazor_mgd_coco"])
def test_the_pkd_and_mgd_presets_plan_with_the_model_check_on_the_real_models(tmp_path, preset):
    code, out, err = run_cli("plan", str(ROOT / "studies" / f"{preset}.yaml"), "--results", str(tmp_path),
                             "--no-data-check")
    assert code == 0, err
    assert f"study {preset}: {21 if 'pkd' in preset else 7} runs" in out
