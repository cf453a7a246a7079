"""``kdbench import mmrazor``: an MMRazor 1.x distillation config as a kdbench run (or study).

MMRazor no longer imports on current torch, but its configs are plain mmengine configs: they are
read here with mmengine's ``Config`` alone. What maps, and how:

- ``SingleTeacherDistill`` (or ``FpnTeacherDistill``) with a ``ConfigurableDistiller``: the
  ``architecture`` and ``teacher`` ``cfg_path`` become the student and teacher configs,
  ``teacher_ckpt`` the teacher's checkpoint, ``teacher_norm_eval`` (default True) teacher mode
  ``bn_eval`` (MMRazor keeps the teacher in train mode but its norm layers).
- Each ``distill_losses`` entry becomes one term: its type a kdbench method (``LOSSES``), its
  ``loss_weight`` the weight, its other arguments the method's parameters. Its
  ``loss_forward_mappings`` name the student and teacher recorders; a ``ModuleOutputs``
  recorder's ``source`` is the location, and ``data_idx`` picks one element of what a module
  returns (``neck[2]``: FPN level 2, as kdbench.locations reads it).
- A student ``ConvModuleConnector`` becomes an adapter (a 1x1 conv, with norm and act as it has).
- The schedule (optimizer, lr schedule, warm-up, iterations, evaluation and checkpoint intervals,
  crop, batch size) comes from the config with its ``_base_`` files. Epochs become iterations at
  the dataset's training-set size; the batch is global: GPUs x images per GPU.

Anything without a kdbench counterpart is a UserError naming the key and what exists (exit 2).
"""

from __future__ import annotations

import ast
import math
import re
import tempfile
from pathlib import Path

from kdbench import losses
from kdbench.errors import UserError

# MMRazor loss type -> (kdbench method, {MMRazor argument: kdbench parameter}).
LOSSES = {
    "ChannelWiseDivergence": ("cwd", {"tau": "tau"}),
    "ATLoss": ("at", {}),
}
DISTILLERS = ("SingleTeacherDistill", "FpnTeacherDistill")
DATASETS = {  # mmengine dataset type -> (kdbench dataset, training images: epochs -> iterations)
    "CityscapesDataset": ("cityscapes", 2975),
    "CocoDataset": ("coco", 118287),
}
DEFAULT_GPUS = 8  # OpenMMLab's default when a config's name does not say (mmdet's 1x: 8 GPUs x 2)


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


# -- the distiller -------------------------------------------------------------------------------
def _location(recorder: dict, data_idx, where: str) -> str:
    """The location a recorder's output comes from: ``source``, or ``source[data_idx]`` for one
    element of a module that returns several (kdbench.locations; an FPN neck's levels)."""
    kind = recorder.get("type")
    if kind != "ModuleOutputs":
        raise UserError(f"{where}: recorder type {kind!r} has no kdbench counterpart "
                        "(kdbench distils module outputs: ModuleOutputs)")
    source = recorder["source"]
    if data_idx is None:
        return source
    if not isinstance(data_idx, int) or isinstance(data_idx, bool) or data_idx < 0:
        raise UserError(f"{where}: data_idx must be an integer >= 0, got {data_idx!r}")
    return f"{source}[{data_idx}]"


def _adapter(connectors: dict, name: str | None, where: str):
    """A student connector as a kdbench adapter: a 1x1 conv, with BN and ReLU as it has them."""
    if name is None:
        return None
    connector = connectors.get(name)
    if connector is None:
        raise UserError(f"{where}: connector {name!r} is not in distiller.student_connectors")
    if connector.get("type") != "ConvModuleConnector" or connector.get("kernel_size", 1) != 1:
        raise UserError(f"{where}: connector {connector.get('type')!r} has no kdbench counterpart "
                        "(kdbench's adapter is a 1x1 ConvModuleConnector, with or without norm and act)")
    act = connector.get("act_cfg", {"type": "ReLU"})
    return {"norm": connector.get("norm_cfg") is not None, "act": act is not None}


