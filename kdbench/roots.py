"""Where a study's results live when a command is not told (``--results``): the results root stays
with the study.

In order: ``--results``; the study's own ``results:`` (a path relative to the study's folder, or
absolute); the root the study's last launch wrote to, as that launch recorded it; else ``results``
under the current folder. A launch records its root per study (its absolute path) in
``$KDBENCH_STATE/launches.json`` (default ``~/.local/state/kdbench``), a file of this account's: it
is read capped, and a damaged or foreign one counts as no record. ``resolve`` says which one it
took, so that a command can print the root it reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kdbench.safeio import SPEC_CAP, read_capped
from kdbench.store import write_json_atomic

STATE_ENV = "KDBENCH_STATE"
DEFAULT = "results"


def _record_file() -> Path:
    base = os.environ.get(STATE_ENV) or Path.home() / ".local" / "state" / "kdbench"
    return Path(base) / "launches.json"


def _records() -> dict:
    try:
        data = json.loads(read_capped(_record_file(), SPEC_CAP))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _key(study: str | Path) -> str:
    return str(Path(study).resolve())


def recorded(study: str | Path) -> Path | None:
    """The root the study's last launch recorded, or None."""
    found = _records().get(_key(study))
    return Path(found) if isinstance(found, str) and found else None


def remember(study: str | Path, root: str | Path) -> None:
    """Record that the study at ``study`` was launched into ``root`` (best effort: a record that
    cannot be written leaves the launch as it was)."""
    records = {k: v for k, v in _records().items() if isinstance(k, str) and isinstance(v, str)}
    records[_key(study)] = str(Path(root).resolve())
    try:
        _record_file().parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(_record_file(), records)
    except OSError:
        pass


def resolve(study: str | Path, given: str | Path | None, declared: str | None) -> tuple[Path, str]:
    """(the results root, why that one): ``given`` (--results), else the study's ``declared``
    ``results:`` (relative to its folder), else its last launch's, else ``results``."""
    if given is not None:
        return Path(given), "--results"
    if declared:
        return Path(study).parent / declared, "the study's results:"
    last = recorded(study)
    if last is not None:
        return last, f"where its last launch wrote (recorded in {_record_file()})"
    return Path(DEFAULT), "the default; neither --results, the study's results: nor a launch of it says another"
