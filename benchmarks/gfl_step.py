"""A GFL R101 -> R50 CWD step (studies/mmrazor_cwd_coco_gfl.yaml: CWD on the classification
branch, shared by the FPN levels) on a generated batch, beside a student step and a teacher forward:
part of the GPU acceptance check (benchmarks/gpu_check.py). Random weights, nothing downloaded."""

from __future__ import annotations

import math

from benchmarks.step import run_of

DET_STUDY, DET_RUN = "studies/mmrazor_cwd_coco_gfl.yaml", "cwd_cls_s0"


def _det_batch(batch: int, size: tuple[int, int], num_classes: int, seed: int = 0):
    """Normalised-looking images and a few boxes per image, as mmdet's data preprocessor gives them."""
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    generator = torch.Generator().manual_seed(seed)
    h, w = size
    samples = []
    for _ in range(batch):
        corners = torch.rand(4, 2, generator=generator) * torch.tensor([w, h]) * 0.5
        boxes = torch.cat([corners, corners + torch.tensor([w, h]) * 0.4], dim=1)
        sample = DetDataSample()
        sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.randint(0, num_classes, (4,),
                                                                                generator=generator))
        sample.set_metainfo({"img_shape": size, "ori_shape": size, "pad_shape": size,
                             "batch_input_shape": size, "scale_factor": (1.0, 1.0)})
        samples.append(sample)
    return torch.randn(batch, 3, h, w, generator=generator), samples


def _det_models(run):
    from runners.build import build_model, load_config

    return [build_model(load_config(model.config, dict(model.overrides), f"{role}.config"), "det", init=False)
            for role, model in (("teacher", run.teacher), ("student", run.student))]


def gfl_step_row(device: str, sizes: dict) -> dict:
    """One KD step of GFL R101 -> R50 with CWD on the classification branch, beside a student step
    and a teacher forward (medians of interleaved repeats), the KD share from the step clock."""
    from functools import partial

    import torch

    from benchmarks.step import total_loss
    from benchmarks.timing import interleaved_medians, synchronize
    from runners.distill import DistillModel

    run = run_of(DET_STUDY, DET_RUN)
    torch.manual_seed(0)
    teacher, student = _det_models(run)
    inputs, samples = _det_batch(sizes["gfl_batch"], sizes["gfl_input"], student.bbox_head.num_classes)
    inputs, samples = inputs.to(device), [s.to(device) for s in samples]
    teacher.to(device).eval().requires_grad_(False)
    model = DistillModel(student.to(device).train(), teacher, run.distill, lambda: (inputs[:1], samples[:1]))
    model.to(device).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    seen: dict = {}

    def kd_step():
        optimizer.zero_grad(set_to_none=True)
        model.clock.reset()
        loss_dict = model(inputs, samples, mode="loss")
        seen["losses"] = {k: float(total_loss({k: v}).detach()) for k, v in loss_dict.items() if "loss" in k}
        total_loss(loss_dict).backward()
        optimizer.step()
        synchronize(device)
        seen["parts"] = model.clock.parts()

    def student_step():
        optimizer.zero_grad(set_to_none=True)
        total_loss(student(inputs, samples, mode="loss")).backward()
        optimizer.step()

    def teacher_forward():
        with torch.no_grad():
            teacher(inputs, samples, mode="tensor")

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    median = interleaved_medians({"kd": kd_step, "student": student_step, "teacher": teacher_forward},
                                 sizes["gfl_repeats"], partial(synchronize, device))
    parts = seen["parts"]
    return {"part": "gfl_step", "device": device, "teacher": run.teacher.config, "student": run.student.config,
            "terms": [t.name for t in run.distill], "input": list(sizes["gfl_input"]), "batch": sizes["gfl_batch"],
            **{f"{name}_s": value for name, value in median.items()},
            "overhead": median["kd"] / (median["student"] + median["teacher"]),
            "kd_share": (parts["kd_forward"] + parts["kd_backward"]) / median["kd"],
            "peak_memory_mb": _peak_memory_mb(device), "losses": seen["losses"],
            "losses_finite": all(map(math.isfinite, seen["losses"].values()))}


def _peak_memory_mb(device: str) -> float:
    import resource

    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
