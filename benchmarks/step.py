"""The step suite: what distillation adds to a training step.

For one batch, four things are timed side by side in one process, interleaved, medians of the
repeats (the first round warms up and is dropped):

- ``student``: a student-only training step (loss forward, backward, SGD step);
- ``teacher``: a no-grad teacher forward in tensor mode over the whole network, on the same batch;
- ``kd``: kdbench's distillation step (``runners.distill.DistillModel``: the student's task losses
  plus the KD terms, the teacher frozen, in tensor mode and stopped at its tapped modules);
- ``reference``: the pipeline MMRazor 1.x runs: the teacher in *loss* mode (its task losses
  computed, then thrown away) under no_grad, outputs tapped by plain forward hooks, the KD term
  in MMRazor's formulation (``benchmarks.references.reference_cwd``), backward, SGD step.

Reported: ``overhead = kd / (student + teacher)`` (target <= 1.05: distilling costs no more than
running both models) and ``kd / reference``. The cases come from shipped studies, so the bench
measures what a study would run: CWD on the logits and on the feature map with its adapter, for
the tiny CPU models of ``studies/smoke.yaml`` and the paper's PSPNet R101 -> R18 of
``studies/paper_table2_cityscapes.yaml`` at a reduced crop. Weights are randomly initialised
(timing does not depend on them; nothing is downloaded); the batch is generated.

Each case runs at each precision (``schedule.precision``, runners/precision.py): fp32 on a CPU;
fp32, bf16 and fp16 on a GPU. A precision other than fp32 runs all four steps under autocast, the
KD terms in fp32 as in a run; the timing leaves out the loss scale (one multiply and an inf check).
"""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path

from benchmarks.timing import interleaved_medians, synchronize

ROOT = Path(__file__).resolve().parents[1]
OVERHEAD_TARGET = 1.05

# (case name, study file, run name, crop or None for the study's own, batch size)
CASES = [
    ("tiny_cwd_logits", "studies/smoke.yaml", "cwd_logits_s0"),
    ("tiny_cwd_feature", "studies/smoke.yaml", "cwd_feature_s0"),
    ("pspnet_r101_r18_cwd_logits", "studies/paper_table2_cityscapes.yaml", "cwd_logits_s0"),
    ("pspnet_r101_r18_cwd_feature", "studies/paper_table2_cityscapes.yaml", "cwd_feature_s0"),
]
# The paper's crop (512x512, batch 8) on 2 CPU cores would take minutes per step: reduced here.
PAPER_CPU_CROP, PAPER_CPU_BATCH = (128, 128), 2


def run_of(study_file: str, run_name: str):
    """The resolved run named ``run_name`` of a shipped study (what a launch would train)."""
    from kdbench.stages import load_study

    study = load_study(ROOT / study_file, "results")
    return next(r.run for r in study.runs if r.name == run_name)


def _models(run, crop: tuple[int, int]):
    import warnings

    from runners.build import build_model, load_config

    models = {}
    for role, spec in (("teacher", run.teacher), ("student", run.student)):
        overrides = {"model.data_preprocessor.size": list(crop), **spec.overrides}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = load_config(spec.config, overrides, f"{role}.config")
            # Random weights: no pretrained backbone is fetched, the timing is the same.
            models[role] = build_model(cfg, run.task, init=False)
    return models["teacher"], models["student"]


def _batch(batch: int, crop: tuple[int, int], num_classes: int, seed: int = 0):
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    generator = torch.Generator().manual_seed(seed)
    h, w = crop
    inputs = torch.randn(batch, 3, h, w, generator=generator)
    samples = []
    for _ in range(batch):
        sample = SegDataSample()
        labels = torch.randint(0, num_classes, (1, h, w), generator=generator)
        sample.gt_sem_seg = PixelData(data=labels)
        sample.set_metainfo({"img_shape": (h, w), "ori_shape": (h, w), "pad_shape": (h, w)})
        samples.append(sample)
    return inputs, samples


def total_loss(loss_dict: dict):
    """The sum of a loss dict's ``loss*`` entries (per-level lists included), as mmengine sums them."""
    return sum(v.sum() if not isinstance(v, (list, tuple)) else sum(x.sum() for x in v)
               for k, v in loss_dict.items() if "loss" in k)


def _reference_step(student, teacher, term, adapter, optimizer, inputs, samples):
    """MMRazor 1.x's way: teacher in loss mode under no_grad, plain hooks, MMRazor's CWD."""
    import torch

    from benchmarks.references import reference_cwd

    s_path, t_path = term.student_location[0], term.teacher_location[0]
    recorded: dict[str, torch.Tensor] = {}
    hooks = [
        student.get_submodule(s_path).register_forward_hook(lambda m, i, o: recorded.__setitem__("s", o)),
        teacher.get_submodule(t_path).register_forward_hook(lambda m, i, o: recorded.__setitem__("t", o)),
    ]
    try:
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            teacher(inputs, samples, mode="loss")
        losses = student(inputs, samples, mode="loss")
        s = adapter(recorded["s"]) if adapter is not None else recorded["s"]
        kd = reference_cwd(s, recorded["t"], term.params["tau"], term.weight)
        (total_loss(losses) + kd).backward()
        optimizer.step()
    finally:
        for hook in hooks:
            hook.remove()


