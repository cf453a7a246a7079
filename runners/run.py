"""``run_one``: the one path every run takes, from ``kdbench run``, a local launch's worker (which
is ``kdbench run``) and a SLURM job alike.

1. The preflight (runners.preflight.check_run: configs, teacher checkpoint, dataset, locations,
   shapes), unless the directory already holds the complete run. A failure writes nothing, except
   in a run directory a launch made (it holds ``run.json``), where it is recorded as a failed run
   so that status shows it and a relaunch does not retry it blindly.
2. Training and evaluation (runners.train.execute), which resumes from the directory's last good
   checkpoint and writes the result files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kdbench import plugins, store
from kdbench.errors import UserError
from kdbench.ids import run_id
from kdbench.spec import RunSpec
from kdbench.vocab import State
from runners.launch.executor import RUN_FILE


def run_one(run: RunSpec, out: str | Path, *, source: str = "<run>",
            preempted: Callable[[], bool] = lambda: False) -> dict:
    """Check, train and evaluate ``run`` into ``out``; return its final record.

    Raises a UserError for a bad input (nothing trained), or the error that stopped training
    (recorded in ``error.json`` unless ``preempted()`` says the scheduler is requeueing the job).
    """
    from runners.preflight import check_run
    from runners.train import execute

    out = Path(out)
    plugins.load_entries(run.plugins)  # a run's own plugins, when it came from a pickle or spec.json
    if store.run_state(out) != State.COMPLETE:
        try:
            check_run(run, source)
        except UserError as error:
            record_preflight_failure(run, out, error)
            raise
    return execute(run, out, preempted)


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
