"""The SLURM continuation of a study whose later stages wait on results (kdbench.waiting.Waiting):
a small job, behind ``afterany`` on the jobs of the runs those stages need, that runs the same
launch again on a node. It plans the study from the results now in the store, submits what has
become plannable (a tuned study's final runs) and, when something still waits, submits a further
continuation. Compute nodes must be able to call sbatch, as they can on most clusters.

At most one continuation per study is pending: its job id is kept in the study's results
directory (``continuation.json``, the job-record format), and a launch whose study still waits
submits none while the recorded one is alive (a relaunch by hand does the same; the launch lock
and the runs' job records already keep any run from being submitted twice).
"""

from __future__ import annotations

import os
from pathlib import Path

from kdbench import store
from kdbench.expand import Study

RECORD = "continuation.json"


def recorded(study: Study) -> dict | None:
    """The study's recorded continuation job, or None."""
    found = store.read_json(study.directory / RECORD)
    return found if isinstance(found, dict) and "job_id" in found else None


def needs_jobs(study: Study, executor) -> list[str]:
    """The live SLURM jobs of the runs the study's waiting stages need: what a continuation waits on."""
    needs = dict.fromkeys(run_id for waiting in study.waiting for run_id in waiting.needs)
    jobs = [job["job_id"] for run_id in needs if (job := store.read_job(study.directory / run_id))
            and job["executor"] == executor.name]
    states = executor.job_states(jobs)
    return [job for job in jobs if job in states and states[job].liveness == "alive"]


def continue_later(study: Study, executor, function) -> str | None:
    """Submit ``function(study path, results root)`` (runners.launch.launcher's Continuation: the
    launch, again) as the study's continuation, behind the live jobs of the runs its waiting
    stages need; its job id, or None when one is already pending or no such job is alive (nothing
    would ever start it: a relaunch by hand continues)."""
    mine = os.environ.get("SLURM_JOB_ID")   # a continuation running now may submit the next one
    pending = recorded(study)
    if pending and pending["job_id"] != mine and (job := executor.job_states([pending["job_id"]]).get(
            pending["job_id"])) is not None and job.liveness == "alive":
        return None
    after = needs_jobs(study, executor)
    if not after:
        return None
    job_id = executor.submit_continuation(study.directory, after, function,
                                          str(Path(study.path).resolve()), str(Path(study.results).resolve()))
    store.write_json_atomic(study.directory / RECORD, {"executor": executor.name, "job_id": job_id,
                                                       "after": after})
    return job_id
