"""Recorded jobs, whatever executor made them: are they alive, and cancelling them.

A run's ``job.json`` names its executor; each executor answers for its own jobs, with one
question per executor for the whole study (one squeue, not one per run). ``status`` is each run's
state (kdbench.states) with these answers; ``cancel`` stops a study's live jobs.
"""

from __future__ import annotations

from kdbench import states, store
from kdbench.expand import Study
from runners.launch import continuation
from runners.launch.executor import Executor
from runners.launch.local import LocalExecutor
from runners.launch.slurm import SlurmExecutor

DEAD = states.JobState("dead")
EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor, "slurm": SlurmExecutor}


def job_states(records: dict[str, dict]) -> dict[str, states.JobState]:
    """run_id -> its job's state (liveness ``alive``, ``stuck`` or ``dead``) for runs with a job record."""
    result = {}
    for name, executor in EXECUTORS.items():
        mine = {run_id: job for run_id, job in records.items() if job["executor"] == name}
        answers = executor.job_states(sorted({job["job_id"] for job in mine.values()}))
        for run_id, job in mine.items():
            result[run_id] = answers.get(job["job_id"], DEAD)
        if name == "local":  # a pid means nothing on another host
            result.update({run_id: DEAD for run_id, job in mine.items() if not LocalExecutor.record_alive(job)})
    return result


def records(scanned: dict[str, store.RunFiles]) -> dict[str, dict]:
    return {run_id: files.job for run_id, files in scanned.items() if files.job}


def status(study: Study, scanned: dict[str, store.RunFiles] | None = None) -> list[states.RunStatus]:
    """Each run's state, from the results store (``scanned``: as ``store.scan`` read it, when the
    caller has it) and the executors."""
    scanned = store.scan(study.directory, [p.run_id for p in study.runs]) if scanned is None else scanned
    return states.run_states(study, scanned, job_states(records(scanned)))


def cancel_runs(jobs: dict[str, dict]) -> None:
    """Cancel the jobs in ``jobs`` (run_id -> record), each by its executor."""
    for name, executor in EXECUTORS.items():
        executor.cancel(sorted({job["job_id"] for job in jobs.values() if job["executor"] == name}))


def cancel(study: Study) -> list[str]:
    """Cancel every run whose recorded job is alive, or queued behind a teacher that failed, and
    first the study's pending continuation (runners.launch.continuation: the runs' jobs ending would
    start it, and it would launch the study again); returns the runs' ids."""
    pending = continuation.recorded(study)
    if pending and pending.get("executor") in EXECUTORS:
        EXECUTORS[pending["executor"]].cancel([pending["job_id"]])
    scanned = store.scan(study.directory, [p.run_id for p in study.runs])
    recorded = records(scanned)
    live = {run_id: recorded[run_id] for run_id, state in job_states(recorded).items()
            if state.liveness in ("alive", "stuck")}
    cancel_runs(live)
    return [p.run_id for p in study.runs if p.run_id in live]
