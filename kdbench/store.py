"""The results store on disk: one directory per run, whose files say its state.

``spec.json`` (resolved run), ``env.json`` (versions), ``metrics.jsonl`` (one JSON object per
evaluation), and exactly one of ``final.json`` (complete) or ``error.json`` (failed, diverged or kd_inactive);
``job.json`` records the scheduler job that runs it (``{"executor": "local"|"slurm", "job_id",
"host", "submitted"}``). Files are written atomically (temporary file + fsync + rename), so a reader
sees a whole file or none, and a crash never leaves half a result. A run's state comes from these
files alone (``read_run``); whether its job is still alive is the executors' to say
(runners.launch), and kdbench.states combines the two.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.vocab import ERROR_STATES, State

FINAL, ERROR, SPEC, ENV, METRICS, JOB = "final.json", "error.json", "spec.json", "env.json", "metrics.jsonl", "job.json"


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
    """``complete``, one of kdbench.vocab.ERROR_STATES, ``corrupt``, ``started`` or ``missing``, from files only."""
    return read_run(run_dir).state


@dataclass(frozen=True)
class RunFiles:
    """What a run directory holds: its state, the names in it, final.json / error.json parsed
    (None when absent or unreadable) and its job record (None when there is none)."""

    state: State
    names: frozenset = frozenset()
    final: Any = None
    error: Any = None
    job: dict | None = None


def list_names(folder: str | Path) -> frozenset:
    """The names in a folder (one directory listing); empty when it does not exist."""
    try:
        return frozenset(os.listdir(folder))
    except OSError:
        return frozenset()


def read_run(run_dir: str | Path, names: frozenset | None = None) -> RunFiles:
    """A run directory's state, result file and job record, from one listing and one read of each
    file (``names``: the listing, when the caller has it)."""
    run_dir = os.fspath(run_dir)
    names = list_names(run_dir) if names is None else names
    job = read_job(run_dir) if JOB in names else None
    if FINAL in names:
        data = read_json(os.path.join(run_dir, FINAL))
        if isinstance(data, dict) and data.get("status") == State.COMPLETE and isinstance(data.get("metrics"), dict):
            return RunFiles(State.COMPLETE, names, final=data, job=job)
        return RunFiles(State.CORRUPT, names, final=data, job=job)
    if ERROR in names:
        data = read_json(os.path.join(run_dir, ERROR))
        if isinstance(data, dict) and data.get("status") in ERROR_STATES:
            return RunFiles(State(data["status"]), names, error=data, job=job)
        return RunFiles(State.CORRUPT, names, error=data, job=job)
    return RunFiles(State.STARTED if SPEC in names else State.MISSING, names, job=job)


def teacher_check(metrics: dict, expect: dict) -> dict:
    """The teacher gate's verdict, for final.json: the expected ``metric`` (``expect``: a teacher's
    ``expect`` as spec.json writes it) against what the run measured."""
    measured = metrics.get(expect["metric"])
    passed = is_finite_number(measured) and abs(measured - expect["value"]) <= expect["tolerance"]
    return {"metric": expect["metric"], "expected": expect["value"], "tolerance": expect["tolerance"],
            "measured": measured if is_finite_number(measured) else None, "passed": bool(passed)}


def teacher_check_failure(files: RunFiles) -> str | None:
    """Why a complete teacher run's students must not run (its teacher gate failed), or None."""
    check = (files.final or {}).get("teacher_check") if files.state == State.COMPLETE else None
    if not isinstance(check, dict) or check.get("passed") is not False:
        return None
    measured = check.get("measured")
    got = f"scored {measured:.2f}" if is_finite_number(measured) else "did not record"
    return (f"{got} {check.get('metric')}, expected {check.get('expected')} ± {check.get('tolerance')} "
            "(launch --ignore-teacher-check runs its students anyway)")


def scan(directory: str | Path, run_ids) -> dict[str, RunFiles]:
    """run_id -> its directory's files, for the runs of one study folder: one listing of the folder,
    one of each run directory that exists, one read of each file needed."""
    directory = os.fspath(directory)
    present = list_names(directory)
    missing = RunFiles("missing")
    return {run_id: read_run(os.path.join(directory, run_id)) if run_id in present else missing
            for run_id in run_ids}


def write_job(run_dir: str | Path, executor: str, job_id: str) -> None:
    """Record the scheduler job that runs the run in ``run_dir``."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(run_dir) / JOB, {"executor": executor, "job_id": str(job_id), "host": platform.node(),
                                            "submitted": time.time()})


def read_job(run_dir: str | Path) -> dict | None:
    """The job record of a run, or None (absent or unreadable)."""
    job = read_json(os.path.join(os.fspath(run_dir), JOB))
    return job if isinstance(job, dict) and "executor" in job and "job_id" in job else None
