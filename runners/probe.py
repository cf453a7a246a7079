"""A short measured probe of a run's training step, for ``kdbench plan --estimate`` when no complete
run under the results root gives its seconds per iteration.

The run's models are built as training builds them (random weights: nothing is downloaded, and the
step costs the same), wrapped as training wraps them (``DistillModel`` with its terms and adapters
for a distilled run; the teacher or the student alone otherwise), and trained for a few steps on a
random batch of the run's batch size and input size: forward, backward and an SGD step. The data
pipeline is left out (it overlaps the step when ``num_workers`` > 0). The median of the timed steps,
after one warm-up step, is the estimate.
"""

from __future__ import annotations

import statistics
import time
import warnings

from kdbench.estimate import Speed
from kdbench.spec import RunSpec

STEPS = 3   # timed steps, after one warm-up


def probe(run: RunSpec, threads: int, gpus: int, steps: int = STEPS) -> Speed:
    """The seconds per training iteration of ``run``, measured here (on CUDA when there is a GPU and
    the run may use it, else on ``threads`` CPU threads)."""
    import torch

    device = "cuda" if torch.cuda.is_available() and run.device != "cpu" and gpus > 0 else "cpu"
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model, inputs, samples = _model_and_batch(run, device, gpus)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
        seconds = []
        for _ in range(steps + 1):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            losses = model(inputs, samples, mode="loss")
            sum(v.sum() if torch.is_tensor(v) else sum(x.sum() for x in v)
                for k, v in losses.items() if "loss" in k).backward()
            optimizer.step()
            if device == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return Speed(statistics.median(seconds[1:]), device, f"probe here ({device}, {steps} steps)")


def _model_and_batch(run: RunSpec, device: str, gpus: int):
    """The model a run trains, on ``device``, and a random batch of its size (on a GPU, one GPU's
    share of the batch: the run splits it over its GPUs)."""

    from runners.build import build_model, load_config
    from runners.distill import DistillModel
    from runners.model_facts import input_size

    size = input_size(run)
    batch = -(-run.schedule.batch_size // max(1, gpus)) if device == "cuda" else run.schedule.batch_size
    models = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for role, spec in (("student", run.student), ("teacher", run.teacher)):
            if spec is not None and (role == "student" or run.distill or run.role == "teacher"):
                overrides = {**({"model.data_preprocessor.size": list(size)} if run.task == "seg" else {}),
                             **spec.overrides}
                models[role] = build_model(load_config(spec.config, overrides, f"{role}.config"), run.task,
                                           init=False).to(device)
    trained = models["teacher" if run.role == "teacher" else "student"]
    inputs, samples = _batch(run.task, trained, batch, size, device)
    if run.role == "teacher" or not run.distill:
        return trained.train(), inputs, samples
    model = DistillModel(models["student"], models["teacher"], run.distill, lambda: (inputs[:1], samples[:1]))
    return model.to(device).train(), inputs, samples


def _batch(task: str, model, batch: int, size: tuple[int, int], device: str):
    """Random images and labels: a segmentation map per image, or two boxes per image."""
    import torch

    generator = torch.Generator().manual_seed(0)
    h, w = size
    inputs = torch.randn(batch, 3, h, w, generator=generator).to(device)
    samples = []
    for _ in range(batch):
        meta = {"img_shape": (h, w), "ori_shape": (h, w), "pad_shape": (h, w), "batch_input_shape": (h, w),
                "scale_factor": (1.0, 1.0)}
        if task == "seg":
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample

            sample = SegDataSample()
            classes = model.decode_head.num_classes
            sample.gt_sem_seg = PixelData(data=torch.randint(0, classes, (1, h, w), generator=generator))
        else:
            from mmdet.structures import DetDataSample
            from mmengine.structures import InstanceData

            sample = DetDataSample()
            corner = torch.rand(2, 2, generator=generator) * torch.tensor([w / 2, h / 2])
            boxes = torch.cat([corner, corner + torch.tensor([w / 4, h / 4])], dim=1)
            sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.zeros(2, dtype=torch.long))
        sample.set_metainfo(meta)
        samples.append(sample.to(device))
    return inputs, samples
