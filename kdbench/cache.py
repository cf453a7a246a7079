"""kdbench's disk caches (study expansions, loss answers, model facts): where they live, and how a
file is written. Every cache is an optimisation only: a file that cannot be read is a miss, and one
that cannot be written (a read-only home, a full disk) is simply not kept."""

from __future__ import annotations

import os
from pathlib import Path

from kdbench import store


def cache_root() -> Path:
    """``$KDBENCH_CACHE``, default ``~/.cache/kdbench``."""
    return Path(os.environ.get("KDBENCH_CACHE") or Path.home() / ".cache" / "kdbench")


def write_cache(path: str | Path, text: str) -> bool:
    """Write a cache file whole or not at all (``store.write_text_atomic``), creating its folder;
    an OSError is swallowed. Returns whether the file was written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        store.write_text_atomic(path, text)
    except OSError:
        return False
    return True
