"""The results store on disk: one directory per run, whose files say its state.

``spec.json`` (resolved run), ``env.json`` (versions), ``metrics.jsonl`` (one JSON object per
evaluation), and exactly one of ``final.json`` (complete) or ``error.json`` (failed or diverged).
Files are written atomically (temporary file + fsync + rename), so a reader sees a whole file or
none, and a crash never leaves half a result.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FINAL, ERROR, SPEC, ENV, METRICS = "final.json", "error.json", "spec.json", "env.json", "metrics.jsonl"


class WriteError(OSError):
    """A result file could not be written (a full disk, a read-only file system): one line naming
    the file and the OS error. Nothing partial is left behind."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def _json_default(value: Any):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(data: Any) -> str:
    """Strict JSON (NaN and Inf are not JSON: they must never reach a result file)."""
    return json.dumps(data, indent=2, sort_keys=True, default=_json_default, allow_nan=False)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so that readers see the old file or the whole new one."""
    write_text_atomic(path, dumps(data) + "\n")  # serialised first: a bad value fails before any write


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one."""
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one; on a full
    disk or a read-only file system, a WriteError naming the file and nothing left behind."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise WriteError(error.errno, error.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(error, OSError):  # a full disk, a read-only file system: name the file
            raise WriteError(error.errno, error.strerror, str(path)) from None
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def read_json(path: str | Path) -> Any | None:
    """The parsed file, or None when it is missing or not valid JSON (a corrupt result)."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read())
    except (OSError, ValueError):
        return None


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON object as one line, in a single write, flushed to disk."""
    line = json.dumps(record, sort_keys=True, default=_json_default, allow_nan=False) + "\n"
    try:
        with open(path, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise WriteError(error.errno, error.strerror, str(path)) from None


def write_jsonl_atomic(path: str | Path, records: list[dict]) -> None:
    """Replace a JSON-lines file as a whole (same line format as ``append_jsonl``)."""
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True, default=_json_default, allow_nan=False) + "\n"
                                    for r in records))


def read_jsonl(path: str | Path) -> list[dict]:
    """Every complete, valid line of a JSON-lines file; a truncated or corrupt line is skipped."""
    records = []
    try:
        text = Path(path).read_text()
    except OSError:
        return records
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run_state(run_dir: str | Path) -> str:
    """``complete``, ``failed``, ``diverged``, ``corrupt``, ``started`` or ``missing``, from files only."""
    return read_run(run_dir).state


@dataclass
class RunFiles:
    """What a run directory holds: its state, the names in it, and final.json / error.json parsed
    (None when absent or unreadable)."""

    state: str
    names: frozenset = frozenset()
    final: Any = None
    error: Any = None


@contextlib.contextmanager
def gc_paused():
    """Python's cyclic garbage collector off for a block that builds many objects and no cycles
    (reading thousands of JSON files, expanding a grid): it would only scan them again and again,
    which grows faster than the number of runs. Reference counting still frees everything."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def list_names(folder: str | Path) -> frozenset:
    """The names in a folder (one directory listing); empty when it does not exist."""
    try:
        return frozenset(os.listdir(folder))
    except OSError:
        return frozenset()


def read_run(run_dir: str | Path, names: frozenset | None = None) -> RunFiles:
    """A run directory's state and result file, from one listing and one read of that file
    (``names``: the listing, when the caller has it)."""
    run_dir = os.fspath(run_dir)
    names = list_names(run_dir) if names is None else names
    if FINAL in names:
        data = read_json(os.path.join(run_dir, FINAL))
        if isinstance(data, dict) and data.get("status") == "complete" and isinstance(data.get("metrics"), dict):
            return RunFiles("complete", names, final=data)
        return RunFiles("corrupt", names, final=data)
    if ERROR in names:
        data = read_json(os.path.join(run_dir, ERROR))
        if isinstance(data, dict) and data.get("status") in ("failed", "diverged"):
            return RunFiles(data["status"], names, error=data)
        return RunFiles("corrupt", names, error=data)
    return RunFiles("started" if SPEC in names else "missing", names)
