"""``kdbench import mmrazor``: an MMRazor 1.x distillation config as a kdbench run (or study).

MMRazor no longer imports on current torch, but its configs are plain mmengine configs: they are
read here with mmengine's ``Config`` alone (which executes the config's Python). What maps, and how:

- ``SingleTeacherDistill`` or ``FpnTeacherDistill`` (teacher ``forward: neck``: its backbone and
  neck only) with a ``ConfigurableDistiller``: the student and the teacher as
  runners.mmrazor_models names them (mmdet 2.x names mapped, bare checkpoint names resolved, the
  teacher gate from the model zoo), ``teacher_norm_eval`` (default True) teacher mode ``bn_eval``
  (MMRazor keeps the teacher in train mode but its norm layers).
- Each ``distill_losses`` entry becomes one term (runners.mmrazor_terms and
  runners.mmrazor_losses: the loss as a kdbench method, recorders as locations, connectors as
  adapters or as the loss's own parameters).
- The schedule (optimizer, gradient clipping, lr schedule, warm-up, iterations, evaluation
  interval, crop, batch size) comes from the config with its ``_base_`` files. Epochs become
  iterations at the dataset's training-set size; the batch is global: GPUs x images per GPU.
  Checkpoints are kept every ``CHECKPOINT_EVERY`` iterations, whatever the config's interval, so a
  preempted run loses little.

Anything without a kdbench counterpart is a UserError naming the key and what exists (exit 2).
"""

from __future__ import annotations

import ast
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kdbench.errors import UserError

DISTILLERS = ("SingleTeacherDistill", "FpnTeacherDistill")
DATASETS = {  # mmengine dataset type -> (kdbench dataset, training images: epochs -> iterations)
    "CityscapesDataset": ("cityscapes", 2975),
    "CocoDataset": ("coco", 118287),
}
DEFAULT_GPUS = 8  # OpenMMLab's default when a config's name does not say (mmdet's 1x: 8 GPUs x 2)
CHECKPOINT_EVERY = 2000  # iterations between checkpoints of an imported run (the presets' interval)
WARMUP_START = 0.001  # kdbench's linear warm-up starts at lr x this (mmdet's and mmseg's LinearLR start_factor)


# -- reading the config ---------------------------------------------------------------------------
def _base_paths(path: Path, workdir: Path, where: str) -> list[str] | None:
    """The ``_base_`` of a config file, each entry an absolute path (``mmseg::`` and ``mmdet::``
    names resolved to the installed package's files: mmengine's own lookup needs pkg_resources)."""
    from runners.config_files import resolve_config

    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_" for t in node.targets):
            value = ast.literal_eval(node.value)
            names = [value] if isinstance(value, str) else list(value)
            return [str(resolve_config(n, f"{where}: _base_")) if "::" in n
                    else str(_localised(path.parent / n, workdir, where)) for n in names]
    return None


def _localised(path: Path, workdir: Path, where: str) -> Path:
    """``path`` copied into ``workdir`` with its ``_base_`` entries (and theirs) made absolute."""
    if not path.is_file():
        raise UserError(f"{where}: _base_ file {path} does not exist")
    text = path.read_text()
    bases = _base_paths(path, workdir, where)
    if bases is not None:
        tree = ast.parse(text)
        node = next(n for n in tree.body if isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "_base_" for t in n.targets))
        lines = text.splitlines(keepends=True)
        head = "".join(lines[:node.lineno - 1])
        tail = "".join(lines[node.end_lineno:])
        text = f"{head}_base_ = {bases!r}\n{tail}"
    target = workdir / f"{len(list(workdir.iterdir()))}_{path.name}"
    target.write_text(text)
    return target


def read_config(path: str | Path):
    """The MMRazor config, ``_base_`` files merged, read without importing MMRazor."""
    from mmengine.config import Config

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such config file")
    try:
        with tempfile.TemporaryDirectory() as workdir:
            return Config.fromfile(str(_localised(path, Path(workdir), str(path))))
    except UserError:
        raise
    except Exception as error:  # mmengine raises FileNotFoundError, SyntaxError, KeyError, ...
        raise UserError(f"{path}: cannot read the config: {str(error).splitlines()[0]}") from None



