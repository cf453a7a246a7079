"""Each run's state: the results store's files, refined by whether its recorded job is alive.

States: complete, failed, diverged, kd_inactive (a distill term did nothing over its first steps:
zero, non-finite, or no gradient reaching the student), corrupt (final.json or error.json
unreadable), pending (its job waits in the scheduler's queue: held, behind a dependency, for
resources or priority, or requeued), running (its job holds an allocation), interrupted (started, no live job, no
result: a relaunch resumes it), blocked (submitted, but its job ended unstarted because its
teacher failed: SLURM cancelled it; ``launch --retry-failed`` submits teacher and student again),
missing (never started). ``reason``
says which teacher failed, for blocked runs and for missing runs a launch held back, and why a run
failed, diverged, was kd_inactive or is corrupt.

Whether a job is alive is the executors' answer (runners.launch.job_states: ``alive``, ``stuck``
or ``dead`` per run); this module only combines it with the files, so it stays free of any
scheduler.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from kdbench.expand import Study
from kdbench.store import RunFiles, error_line, teacher_check_failure
from kdbench.table import text_table
from kdbench.vocab import NOT_COMPLETED, State


class JobState(NamedTuple):
    """What an executor says about one recorded job."""

    liveness: str               # alive (queued or running), stuck (queued behind a dependency that
    #                             can never be met) or dead
    queued: bool = False        # alive but waiting in the scheduler's queue, holding no allocation
    scheduler: str = ""         # the scheduler's own words: "PENDING (Dependency)", "REQUEUED", "COMPLETING"


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    name: str
    stage: str
    state: State
    executor: str | None = None     # of its recorded job
    job_id: str | None = None
    reason: str | None = None       # "teacher <id> failed" for blocked and held-back runs; why a run
    #                                 failed, diverged, was kd_inactive or is corrupt (error.json's line)


def run_states(study: Study, scanned: dict[str, RunFiles], job_states: dict[str, JobState]) -> list[RunStatus]:
    """One status per run, in the study's order, from ``store.scan`` and the executors' job states.
    A run with a live job is pending (its job is queued: SLURM's PENDING or REQUEUED, with the
    reason SLURM gives) or running; its reason is the scheduler's words."""
    states: dict[str, str] = {}
    reasons = {}
    for planned in study.runs:
        state = scanned[planned.run_id].state
        job = job_states.get(planned.run_id)
        if state in (State.STARTED, State.MISSING) and job is not None and job.liveness == "alive":
            state = State.PENDING if job.queued else State.RUNNING
            if job.scheduler:
                reasons[planned.run_id] = job.scheduler
        elif state == State.STARTED:
            state = State.INTERRUPTED
        states[planned.run_id] = State(state)
    # A run depends on at most its teacher, and a teacher on nothing: no state this loop sets is
    # one it reads, so the study's order will do.
    for planned in study.runs:
        if states[planned.run_id] != State.MISSING:
            continue
        failed = next((d for d in planned.depends_on if states.get(d) in NOT_COMPLETED), None)
        gated = next(((d, why) for d in planned.depends_on
                      if (why := teacher_check_failure(scanned[d])) is not None), None)
        if failed is not None:
            reasons[planned.run_id] = f"teacher {failed} {states[failed]}"
            if scanned[planned.run_id].job:  # its job ended without starting: SLURM cancelled it
                states[planned.run_id] = State.BLOCKED
        elif gated is not None:  # held back by the teacher gate, whether or not it was submitted
            reasons[planned.run_id] = f"teacher {gated[0]} {gated[1]}"
            states[planned.run_id] = State.BLOCKED
    for planned in study.runs:
        if states[planned.run_id] in NOT_COMPLETED and planned.run_id not in reasons:
            reasons[planned.run_id] = error_line(scanned[planned.run_id])
    rows = []
    for planned in study.runs:
        job = scanned[planned.run_id].job or {}
        rows.append(RunStatus(planned.run_id, planned.name, planned.stage, states[planned.run_id],
                              job.get("executor"), job.get("job_id"), reasons.get(planned.run_id)))
    return rows


def format_status(study: Study, rows: list[RunStatus]) -> str:
    reasons = any(r.reason for r in rows)
    lines = text_table(("run_id", "name", "stage", "state", "job") + (("reason",) if reasons else ()),
                       [(r.run_id, r.name, r.stage, r.state, f"{r.executor}:{r.job_id}" if r.job_id else "-")
                        + ((r.reason or "",) if reasons else ()) for r in rows])
    counts = Counter(r.state for r in rows)
    lines.append("")
    lines.append(f"study {study.name}: {len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(lines)
