"""Models from mmseg/mmdet config files, with overrides and checkpoints.

A config is named as ``mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py`` (a config
packaged with mmsegmentation or mmdet), ``tiny_seg_student`` (one of kdbench's configs under
``runners/configs/``), or a path to a ``.py`` config file.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from mmengine.config import Config

from kdbench.errors import UserError
from runners.config_files import resolve_config

SCOPES = {"seg": "mmseg", "det": "mmdet"}
_SCOPE_NAMES = itertools.count()


def register_scope(task: str) -> str:
    """Register mmseg's or mmdet's modules and make that package the default scope."""
    from mmengine.registry import DefaultScope

    scope = SCOPES[task]
    if scope == "mmseg":
        from mmseg.utils import register_all_modules
    else:
        from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    if DefaultScope.get_current_instance() is None or DefaultScope.get_current_instance().scope_name != scope:
        # A new name each time: mmengine makes only a newly created instance the current one (a name
        # it has seen gives back that old instance and leaves the scope as it was).
        DefaultScope.get_instance(f"kdbench-{scope}-{next(_SCOPE_NAMES)}", scope_name=scope)
    return scope


def load_config(name: str, overrides: dict | None = None, where: str = "config") -> Config:
    """Read a model config by package-qualified name, kdbench name or path; apply overrides
    (a dict of dotted keys, e.g. ``{"model.decode_head.num_classes": 19}``)."""
    path = resolve_config(name, where)
    try:
        cfg = Config.fromfile(str(path))
    except UserError:
        raise
    except Exception as error:  # mmengine raises FileNotFoundError, SyntaxError, ...
        raise UserError(f"{where}: cannot read config {name!r}: {str(error).splitlines()[0]}") from None
    if overrides:
        cfg.merge_from_dict(overrides)
    if "model" not in cfg:
        raise UserError(f"{where}: config {name!r} defines no 'model'")
    return cfg


def cpu_safe(model_cfg: dict) -> dict:
    """SyncBN -> BN (SyncBN needs a process group; on one device BN is the same thing)."""
    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "SyncBN":
                node["type"] = "BN"
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(model_cfg)
    return model_cfg


def build_model(cfg: Config, task: str, distributed: bool = False, init: bool = True) -> torch.nn.Module:
    """Build the config's model; ``init=False`` skips weight initialisation (and so any
    pretrained download its init_cfg names): enough to list its modules."""
    register_scope(task)
    from mmengine.registry import MODELS as ROOT_MODELS  # noqa: F401  (scopes resolve through it)

    if task == "seg":
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    from mmengine.config import ConfigDict

    model_cfg = cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model)
    if not distributed:
        model_cfg = cpu_safe(model_cfg)
    model = MODELS.build(ConfigDict(model_cfg))  # mmseg reads test_cfg.mode as an attribute
    if not init:
        return model
    model.init_weights()
    if cfg.get("kdbench_pretrained"):
        from runners.pretrained import apply

        apply(model, dict(cfg.kdbench_pretrained))
    return model


def load_weights(model: torch.nn.Module, checkpoint: str, trusted: bool, where: str) -> None:
    """Load a teacher checkpoint file (a URL's is fetched into the weights cache first:
    runners.weights) into ``model``, strictly.

    Files are read with ``weights_only=True`` (no code runs while unpickling) unless the spec
    marks them as trusted.
    """
    try:
        if not Path(checkpoint).is_file():
            raise UserError(f"{where}: checkpoint {checkpoint!r} does not exist")
        state = torch.load(checkpoint, map_location="cpu", weights_only=not trusted)
    except UserError:
        raise
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        hint = " (if you trust this file, set trusted: true)" if "weights_only" in str(error) else ""
        raise UserError(f"{where}: cannot load checkpoint {checkpoint!r}: {first}{hint}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{where}: checkpoint {checkpoint!r} holds no state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(
            f"{where}: checkpoint {checkpoint!r} does not fit the model: "
            f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:2]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:2]})"
        )
    if hasattr(model, "is_init"):
        # Its weights are the checkpoint's: mmengine's Runner, which calls init_weights on the
        # whole model before training, must not initialise them again.
        model.is_init = True


def copy_parts(student: torch.nn.Module, teacher: torch.nn.Module, parts: tuple[str, ...], where: str) -> None:
    """Start the student's top-level ``parts`` (``neck``, ``bbox_head``) from the loaded teacher's
    parts of the same name, strictly: what MMRazor's MGD config does with ``init_cfg = Pretrained``
    (prefix ``neck.``) on the teacher's checkpoint. The Runner's later init leaves them as they are."""
    for part in parts:
        mine, theirs = getattr(student, part, None), getattr(teacher, part, None)
        if not isinstance(mine, torch.nn.Module) or not isinstance(theirs, torch.nn.Module):
            has = ", ".join(name for name, _ in student.named_children())
            raise UserError(f"{where}: {part!r} is not a part of both the student and the teacher (the student's "
                            f"parts: {has})")
        try:
            mine.load_state_dict(theirs.state_dict(), strict=True)
        except RuntimeError as error:
            raise UserError(f"{where}: the teacher's {part} does not fit the student's: "
                            f"{str(error).strip().splitlines()[0]}") from None
