"""Tiny GFL detectors and one training batch for the head-loss tests (LD, CrossKD): a student and
a teacher built from the tiny configs (the student's head as wide as the teacher's where CrossKD
needs it, four stacked convs as GFL's COCO configs), and a batch of generated fashion scenes as
the trainer sees it (after the data preprocessor), with its boxes."""

from __future__ import annotations

import torch

from tests.run_fixtures import TINY_DATA

WIDE_HEAD = {"model.bbox_head.feat_channels": 64}  # the tiny teacher's head width
FOUR_CONVS = {"model.bbox_head.stacked_convs": 4}  # as GFL's COCO configs


def gfl(config: str, overrides: dict | None = None, seed: int = 0) -> torch.nn.Module:
    """A tiny GFL detector (weights from ``seed``)."""
    from runners.build import build_model, load_config

    torch.manual_seed(seed)
    return build_model(load_config(config, overrides), "det")


def det_batch(batch_size: int = 2) -> tuple[torch.Tensor, list]:
    """(inputs, data_samples) of the first training batch of the tiny detection dataset (unshuffled:
    the same images, flipped alike, each time)."""
    from mmengine.runner import Runner, set_random_seed

    from kdbench.spec import parse_run
    from runners.build import register_scope
    from runners.datasets import dataset_configs

    register_scope("det")
    set_random_seed(0)  # the pipeline's random flip
    run = parse_run({"task": "det", "student": {"config": "tiny_det_student"}, "dataset": TINY_DATA,
                     "schedule": {"iterations": 1, "batch_size": batch_size}, "seed": 0})
    loader = Runner.build_dataloader({**dataset_configs(run)["train_dataloader"], "batch_size": batch_size,
                                      "num_workers": 0, "sampler": {"type": "DefaultSampler", "shuffle": False}})
    batch = gfl("tiny_det_student").data_preprocessor(next(iter(loader)), training=True)
    return batch["inputs"], batch["data_samples"]


def head_inputs(student: torch.nn.Module, teacher: torch.nn.Module, inputs, data_samples):
    """The HeadInputs the trainer would give a head loss for this batch."""
    from kdbench.losses.head_inputs import HeadInputs

    student_feats = tuple(student.extract_feat(inputs))
    with torch.no_grad():
        teacher_feats = tuple(teacher.extract_feat(inputs))
    return HeadInputs(student_head=student.bbox_head, teacher_head=teacher.bbox_head, student_feats=student_feats,
                      teacher_feats=teacher_feats, student_outputs=tuple(student.bbox_head(student_feats)),
                      data_samples=list(data_samples))
