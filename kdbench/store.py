"""The results store on disk: one directory per run, whose files say its state.

``spec.json`` (resolved run), ``env.json`` (versions), ``metrics.jsonl`` (one JSON object per
evaluation), and exactly one of ``final.json`` (complete) or ``error.json`` (failed, diverged or kd_inactive);
``job.json`` records the scheduler job that runs it (``{"executor": "local"|"slurm", "job_id",
"host", "submitted"}``). Files are written atomically (temporary file + fsync + rename), so a reader
sees a whole file or none, and a crash never leaves half a result; they get the mode the umask
gives (kdbench.safeio). Every file is read bounded, regular files only, never through a link out
of its study folder (kdbench.safeio), and a result file whose content is not what kdbench writes
(a wrong type, a NaN, a huge or non-regular file) makes its run ``corrupt``, with the reason. A
run's state comes from these files alone (``read_run``); whether its job is still alive is the executors' to say
(runners.launch), and kdbench.states combines the two.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.safeio import METRICS_CAP, RESULT_CAP, UnsafeFile, file_mode, open_no_follow, read_capped
from kdbench.vocab import ERROR_STATES, State

FINAL, ERROR, SPEC, ENV, METRICS, JOB = "final.json", "error.json", "spec.json", "env.json", "metrics.jsonl", "job.json"
PER_CLASS = "per_class"  # final.json / metrics.jsonl: {"classes": [names], "<measure>": [percent or null]}


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
        os.fchmod(fd, file_mode())  # mkstemp's 0600 would keep the group out of a shared root
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


def read_result(path: str | Path, root: str | Path | None = None) -> tuple[Any, str | None]:
    """(the parsed file, None), or (None, why it cannot be read): missing, not a regular file, a
    link out of ``root``, over RESULT_CAP, not JSON. (A NaN token parses: what a reader needs to be
    finite, ``final_problem`` checks.)"""
    try:
        raw = read_capped(path, RESULT_CAP, root)
    except UnsafeFile as error:
        return None, f"{Path(path).name}: {error.reason}"
    except OSError as error:
        return None, f"{Path(path).name}: {error.strerror or error}"
    try:
        return json.loads(raw), None
    except (ValueError, RecursionError) as error:
        return None, f"{Path(path).name}: not valid JSON ({str(error).splitlines()[0][:120]})"


def read_json(path: str | Path, root: str | Path | None = None) -> Any | None:
    """The parsed file, or None when it is missing or cannot be read as a result file (see
    ``read_result``)."""
    return read_result(path, root)[0]


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON object as one line, in a single write, flushed to disk."""
    line = json.dumps(record, sort_keys=True, default=_json_default, allow_nan=False) + "\n"
    try:  # appended to the file itself, never through a link planted in its place
        with os.fdopen(open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise WriteError(error.errno, error.strerror, str(path)) from None


def write_jsonl_atomic(path: str | Path, records: list[dict]) -> None:
    """Replace a JSON-lines file as a whole (same line format as ``append_jsonl``)."""
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True, default=_json_default, allow_nan=False) + "\n"
                                    for r in records))


def read_jsonl(path: str | Path, root: str | Path | None = None) -> list[dict]:
    """Every complete, valid line of a JSON-lines file (read as ``read_result`` reads, up to
    METRICS_CAP); a truncated or corrupt line is skipped, an unreadable file is no lines."""
    records = []
    try:
        text = read_capped(path, METRICS_CAP, root).decode(errors="replace")
    except OSError:
        return records
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
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
    (None when absent or unreadable), its job record (None when there is none) and, for a corrupt
    run, why (``reason``: one line)."""

    state: State
    names: frozenset = frozenset()
    final: Any = None
    error: Any = None
    job: dict | None = None
    reason: str | None = None


def list_names(folder: str | Path) -> frozenset:
    """The names in a folder (one directory listing); empty when it does not exist."""
    try:
        return frozenset(os.listdir(folder))
    except OSError:
        return frozenset()


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value))


def _optional_mapping(data: dict, key: str, values=lambda value: True) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        return f"{key} is {type(value).__name__}, not an object"
    bad = next((k for k, v in value.items() if not values(v)), None)
    return None if bad is None else f"{key}.{bad} has a value of the wrong type"


METRIC_NAME = re.compile(r"[\w.\-]{1,80}/[\w.\-]{1,80}")   # val/mIoU, val/bbox_mAP_50: never a column of its own


def final_problem(data: Any) -> str | None:
    """Why a parsed final.json is not one kdbench wrote (a field of the wrong type, a metric that
    is not a finite number), or None: what every reader of a complete run may then rely on."""
    if not isinstance(data, dict):
        return f"final.json holds {type(data).__name__}, not an object"
    if data.get("status") != "complete":
        return f"final.json: status is {str(data.get('status'))[:40]!r}, not 'complete'"
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        return "final.json: metrics is not a non-empty object"
    odd = next((k for k in metrics if not METRIC_NAME.fullmatch(k)), None)
    if odd is not None:
        return f"final.json: metrics: {odd[:80]!r} is not a metric's name (such as val/mIoU)"
    bad = next((k for k, v in metrics.items() if not is_finite_number(v)), None)
    if bad is not None:
        return f"{bad} missing or not finite in final.json"
    if data.get("iterations") is not None and not is_finite_number(data["iterations"]):
        return "final.json: iterations is not a number"
    listed = lambda v: _scalar(v) or (isinstance(v, list) and all(map(_scalar, v)))  # noqa: E731
    for key, values in (("cost", _scalar), ("recipe", listed), ("data", lambda v: True),
                        ("teacher_check", _scalar)):
        problem = _optional_mapping(data, key, values)
        if problem:
            return f"final.json: {problem}"
    problem = per_class_problem(data.get(PER_CLASS))
    if problem:
        return f"final.json: {PER_CLASS}: {problem}"
    terms = data.get("terms")
    if terms is not None and not (isinstance(terms, list) and all(isinstance(t, dict) for t in terms)):
        return "final.json: terms is not a list of objects"
    return None


def per_class_problem(value: Any) -> str | None:
    """Why a ``per_class`` record (runners.metrics.class_values) is not one kdbench wrote, or None
    (also for none at all: results from before it was recorded): ``classes`` a list of names, every
    other key a list of one finite number or null per class."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("classes"), list):
        return "not an object with a list of classes"
    if not all(isinstance(name, str) for name in value["classes"]):
        return "a class name is not text"
    for measure, values in value.items():
        if measure != "classes" and not (isinstance(values, list) and len(values) == len(value["classes"])
                                         and all(v is None or is_finite_number(v) for v in values)):
            return f"{str(measure)[:40]!r} is not one number or null per class"
    return None


