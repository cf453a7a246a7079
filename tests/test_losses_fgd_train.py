"""FGD in a tiny detection run: the tiny GFL student distilled from the tiny GFL teacher on each FPN
level, as FGD's configs distil a detector, with the boxes of the run's own data samples; every term
passes the trainer's watch (no ``kd_inactive``) and FGD's layers train with the student."""

import json

import pytest
import torch

from kdbench import store
from tests.run_fixtures import TINY_DATA, execute

LEVELS = (0, 1, 2)  # the tiny FPN's three levels: 32 channels in the student, 64 in the teacher


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path_factory.getbasetemp() / "data"))


@pytest.mark.slow
def test_fgd_on_every_fpn_level_trains_a_tiny_gfl_student_and_its_layers(tmp_path):
    """Guarantee: `fgd` on each FPN level of the tiny GFL student, given the ground-truth boxes of the run's data
    samples, trains with the student: the run completes (no `kd_inactive`: each term's loss is non-zero and its
    gradient reaches the student), logs every term, and FGD's `align`, `conv_mask_*` and `channel_add_conv_*`
    layers are stepped by the student's optimizer."""
    from runners.build import build_model, load_config

    checkpoint = tmp_path / "teacher.pth"
    torch.save(build_model(load_config("tiny_det_teacher"), "det", init=False).state_dict(), checkpoint)
    terms = [{"name": f"fgd_fpn{i}", "method": "fgd", "params": {"gamma_fgd": 0.0005},
              "student_location": f"neck.fpn_convs.{i}.conv", "teacher_location": f"neck.fpn_convs.{i}.conv"}
             for i in LEVELS]
    run = {"task": "det", "student": {"config": "tiny_det_student"}, "dataset": TINY_DATA,
           "teacher": {"config": "tiny_det_teacher", "checkpoint": str(checkpoint)}, "distill": terms,
           "schedule": {"iterations": 6, "batch_size": 2, "checkpoint_interval": 3}, "seed": 0}
    final = execute(run, tmp_path / "run")
    assert final["status"] == "complete", store.read_json(tmp_path / "run" / "error.json")
    scalars = [json.loads(line) for line in next((tmp_path / "run").glob("*/vis_data/scalars.json")).read_text()
               .splitlines()]
    logged = [entry for entry in scalars if "loss" in entry]
    assert logged and all(f"loss_kd_fgd_fpn{i}" in entry for entry in logged for i in LEVELS)
    assert all(entry[f"loss_kd_fgd_fpn{i}"] > 0 for entry in logged for i in LEVELS)

    first, last = (torch.load(tmp_path / "run" / f"iter_{i}.pth", weights_only=False)["state_dict"] for i in (3, 6))
    for i in LEVELS:
        prefix = f"kd_losses.fgd_fpn{i}."
        assert last[prefix + "align.weight"].shape == (64, 32, 1, 1)
        for layer in ("align", "conv_mask_s", "conv_mask_t", "channel_add_conv_s.0", "channel_add_conv_t.3"):
            assert not torch.equal(first[prefix + layer + ".weight"], last[prefix + layer + ".weight"]), layer