def default_precisions() -> tuple[str, ...]:
    """fp32 on a CPU (its bf16 autocast is not a speed-up there); every precision on a GPU."""
    import torch

    return ("fp32", "bf16", "fp16") if torch.cuda.is_available() else ("fp32",)


def _autocast(precision: str, device: str):
    import torch

    from runners.precision import AUTOCAST_DTYPES

    if precision == "fp32":
        return contextlib.nullcontext
    return partial(torch.autocast, device_type=device, dtype=getattr(torch, AUTOCAST_DTYPES[precision]))


def measure(case: str, study_file: str, run_name: str, repeats: int, crop=None, batch=None,
            precision: str = "fp32") -> dict:
    import torch

    from runners.distill import DistillModel

    run = run_of(study_file, run_name)
    paper = run.dataset.name != "fashion_scenes"
    if crop is None:
        crop = PAPER_CPU_CROP if paper and not torch.cuda.is_available() else tuple(
            run.schedule.crop or (run.dataset.params["size"],) * 2)
    batch = batch or (PAPER_CPU_BATCH if paper and not torch.cuda.is_available() else run.schedule.batch_size)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    teacher, student = _models(run, tuple(crop))
    num_classes = student.decode_head.num_classes
    inputs, samples = _batch(batch, tuple(crop), num_classes)
    teacher.to(device).eval().requires_grad_(False)
    student.to(device).train()
    inputs = inputs.to(device)
    samples = [s.to(device) for s in samples]
    terms = run.distill
    model = DistillModel(student, teacher, terms, lambda: (inputs[:1], samples[:1])).to(device)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    adapter = next(iter(model.adapters.values()), None)

    cast = _autocast(precision, device)  # around the forward passes, as mmengine's optimizer wrapper does

    def student_step():
        optimizer.zero_grad(set_to_none=True)
        with cast():
            loss = total_loss(student(inputs, samples, mode="loss"))
        loss.backward()
        optimizer.step()

    def teacher_forward():
        with torch.no_grad(), cast():
            teacher(inputs, samples, mode="tensor")

    kd_keys: list[str] = []

    def kd_step():
        optimizer.zero_grad(set_to_none=True)
        with cast():
            loss_dict = model(inputs, samples, mode="loss")
        kd_keys[:] = sorted(k for k in loss_dict if k.startswith("loss_kd_"))
        total_loss(loss_dict).backward()
        optimizer.step()

    def reference_step():
        with cast():
            _reference_step(student, teacher, terms[0], adapter, optimizer, inputs, samples)

    steps = {"student": student_step, "teacher": teacher_forward, "kd": kd_step, "reference": reference_step}
    # Rotated: no step always runs right after another one (cache, turbo).
    median = interleaved_medians(steps, repeats, partial(synchronize, device), rotate=True)
    overhead = median["kd"] / (median["student"] + median["teacher"])
    return {
        "suite": "step", "case": case, "study": study_file, "run": run_name,
        "teacher": run.teacher.config, "student": run.student.config,
        "locations": [t.student_location[0] for t in terms], "adapter": adapter is not None,
        "kd_losses": kd_keys,
        "crop": list(crop), "batch": batch, "device": device, "precision": precision, "repeats": repeats,
        "reduced": paper and device == "cpu",
        **{f"{name}_s": value for name, value in median.items()},
        "overhead": overhead, "kd_vs_reference": median["kd"] / median["reference"],
        "targets": {f"overhead<={OVERHEAD_TARGET}": overhead <= OVERHEAD_TARGET,
                    "kd<reference": median["kd"] < median["reference"]},
    }


def run(repeats: int = 5, cases: list[str] | None = None, crop=None, batch=None,
        precisions: tuple[str, ...] | None = None) -> list[dict]:
    """Every case (or those named) at every precision (default: ``default_precisions()``), each
    row as ``measure`` returns it."""
    import warnings

    known = [c[0] for c in CASES]
    for name in cases or []:
        if name not in known:
            from kdbench.errors import UserError

            raise UserError(f"--cases: unknown step case {name!r}; valid: {', '.join(known)}")
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mmseg's deprecation notices
        for case, study_file, run_name in CASES:
            if cases and case not in cases:
                continue
            for precision in precisions or default_precisions():
                rows.append(measure(case, study_file, run_name, repeats, crop=crop, batch=batch,
                                    precision=precision))
    return rows


def format_rows(rows: list[dict]) -> str:
    from kdbench.table import text_table

    header = ("case", "precision", "crop", "N", "student s", "teacher s", "kd s", "ref s", "kd/(S+T)", "kd/ref")
    lines = text_table(header, [
        (r["case"], r.get("precision", "fp32"), "x".join(map(str, r["crop"])) + ("*" if r["reduced"] else ""),
         r["batch"],
         f"{r['student_s']:.4f}", f"{r['teacher_s']:.4f}", f"{r['kd_s']:.4f}", f"{r['reference_s']:.4f}",
         f"{r['overhead']:.3f}", f"{r['kd_vs_reference']:.3f}") for r in rows], right=range(2, len(header)))
    lines.append(f"kd/(S+T): the KD step over a student step plus a no-grad teacher forward (target <= "
                 f"{OVERHEAD_TARGET}); kd/ref: over MMRazor 1.x's pipeline (teacher in loss mode). "
                 f"* crop reduced from the paper's on CPU")
    return "\n".join(lines)
