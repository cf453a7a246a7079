"""Job records: which scheduler job runs a run, and whether that job is still alive.

``results/<study>/<run_id>/job.json`` holds ``{"executor": "local"|"slurm", "job_id": ...,
"host": ..., "submitted": ...}``. A run counts as in flight only while its recorded job is alive:
a local job by its process id on this host, a SLURM job by the scheduler's state (squeue, then
sacct), so a launch never submits a run twice and never waits on a job that died. A SLURM job
pending on a dependency that can never be met (its teacher failed) counts as dead.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import time
from pathlib import Path

from kdbench import store

JOB = "job.json"
SLURM_ALIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
               "COMPLETING", "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "PREEMPTED"}


def write_job(run_dir: Path, executor: str, job_id: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    store.write_json_atomic(run_dir / JOB, {"executor": executor, "job_id": str(job_id),
                                            "host": platform.node(), "submitted": time.time()})


def read_job(run_dir: Path) -> dict | None:
    job = store.read_json(run_dir / JOB)
    return job if isinstance(job, dict) and "executor" in job and "job_id" in job else None


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


NEVER_SATISFIED = "DependencyNeverSatisfied"


def slurm_jobs(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """The scheduler's (state, reason) of each job id (``123``, ``123_4``); unknown ids are left
    out. squeue first (it knows why a pending job waits), then sacct for jobs that have left it."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    found: dict[str, tuple[str, str]] = {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            job, _, rest = line.partition("|")
            state, _, reason = rest.partition("|")
            found[job.strip()] = (state.strip(), reason.strip())
        missing = [j for j in job_ids if j not in found]
        if missing and shutil.which("sacct"):
            out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,Reason", "-j", ",".join(missing)],
                                 capture_output=True, text=True, timeout=30).stdout
            for line in out.splitlines():
                job, _, rest = line.partition("|")
                state, _, reason = rest.partition("|")
                found.setdefault(job.strip(), (state.split()[0] if state.strip() else "UNKNOWN", reason.strip()))
    except (OSError, subprocess.SubprocessError):
        pass
    return found


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """The scheduler's state of each job id (``123``, ``123_4``); unknown ids are left out."""
    return {job: state for job, (state, _) in slurm_jobs(job_ids).items()}


def slurm_alive(state: str, reason: str) -> bool:
    """Pending or running, and able to run: a job pending on a dependency that can never be met
    (its teacher's job failed; submitted without --kill-on-invalid-dep) would wait forever."""
    return state in SLURM_ALIVE and not (state == "PENDING" and reason == NEVER_SATISFIED)


def _stuck(state: str, reason: str) -> bool:
    return state == "PENDING" and reason == NEVER_SATISFIED


def job_states(jobs: dict[str, dict]) -> dict[str, str]:
    """run_id -> ``alive`` (its recorded job is pending or running), ``stuck`` (a SLURM job that
    waits on a dependency that can never be met: not alive, but still queued) or ``dead``; one
    question to the scheduler for all the SLURM jobs."""
    result = {}
    slurm = {rid: job["job_id"] for rid, job in jobs.items() if job["executor"] == "slurm"}
    states = slurm_jobs(list(slurm.values()))
    for run_id, job in jobs.items():
        if job["executor"] == "local":
            live = job.get("host") == platform.node() and _pid_alive(int(job["job_id"]))
            result[run_id] = "alive" if live else "dead"
        else:
            state = states.get(job["job_id"], ("", ""))
            result[run_id] = "alive" if slurm_alive(*state) else "stuck" if _stuck(*state) else "dead"
    return result


def alive(jobs: dict[str, dict], include_stuck: bool = False) -> dict[str, bool]:
    """run_id -> whether its recorded job is alive (pending or running); with ``include_stuck``,
    a SLURM job stuck on a dependency that can never be met counts too (it is still queued)."""
    return {run_id: state == "alive" or (include_stuck and state == "stuck")
            for run_id, state in job_states(jobs).items()}