# -- the schedule --------------------------------------------------------------------------------
def _gpus(path: Path, given: int | None) -> int:
    """GPUs of the recipe: given, else from an OpenMMLab name (``4xb2``), else the default."""
    if given is not None:
        return given
    match = re.search(r"(\d+)xb(\d+)", path.name)
    return int(match.group(1)) if match else DEFAULT_GPUS


def _schedulers(cfg, iterations: int, per_epoch: int, source: str) -> dict:
    items = cfg.get("param_scheduler") or []
    items = [items] if isinstance(items, dict) else list(items)
    out = {"lr_schedule": "constant", "warmup_iters": 0}

    def at(value, by_epoch):
        return value * per_epoch if by_epoch else value

    for index, item in enumerate(items):
        where, kind, by_epoch = f"{source}: param_scheduler[{index}]", item["type"], item.get("by_epoch", True)
        if kind == "LinearLR" and item.get("begin", 0) == 0 and item.get("start_factor", 1 / 3) == WARMUP_START:
            out["warmup_iters"] = at(item["end"], by_epoch)
        elif kind == "PolyLR" and item.get("power", 1.0) == 0.9:
            out.update(lr_schedule="poly", min_lr=item.get("eta_min", 0))
        elif kind == "MultiStepLR" and item.get("gamma", 0.1) == 0.1:
            milestones = [at(m, by_epoch) for m in item["milestones"]]
            if milestones != [iterations * 2 // 3, iterations * 11 // 12] and not (
                    by_epoch and item["milestones"] == [8, 11] and iterations == 12 * per_epoch):
                raise UserError(f"{where}: milestones {item['milestones']}: kdbench's step schedule "
                                "decays x0.1 at 2/3 and 11/12 of training")
            out["lr_schedule"] = "step"
        else:
            raise UserError(f"{where}: {kind} {dict(item)} has no kdbench counterpart (LinearLR warm-up from "
                            f"begin 0 with start_factor {WARMUP_START}, PolyLR power 0.9, MultiStepLR gamma 0.1 at "
                            "2/3 and 11/12)")
    return out


def _crop(cfg) -> list[int] | None:
    for step in cfg.get("train_pipeline", []):
        if step.get("type") == "RandomCrop":
            return list(step["crop_size"])
    return None


def _optimizer(cfg, source: str, notes: list[str]) -> dict:
    """The optimizer, its settings and gradient clipping, from ``optim_wrapper``."""
    wrapper = cfg.optim_wrapper
    where = f"{source}: optim_wrapper"
    unknown = sorted(set(wrapper) - {"type", "optimizer", "clip_grad"})
    if wrapper.get("type", "OptimWrapper") != "OptimWrapper" or unknown:
        what = f"type {wrapper['type']!r}" if wrapper.get("type", "OptimWrapper") != "OptimWrapper" else \
            ", ".join(unknown)
        raise UserError(f"{where}: {what} has no kdbench counterpart (kdbench's optimizer wrapper: OptimWrapper "
                        "with optimizer and clip_grad)")
    optimizer = wrapper.optimizer
    if optimizer["type"] not in ("SGD", "AdamW"):
        raise UserError(f"{where}.optimizer.type {optimizer['type']!r}: kdbench has SGD, AdamW")
    out = {"optimizer": optimizer["type"].lower(), "lr": optimizer["lr"],
           "weight_decay": optimizer.get("weight_decay", 0)}
    if optimizer["type"] == "SGD":
        out["momentum"] = optimizer.get("momentum", 0)
    clip = wrapper.get("clip_grad")
    if clip:
        if clip.get("norm_type", 2) != 2 or set(clip) - {"max_norm", "norm_type"}:
            raise UserError(f"{where}.clip_grad {dict(clip)}: kdbench clips the L2 norm (norm_type 2) to max_norm")
        out["grad_clip"] = clip["max_norm"]
    if cfg.get("optimizer_config"):
        notes.append(f"{source}: optimizer_config {dict(cfg.optimizer_config)} is an mmcv 1.x key that mmengine "
                     "ignores: MMRazor 1.x trains this config without it, and so does the import")
    return out