def error_problem(data: Any) -> str | None:
    """Why a parsed error.json is not one kdbench wrote, or None."""
    if not isinstance(data, dict):
        return f"error.json holds {type(data).__name__}, not an object"
    if data.get("status") not in ERROR_STATES:
        return f"error.json: status is {str(data.get('status'))[:40]!r}, not one of {', '.join(ERROR_STATES)}"
    return None


def read_run(run_dir: str | Path, names: frozenset | None = None, root: str | Path | None = None) -> RunFiles:
    """A run directory's state, result file and job record, from one listing and one read of each
    file (``names``: the listing, when the caller has it; ``root``: the folder no file may lead
    out of, by default the run directory's parent, its study's folder)."""
    run_dir = os.fspath(run_dir)
    names = list_names(run_dir) if names is None else names
    root = os.path.dirname(os.path.abspath(run_dir)) if root is None else root
    job = read_job(run_dir, root) if JOB in names else None
    for name, problem in ((FINAL, final_problem), (ERROR, error_problem)):
        if name not in names:
            continue
        data, reason = read_result(os.path.join(run_dir, name), root)
        reason = reason or problem(data)
        if reason:
            return RunFiles(State.CORRUPT, names, job=job, reason=reason)
        if name == FINAL:
            return RunFiles(State.COMPLETE, names, final=data, job=job)
        return RunFiles(State(data["status"]), names, error=data, job=job)
    return RunFiles(State.STARTED if SPEC in names else State.MISSING, names, job=job)


def error_line(files: RunFiles) -> str | None:
    """One line saying why a failed, diverged, kd_inactive or corrupt run has no result."""
    if files.state == "corrupt":
        return printable(files.reason or "")
    if files.state not in ERROR_STATES:
        return None
    error = files.error or {}
    if files.state == "diverged":
        return printable(f"diverged at step {error.get('step', '?')} (loss {error.get('key', '?')})")
    if files.state == "kd_inactive":
        return printable(f"distill term {error.get('term', '?')} inactive: {error.get('reason', '?')}")
    text = str(error.get("error") or error.get("traceback") or "").strip().splitlines()
    return printable(text[-1][:300]) if text else "failed"


def printable(text: str) -> str:
    """``text`` with every control character (a terminal escape a result file could carry) as ``?``."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


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
    return {run_id: read_run(os.path.join(directory, run_id), root=directory) if run_id in present else missing
            for run_id in run_ids}


def write_job(run_dir: str | Path, executor: str, job_id: str) -> None:
    """Record the scheduler job that runs the run in ``run_dir``."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(run_dir) / JOB, {"executor": executor, "job_id": str(job_id), "host": platform.node(),
                                            "submitted": time.time()})


JOB_ID = {"local": re.compile(r"[0-9]{1,10}"), "slurm": re.compile(r"[0-9]{1,20}(_[0-9]{1,10})?")}


def read_job(run_dir: str | Path, root: str | Path | None = None) -> dict | None:
    """The job record of a run, or None (absent, unreadable, or not one kdbench wrote: an
    executor it does not know, a job id that is not one, a host that is not text)."""
    run_dir = os.fspath(run_dir)
    job = read_json(os.path.join(run_dir, JOB), os.path.dirname(os.path.abspath(run_dir)) if root is None else root)
    if not isinstance(job, dict) or job.get("executor") not in JOB_ID or not isinstance(job.get("job_id"), str):
        return None
    if not JOB_ID[job["executor"]].fullmatch(job["job_id"]) or not isinstance(job.get("host", ""), str):
        return None
    return job
