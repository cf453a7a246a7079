"""Run identity: a short, stable hash of everything that changes a run's numbers.

``run_id`` = the first 12 hex characters of SHA-256 over the canonical JSON of the resolved
run (``RunSpec.to_dict()``) without what says how or where it runs rather than what it is: its
name, device, thread count (a study's resources, which launches set), output directory, plugin
paths, where its curves are logged (``tracking``), where its dataset is mounted, what its
teacher is expected to score (the teacher gate) and how far its teacher runs (``forward``: the tapped
outputs are the same); a teacher run it uses counts by its id (its
directory's name), not by where the results live. Resources, launcher options and the git sha are
not part of a run, so they never change its id. The canonical form sorts keys, uses no
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

NON_IDENTITY_KEYS = ("name", "device", "threads", "out", "plugins", "tracking")


def canonical(value: Any) -> Any:
    """JSON data with tuples as lists and integral floats as integers (``4.0`` -> ``4``)."""
    kind = type(value)
    if kind is dict:
        return {str(k): canonical(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [canonical(v) for v in value]
    if kind is float and value.is_integer():
        return int(value)
    return value


def identity_payload(run: dict) -> dict:
    """What changes the numbers: the resolved run without the keys above and the dataset's root."""
    payload = {k: v for k, v in run.items() if k not in NON_IDENTITY_KEYS and k != "run_id"}
    payload["dataset"] = {k: v for k, v in payload["dataset"].items() if k != "root"}
    teacher = payload.get("teacher")
    if teacher is not None:
        # The teacher gate and how far the teacher runs (its tapped outputs are the same) change no number.
        teacher = {k: v for k, v in teacher.items() if k not in ("expect", "forward")}
        if isinstance(teacher["checkpoint"], dict):
            teacher["checkpoint"] = {"run": Path(str(teacher["checkpoint"]["run"])).name}
        payload["teacher"] = teacher
    return payload


def _text(payload: dict) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_id(run: RunSpec) -> str:
    """The 12-hex-character identity of a resolved run."""
    return _digest(_text(canonical(identity_payload(run.to_dict()))))


_SEED = "\x00seed\x00"  # a string no spec holds: where each seed's number goes in the text


def run_ids_by_seed(run: RunSpec, seeds) -> list[str]:
    """``run_id`` of ``run`` with each of ``seeds``: the runs of a study's cell differ only there,
    so the canonical text is made once, the seed written into it for each (keys are sorted, so
    the seed's place does not depend on its value)."""
    text = _text({**canonical(identity_payload(run.to_dict())), "seed": _SEED})
    placeholder = json.dumps(_SEED)
    return [_digest(text.replace(placeholder, str(int(seed)))) for seed in seeds]
