"""The expanded runs of a study, kept on disk so that status, collect and report over a large grid
do not validate and hash every run again.

``kdbench.study.load_study`` checks a spec's top-level keys every time, then asks ``load`` for the
expansion (every run resolved, with its id, name, stage, parameters and dependencies) under a key
made of everything the expansion depends on: the spec as read (with its ``defaults:``), the file
name and results root as given (they appear in messages and in teacher checkpoint paths), the
source of the modules that validate and name runs, and the losses' source (whose answers validate
terms). A key that differs is a miss: the expansion is computed and saved (``save``). Config
names are resolved again on every hit, because files can disappear; a config that no longer
resolves makes ``load_study`` expand from scratch and raise the error it always raised.

One file per (study file, results root), the last 64 kept, under ``$KDBENCH_CACHE`` (default ``~/.cache/kdbench``);
anything unreadable is a miss, and a cache that cannot be written only costs speed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kdbench.cache import cache_root, write_cache

CACHE_VERSION = 1
KEEP = 64  # files kept: the studies loaded most recently
MODULES = ("study.py", "runspec.py", "ids.py", "schema.py", "configs.py", "loss_catalog.py", "study_cache.py")


def _folder() -> Path:
    return cache_root() / "studies"


def key(data: dict, path: Path, results_root: Any) -> str | None:
    """The expansion's key, or None when the spec holds values that JSON cannot (never cached)."""
    from kdbench import loss_catalog

    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    try:
        digest.update(json.dumps([CACHE_VERSION, data, str(path), str(results_root)], sort_keys=True,
                                 allow_nan=False).encode())
    except (TypeError, ValueError):
        return None
    for name in MODULES:
        digest.update((here / name).read_bytes())
    digest.update(loss_catalog.source_hash().encode())
    return digest.hexdigest()


def _file(path: Path, results_root: Any) -> Path:
    where = json.dumps([str(Path(path).resolve()), str(Path(results_root).resolve())])
    return _folder() / f"{hashlib.sha256(where.encode()).hexdigest()[:24]}.json"


def load(cache_key: str | None, path: Path, results_root: Any) -> list[dict] | None:
    """The saved expansion for this key: a list of PlannedRun fields, or None."""
    if cache_key is None:
        return None
    from kdbench import store

    try:
        with open(_file(path, results_root), "rb") as handle, store.gc_paused():
            saved = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("key") != cache_key or not isinstance(saved.get("runs"), list):
        return None
    return saved["runs"]


def save(cache_key: str | None, path: Path, results_root: Any, runs: list[dict]) -> None:
    """Keep an expansion, if it survives a JSON round trip unchanged (else it is not kept)."""
    if cache_key is None:
        return
    try:
        text = json.dumps({"key": cache_key, "runs": runs}, allow_nan=False, separators=(",", ":"))
        if json.loads(text)["runs"] != runs:  # a non-string key or a tuple would come back changed
            return
        target = _file(path, results_root)
        if not write_cache(target, text):
            return
        kept = sorted(target.parent.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in kept[:-KEEP]:  # the studies loaded last stay
            old.unlink(missing_ok=True)
    except (OSError, TypeError, ValueError):
        pass


def forget(path: Path, results_root: Any) -> None:
    """Remove the saved expansion of a study (the next load expands it from scratch)."""
    _file(path, results_root).unlink(missing_ok=True)
