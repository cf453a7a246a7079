"""``run_one``: the one path every run takes, from ``kdbench run``, a local launch's worker (which
is ``kdbench run``) and a SLURM job alike.

1. The preflight (runners.preflight.check_run: configs, teacher checkpoint, dataset, locations,
   shapes), unless the directory already holds the complete run. A failure writes nothing, except
   in a run directory a launch made (it holds ``run.json``), where it is recorded as a failed run
   so that status shows it and a relaunch does not retry it blindly.
2. Training and evaluation (runners.train.execute), which resumes from the directory's last good
   checkpoint and writes the result files.

A run directory has one trainer at a time: the first process holds its lock (``.run.lock``, an
``flock`` the system releases when the process ends, however it ends) from before the preflight
(after it, for a directory that does not exist yet, so that a bad run makes none) to the last
result file; a second ``kdbench run`` or job of that directory is refused in one line and writes
nothing. The one exception is a later attempt of the same SLURM job (requeued while a step of the
earlier attempt still runs on a node SLURM gave up on): it takes the run over, and the earlier
attempt stops at its next write (runners.attempt). Under the lock, temporary files a killed writer
left in the directory (over a minute old) are deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from kdbench import plugins, store
from kdbench.errors import UserError
from kdbench.ids import run_id
from kdbench.safeio import clean_leftovers, open_no_follow, read_capped
from kdbench.spec import RunSpec
from kdbench.vocab import State
from runners import attempt
from runners.launch.executor import RUN_FILE


def run_one(run: RunSpec, out: str | Path, *, source: str = "<run>",
            preempted: Callable[[], bool] = lambda: False) -> dict:
    """Check, train and evaluate ``run`` into ``out``; return its final record.

    Raises a UserError for a bad input (nothing trained), or the error that stopped training
    (recorded in ``error.json`` unless ``preempted()`` says the scheduler is requeueing the job).
    """
    from runners.preflight import check_run
    from runners.train import execute, world

    out = Path(out)
    plugins.load_entries(run.plugins)  # a run's own plugins, when it came from a pickle or spec.json

    def preflight() -> None:
        if store.run_state(out) != State.COMPLETE:
            try:
                check_run(run, source)
            except UserError as error:
                record_preflight_failure(run, out, error)
                raise

    fresh = not out.is_dir()
    if fresh:  # a new directory is checked before anything is made there: a bad run leaves nothing
        preflight()
    with run_lock(out) if world()[0] == 0 else contextlib.nullcontext():  # rank 0 holds it for all ranks
        if not fresh:
            preflight()
        return execute(run, out, preempted)


LOCK = ".run.lock"


def _holder(out: Path) -> dict | None:
    """The attempt that holds ``out``'s lock, as it wrote itself into the lock file."""
    try:
        holder = json.loads(read_capped(out / LOCK, 4096).decode(errors="replace"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _try_lock(out: Path) -> int | None:
    """The run directory's lock, taken (its descriptor), or None when another process holds it."""
    fd = open_no_follow(out / LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock while training it; another holder is one UserError naming it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = _try_lock(out)
    except OSError as error:
        raise UserError(f"{out}: cannot lock the run directory ({error.strerror or error})") from None
    if fd is None:
        holder = _holder(out)
        if holder is not None and attempt.supersedes(attempt.token(), holder):
            # SLURM requeued this job while a step of its earlier attempt still runs (its node's slurmd
            # died): this attempt takes the run over; the earlier one stops at its next write.
            print(f"kdbench: {out}: taking the run over from {attempt.describe(holder)}, an earlier attempt of this "
                  "job that SLURM gave up on; it stops at its next write", file=sys.stderr, flush=True)
            yield
            return
        said = attempt.describe(holder) if holder is not None else "another process"
        raise UserError(f"{out}: this run is being trained by {said} (it holds {out / LOCK}); a run directory "
                        "has one trainer at a time: wait for it, or kdbench cancel its study")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(attempt.token()).encode())
        # What a killed writer left here; a minute's grace for a launch writing job.json just now.
        clean_leftovers(out, older_than=60)
        yield
    finally:
        os.close(fd)  # releases the lock


def record_load_failure(run_file: str | Path, out: str | Path | None, error: UserError) -> None:
    """A launch's run file that no longer reads as a run (a spec this version refuses): recorded
    as a failed run in its directory, so that status says failed, with the reason, and the launch
    counts it; a run file anywhere else writes nothing."""
    if out is None:
        return
    out, run_file = Path(out), Path(run_file)
    try:
        if run_file.resolve() != (out / RUN_FILE).resolve() or not (out / RUN_FILE).is_file():
            return
        fd = _try_lock(out)
        if fd is None:  # another process trains it: its result decides
            return
        try:
            if store.read_run(out).state != "complete":
                store.write_json_atomic(out / store.ERROR, {"status": "failed", "user_error": True,
                                                            "error": f"the run file does not read: {error.errors[0]}"})
        finally:
            os.close(fd)
    except OSError:
        pass


def record_preflight_failure(run: RunSpec, out: Path, error: UserError) -> None:
    """A preflight error in a directory a launch made for this run: recorded as a failed run.
    Anywhere else nothing is written."""
    recorded = store.read_json(out / store.SPEC)
    if not (out / RUN_FILE).is_file() or (isinstance(recorded, dict) and recorded.get("run_id") != run_id(run)):
        return
    try:
        if recorded is None:
            store.write_json_atomic(out / store.SPEC, {**run.to_dict(), "run_id": run_id(run)})
        store.write_json_atomic(out / store.ERROR, {"status": "failed", "error": str(error), "user_error": True})
    except OSError:
        pass
