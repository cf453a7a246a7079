"""Run identity: a short, stable hash of everything that changes a run's numbers.

``run_id`` = the first 12 hex characters of SHA-256 over the canonical JSON of the resolved
run without its name, device and output directory (kdbench.runspec.NON_IDENTITY_KEYS). Resources,
launcher options and the git sha are not part of a run, so they never change its id. The
canonical form sorts keys, uses no whitespace, and writes integral floats as integers, so
``tau: 4`` and ``tau: 4.0`` are the same run.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kdbench.runspec import identity_payload


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


def run_id(run: dict) -> str:
    """The 12-hex-character identity of a resolved run."""
    payload = identity_payload({k: v for k, v in run.items() if k != "run_id"})
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:12]