def _term(name: str, loss: dict, distiller: dict, source: str) -> dict:
    where = f"{source}: model.distiller.distill_losses.{name}"
    kind = loss.get("type")
    if kind not in LOSSES:
        raise UserError(f"{where}: MMRazor loss {kind!r} has no kdbench method (mapped: "
                        f"{', '.join(LOSSES)}; kdbench's methods: {', '.join(losses.available())})")
    method, renames = LOSSES[kind]
    unknown = sorted(set(loss) - {"type", "loss_weight", *renames})
    if unknown:
        raise UserError(f"{where}: {', '.join(unknown)}: no such parameter of kdbench's {method} "
                        f"(maps: loss_weight{''.join(', ' + k for k in renames)})")
    mapping = distiller.get("loss_forward_mappings", {}).get(name)
    if not mapping:
        raise UserError(f"{source}: model.distiller.loss_forward_mappings.{name}: missing")
    sides = {}
    for arg, spec in mapping.items():
        side = "student" if spec.get("from_student") else "teacher"
        here = f"{source}: model.distiller.loss_forward_mappings.{name}.{arg}"
        recorders = distiller.get(f"{side}_recorders", {})
        if spec.get("recorder") not in recorders:
            raise UserError(f"{here}: recorder {spec.get('recorder')!r} is not in distiller.{side}_recorders")
        if side in sides:
            raise UserError(f"{here}: a second {side} input; kdbench's terms take one of each")
        if side == "teacher" and spec.get("connector") is not None:
            raise UserError(f"{here}: teacher connectors have no kdbench counterpart (adapters are the student's)")
        sides[side] = (_location(recorders[spec["recorder"]], spec.get("data_idx"), here),
                       _adapter(distiller.get("student_connectors", {}), spec.get("connector"), here))
    if set(sides) != {"student", "teacher"}:
        raise UserError(f"{source}: model.distiller.loss_forward_mappings.{name}: needs a student and a "
                        "teacher input (from_student true and false)")
    term = {"name": name.removeprefix("loss_"), "method": method,
            "params": {renames[k]: loss[k] for k in renames if k in loss},
            "weight": loss.get("loss_weight", 1.0),
            "student_location": sides["student"][0], "teacher_location": sides["teacher"][0]}
    if sides["student"][1] is not None:
        term["adapter"] = sides["student"][1]
    return term


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
        if kind == "LinearLR" and item.get("begin", 0) == 0:
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
                            "0, PolyLR power 0.9, MultiStepLR gamma 0.1 at 2/3 and 11/12)")
    return out


def _crop(cfg) -> list[int] | None:
    for step in cfg.get("train_pipeline", []):
        if step.get("type") == "RandomCrop":
            return list(step["crop_size"])
    return None


def _schedule(cfg, path: Path, gpus: int | None, source: str) -> tuple[dict, dict]:
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
    checkpoint = cfg.get("default_hooks", {}).get("checkpoint", {})
    ckpt = checkpoint.get("interval", 1) * (per_epoch if checkpoint.get("by_epoch", True) else 1)
    optimizer = cfg.optim_wrapper.optimizer
    if optimizer["type"] not in ("SGD", "AdamW"):
        raise UserError(f"{source}: optim_wrapper.optimizer.type {optimizer['type']!r}: kdbench has SGD, AdamW")
    schedule = {"iterations": iterations, "batch_size": batch, "optimizer": optimizer["type"].lower(),
                "lr": optimizer["lr"], "weight_decay": optimizer.get("weight_decay", 0)}
    if optimizer["type"] == "SGD":
        schedule["momentum"] = optimizer.get("momentum", 0)
    schedule.update(_schedulers(cfg, iterations, per_epoch, source))
    crop = _crop(cfg)
    if crop:
        schedule["crop"] = crop
    schedule.update(val_interval=min(val, iterations), checkpoint_interval=min(ckpt, iterations),
                    num_workers=loader.get("num_workers", 0))
    return schedule, {"name": dataset, "root": cfg.get("data_root", loader.dataset.get("data_root"))}


# -- the run -------------------------------------------------------------------------------------
def convert(path: str | Path, gpus: int | None = None) -> dict:
    """The kdbench run dict an MMRazor distillation config describes."""
    path = Path(path)
    source = str(path)
    cfg = read_config(path)
    model = cfg.get("model", {})
    if model.get("type") not in DISTILLERS:
        raise UserError(f"{source}: model.type {model.get('type')!r}: kdbench imports {', '.join(DISTILLERS)}")
    distiller = model.get("distiller", {})
    if distiller.get("type") != "ConfigurableDistiller":
        raise UserError(f"{source}: model.distiller.type {distiller.get('type')!r}: kdbench imports "
                        "ConfigurableDistiller")
    task = "seg" if model.architecture.cfg_path.startswith("mmseg::") else "det"
    from runners.config_files import resolve_config

    for key in ("architecture", "teacher"):  # a config name mmseg/mmdet 3 no longer has is refused now
        resolve_config(model[key]["cfg_path"], f"{source}: model.{key}.cfg_path")
    terms = [_term(name, loss, distiller, source) for name, loss in distiller.distill_losses.items()]
    schedule, dataset = _schedule(cfg, path, gpus, source)
    teacher = {"config": model.teacher.cfg_path, "checkpoint": model.get("teacher_ckpt")}
    if model.get("teacher_norm_eval", True):
        teacher["mode"] = "bn_eval"
    return {"task": task, "name": path.stem, "teacher": teacher,
            "student": {"config": model.architecture.cfg_path}, "distill": terms,
            "dataset": dataset, "schedule": schedule, "seed": 0}


def as_study(run: dict) -> dict:
    """A one-cell study of the run: its base, the distill terms as one method, three seeds."""
    base = {k: v for k, v in run.items() if k not in ("name", "distill", "seed")}
    return {"name": re.sub(r"[^A-Za-z0-9_.-]", "_", run["name"]), "base": base,
            "methods": {"mmrazor": run["distill"]}, "seeds": [0, 1, 2]}
