"""The fashion scenes' parameters: defaults, validation and their canonical form (what the
dataset's cache key and every run spec hold). runners.data.fashion_scenes re-exports them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kdbench.errors import UserError
from runners.data.scene_render import MASK_THRESHOLD, MIN_VISIBLE_AREA

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "num_train": 512,
    "num_val": 128,
    "size": (64, 64),
    "objects_per_image": (1, 4),
    "object_scale": (0.8, 2.0),
    "min_visible_area": MIN_VISIBLE_AREA,
    "mask_threshold": MASK_THRESHOLD,
    "classes": list(range(10)),  # the Fashion-MNIST classes (0..9) whose objects the scenes show
}

_MAX_IMAGES = 200_000


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise UserError(f"fashion_scenes: {name} must be an integer in {lo}..{hi}, got {value!r}")
    return int(value)


def _pair(name: str, value: Any, kind: str) -> tuple:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return tuple(value)
    if kind == "int" and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (value, value)
    raise UserError(f"fashion_scenes: {name} must be a pair (lo, hi), got {value!r}")


def _classes(value: Any) -> list[int]:
    """Distinct Fashion-MNIST classes (0..9), at least one, sorted."""
    if not isinstance(value, (list, tuple)) or not value:
        raise UserError(f"fashion_scenes: classes must be a non-empty list of classes 0..9, got {value!r}")
    found = sorted({_int("classes", v, 0, 9) for v in value})
    if len(found) != len(value):
        raise UserError(f"fashion_scenes: classes must not repeat a class, got {value!r}")
    return found


def normalize_params(params: Mapping[str, Any] | None = None, /, **kwargs: Any) -> dict[str, Any]:
    """Validate parameters and return them complete, in canonical form (tuples -> lists)."""
    given = {**(params or {}), **kwargs}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise UserError(
            f"fashion_scenes: unknown parameter {unknown[0]!r}; valid: {', '.join(DEFAULTS)}"
        )
    p = {**DEFAULTS, **given}
    out: dict[str, Any] = {}
    out["seed"] = _int("seed", p["seed"], 0, 2**63 - 1)
    out["num_train"] = _int("num_train", p["num_train"], 1, _MAX_IMAGES)
    out["num_val"] = _int("num_val", p["num_val"], 1, _MAX_IMAGES)

    size = p["size"]
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise UserError(f"fashion_scenes: size must be an int or (height, width), got {size!r}")
    out["size"] = [_int("size", s, 16, 1024) for s in size]

    lo, hi = _pair("objects_per_image", p["objects_per_image"], "int")
    lo, hi = _int("objects_per_image", lo, 1, 32), _int("objects_per_image", hi, 1, 32)
    if lo > hi:
        raise UserError(f"fashion_scenes: objects_per_image needs lo <= hi, got ({lo}, {hi})")
    out["objects_per_image"] = [lo, hi]

    lo, hi = _pair("object_scale", p["object_scale"], "float")
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.25 <= v <= 4.0:
            raise UserError(
                f"fashion_scenes: object_scale must be a pair of numbers in 0.25..4.0 "
                f"(lo <= hi), got {p['object_scale']!r}"
            )
    if lo > hi:
        raise UserError(f"fashion_scenes: object_scale needs lo <= hi, got ({lo}, {hi})")
    out["object_scale"] = [float(lo), float(hi)]

    out["classes"] = _classes(p["classes"])
    h, w = out["size"]
    out["min_visible_area"] = _int("min_visible_area", p["min_visible_area"], 1, h * w)
    out["mask_threshold"] = _int("mask_threshold", p["mask_threshold"], 0, 254)
    return out