def _schedule(cfg, path: Path, gpus: int | None, source: str, notes: list[str]) -> tuple[dict, dict]:
    """(schedule, dataset) of the run, from the config and its ``_base_`` files."""
    loader = cfg.train_dataloader
    kind = loader.dataset.get("type")
    if kind not in DATASETS:
        raise UserError(f"{source}: train_dataloader.dataset.type {kind!r}: kdbench's datasets come from "
                        f"{', '.join(DATASETS)}")
    dataset, images = DATASETS[kind]
    batch = _gpus(path, gpus) * loader.batch_size
    per_epoch = math.ceil(images / batch)
    loop = cfg.train_cfg
    epochs = loop.get("type") == "EpochBasedTrainLoop" or "max_epochs" in loop
    iterations = loop["max_epochs"] * per_epoch if epochs else loop["max_iters"]
    val = loop.get("val_interval", 1 if epochs else iterations) * (per_epoch if epochs else 1)
    schedule = {"iterations": iterations, "batch_size": batch, **_optimizer(cfg, source, notes)}
    schedule.update(_schedulers(cfg, iterations, per_epoch, source))
    crop = _crop(cfg)
    if crop:
        schedule["crop"] = crop
    schedule.update(val_interval=min(val, iterations), checkpoint_interval=min(CHECKPOINT_EVERY, iterations),
                    num_workers=loader.get("num_workers", 0))
    return schedule, {"name": dataset, "root": cfg.get("data_root", loader.dataset.get("data_root")),
                      "pipeline": "default"}  # mmseg's and mmdet's training augmentation, as the configs have


# -- the run -------------------------------------------------------------------------------------
@dataclass
class Imported:
    """What an MMRazor config became: the run, the notes the user should read (what the import
    changed or could not keep), and facts a study records (the recipe's GPUs, images per GPU)."""

    run: dict
    notes: list[str]
    gpus: int
    images_per_gpu: int


def convert_with_notes(path: str | Path, gpus: int | None = None) -> Imported:
    """The kdbench run an MMRazor distillation config describes, with the import's notes."""
    from runners.mmrazor_models import student_config, teacher_checkpoint, teacher_config, teacher_expect
    from runners.mmrazor_terms import terms

    path = Path(path)
    source = str(path)
    cfg = read_config(path)
    model = cfg.get("model", {})
    if model.get("type") not in DISTILLERS:
        raise UserError(f"{source}: model.type {model.get('type')!r}: kdbench imports {', '.join(DISTILLERS)}")
    notes: list[str] = []
    student, parts = student_config(model, path, source, notes)
    teacher_name = teacher_config(model, source, notes)
    task = "seg" if student.startswith("mmseg::") else "det"
    distill = terms(model.get("distiller", {}), source)
    schedule, dataset = _schedule(cfg, path, gpus, source, notes)
    checkpoint = teacher_checkpoint(model.get("teacher_ckpt"), teacher_name, source, notes)
    teacher = {"config": teacher_name, "checkpoint": checkpoint}
    if model.get("teacher_norm_eval", True):
        teacher["mode"] = "bn_eval"
    if model["type"] == "FpnTeacherDistill":  # the teacher runs its backbone and neck only
        teacher["forward"] = "neck"
    expect = teacher_expect(checkpoint, teacher_name)
    if expect is not None:
        teacher["expect"] = expect
    run = {"task": task, "name": path.stem, "teacher": teacher,
           "student": {"config": student, **({"init_from_teacher": parts} if parts else {})},
           "distill": distill, "dataset": dataset, "schedule": schedule, "seed": 0}
    return Imported(run, notes, _gpus(path, gpus), cfg.train_dataloader.batch_size)


def convert(path: str | Path, gpus: int | None = None) -> dict:
    """The kdbench run dict an MMRazor distillation config describes."""
    return convert_with_notes(path, gpus).run
