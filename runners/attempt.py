"""Which attempt of a run may write its results: the one that started last.

A run's job can run more than once: SLURM requeues it after a preemption or a node failure. When
a node's slurmd dies for good, SLURM requeues the job onto another node while the step on the dead
node can keep running (nothing is left there to stop it): two attempts of one run then train at
once, into one run directory. Each attempt therefore holds a token, recorded in the run directory
(``attempt.json``) when it starts: SLURM's job id (``<array job>_<task>`` for an array task) with
its restart count (``SLURM_RESTART_COUNT``, which SLURM raises on every requeue), or, outside SLURM,
the process id and host. Every write of a result file (spec.json, env.json, metrics.jsonl, the
checkpoints, the final weights, final.json, error.json) first checks that the token recorded is
still its own. An attempt that finds another's token has been superseded: it writes nothing more,
appends why to ``stale.log`` in the run directory, says it on stderr and stops (``StaleAttempt``).

What this covers: attempts that share the run directory on a file system whose renames are atomic
and visible to every node (the results root's own requirement). What it does not: a write already
under way when the newer attempt starts (the check comes before each write, not around it); the
newer attempt rewrites those files itself.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

from kdbench import store

ATTEMPT, STALE_LOG = "attempt.json", "stale.log"


class StaleAttempt(RuntimeError):
    """This attempt was superseded by a newer one of the same run: it must write nothing more."""


def token() -> dict:
    """This process's attempt: its SLURM job and restart count, host and pid."""
    env = os.environ
    job = (f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '0')}" if env.get("SLURM_ARRAY_JOB_ID")
           else env.get("SLURM_JOB_ID"))
    return {"job": job, "restart": int(env.get("SLURM_RESTART_COUNT") or 0) if job else 0,
            "host": platform.node(), "pid": os.getpid()}


def describe(attempt: dict) -> str:
    where = f"pid {attempt.get('pid')} on {attempt.get('host')}"
    if attempt.get("job"):
        return f"SLURM job {attempt['job']} attempt {attempt.get('restart', 0)} ({where})"
    return where


def supersedes(mine: dict, other: dict) -> bool:
    """Whether ``mine`` is a later attempt of the same SLURM job than ``other``: SLURM requeued the
    job, so ``other`` (still holding the run's lock: a step on a node that SLURM gave up on) is stale."""
    return bool(mine.get("job")) and other.get("job") == mine["job"] and int(other.get("restart", 0)) < mine["restart"]


def claim(out: Path) -> None:
    """Record this attempt as the run's current one (the run's lock is held, or was taken over)."""
    store.write_json_atomic(out / ATTEMPT, token())


def check(out: Path, what: str) -> None:
    """Before writing ``what`` into the run directory ``out``: raise StaleAttempt, logged, when the
    attempt recorded there is not this one. A directory without a record (written before attempts
    were recorded) is not checked."""
    recorded = store.read_json(out / ATTEMPT, out.parent)
    mine = token()
    if recorded is None or recorded == mine:
        return
    reason = (f"{out}: {describe(mine)} is no longer the run's current attempt ({describe(recorded)} started "
              f"after it): {what} not written; this attempt stops")
    print(f"kdbench: {reason}", file=sys.stderr, flush=True)
    try:
        store.append_jsonl(out / STALE_LOG, {"time": time.time(), "attempt": mine, "current": recorded,
                                             "refused": what})
    except OSError:
        pass
    raise StaleAttempt(reason)
