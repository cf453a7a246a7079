"""Run identity: a short, stable hash of everything that changes a run's numbers.

``run_id`` = the first 12 hex characters of SHA-256 over the canonical JSON of the resolved
run (``RunSpec.to_dict()``) without what does not change its numbers: its name, device, output
directory, plugin paths and where its dataset is mounted; a teacher run it uses counts by its id
(its directory's name), not by where the results live. Resources, launcher options and the git sha
are not part of a run, so they never change its id. The canonical form sorts keys, uses no
whitespace, and writes integral floats as integers, so ``tau: 4`` and ``tau: 4.0`` are the same
run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kdbench.spec import RunSpec

NON_IDENTITY_KEYS = ("name", "device", "out", "plugins")


def canonical(value: Any) -> Any:
    kind = type(value)  # exact types first (most of a run), isinstance below for the rest
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): canonical(v) for k, v in value.items()}
    if kind is list:
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def identity_payload(run: dict) -> dict:
    """What changes the numbers: the resolved run without the keys above and the dataset's root."""
    payload = {k: v for k, v in run.items() if k not in NON_IDENTITY_KEYS and k != "run_id"}
    payload["dataset"] = {k: v for k, v in payload["dataset"].items() if k != "root"}
    teacher = payload.get("teacher")
    if teacher is not None and isinstance(teacher["checkpoint"], dict):
        payload["teacher"] = {**teacher, "checkpoint": {"run": Path(str(teacher["checkpoint"]["run"])).name}}
    return payload


def run_id(run: RunSpec) -> str:
    """The 12-hex-character identity of a resolved run."""
    return hashlib.sha256(canonical_json(identity_payload(run.to_dict())).encode()).hexdigest()[:12]
