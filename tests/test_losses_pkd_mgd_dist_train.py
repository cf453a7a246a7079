"""PKD, MGD and DIST in a tiny segmentation run: each on the logits and on a feature map, every
term passes the trainer's watch (no ``kd_inactive``), and MGD's layers train with the student."""

import json

import pytest
import torch

from kdbench import store
from tests.run_fixtures import execute, seg_run, teacher_of


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path_factory.getbasetemp() / "data"))


def _terms() -> list[dict]:
    logits, feature = "decode_head.conv_seg", "decode_head.bottleneck"  # 11 classes; 32 -> 64 channels
    return [
        {"name": "pkd_logits", "method": "pkd", "student_location": logits},
        {"name": "pkd_feature", "method": "pkd", "weight": 6.0, "student_location": feature, "adapter": True},
        {"name": "mgd_logits", "method": "mgd", "params": {"alpha_mgd": 2e-3}, "student_location": logits},
        {"name": "mgd_feature", "method": "mgd", "params": {"alpha_mgd": 2e-5, "mask_on_channel": True},
         "student_location": feature},
        {"name": "dist_logits", "method": "dist", "student_location": logits},
        {"name": "dist_feature", "method": "dist", "params": {"intra": "batch", "tau": 4.0},
         "student_location": feature, "adapter": True},
    ]


@pytest.mark.slow
def test_pkd_mgd_and_dist_terms_on_logits_and_a_feature_map_all_train_the_student(seg_teacher, tmp_path):
    """Guarantee: PKD, MGD and DIST terms on the tiny segmentation models' logits and on a feature map train
    together: the run completes (no `kd_inactive`), logs every term, and MGD's `align` and `generation` layers
    are stepped by the student's optimizer."""
    run = seg_run(teacher=teacher_of(seg_teacher), distill=_terms(),
                  schedule={"iterations": 6, "batch_size": 2, "checkpoint_interval": 3})
    final = execute(run, tmp_path)
    assert final["status"] == "complete", store.read_json(tmp_path / "error.json")
    scalars = [json.loads(line) for line in next(tmp_path.glob("*/vis_data/scalars.json")).read_text().splitlines()]
    logged = set().union(*scalars)
    assert {f"loss_kd_{term['name']}" for term in _terms()} <= logged

    first, last = (torch.load(tmp_path / f"iter_{i}.pth", weights_only=False) for i in (3, 6))
    mgd = [key for key in last["state_dict"] if key.startswith("kd_losses.mgd_")]
    assert {"kd_losses.mgd_feature.align.weight", "kd_losses.mgd_feature.generation.0.weight",
            "kd_losses.mgd_feature.generation.2.bias", "kd_losses.mgd_logits.generation.2.weight"} <= set(mgd)
    assert "kd_losses.mgd_logits.align.weight" not in mgd  # 11 classes on both sides: nothing to align
    for key in mgd:  # stepped by the student's optimizer between the two checkpoints
        assert not torch.equal(first["state_dict"][key], last["state_dict"][key]), key
    trainable = [k for k, v in last["state_dict"].items() if v.is_floating_point()
                 and not k.endswith(("running_mean", "running_var")) and not k.startswith("teacher.")]
    assert len(last["optimizer"]["state"]) == len(trainable)  # a momentum buffer for each, MGD's included


@pytest.mark.slow
def test_mgds_layers_and_masks_follow_the_runs_seed(tmp_path):
    """Two builds of one MGD run with the same seed give the same layers and, on the same batch,
    the same loss (the same mask); another seed another."""
    from mmengine.runner import Runner, set_random_seed

    from kdbench.spec import parse_run
    from runners.build import build_model, load_config, register_scope
    from runners.datasets import dataset_configs
    from runners.train import build_trained_model

    checkpoint = tmp_path / "teacher.pth"
    torch.save(build_model(load_config("tiny_seg_teacher"), "seg", init=False).state_dict(), checkpoint)
    term = {"name": "mgd", "method": "mgd", "params": {"alpha_mgd": 1.0}, "student_location": "decode_head.bottleneck"}
    register_scope("seg")

    def first_step_loss(seed: int) -> tuple[float, dict]:
        run = parse_run(seg_run(seed=seed, distill=[term], teacher={"config": "tiny_seg_teacher",
                                                                     "checkpoint": str(checkpoint)}))
        data = dataset_configs(run)
        set_random_seed(run.seed)  # as train_and_evaluate does before it builds the model
        model = build_trained_model(run, data).train()
        loader = Runner.build_dataloader({**data["train_dataloader"], "batch_size": 2, "num_workers": 0}, seed=0)
        batch = model.data_preprocessor(next(iter(loader)), training=True)
        layers = {k: v.clone() for k, v in model.kd_losses["mgd"].state_dict().items()}
        return float(model.loss(batch["inputs"], batch["data_samples"])["loss_kd_mgd"]), layers

    (loss, layers), (again, layers_again), (other, _) = first_step_loss(3), first_step_loss(3), first_step_loss(4)
    assert set(layers) == {"align.weight", "align.bias", "generation.0.weight", "generation.0.bias",
                           "generation.2.weight", "generation.2.bias"}  # 32 -> 64 channels: aligned
    assert all(torch.equal(value, layers_again[key]) for key, value in layers.items())
    assert loss == again and loss != other
