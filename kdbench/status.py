"""``kdbench status`` and ``kdbench cancel``: each run's state from the store and the scheduler."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

from kdbench import jobs, store
from kdbench.study import Study
from kdbench.table import text_table


def run_states(study: Study, results: str | Path) -> list[dict]:
    """One row per run: the store's state, refined by whether its recorded job is alive.

    States: complete, failed, diverged, corrupt, running (its job is pending or running),
    interrupted (started, no live job, no result: a relaunch resumes it), blocked (submitted, but
    its job ended unstarted because a teacher failed: SLURM cancelled it; ``launch --retry-failed``
    submits teacher and student again), missing (never started). ``reason`` says which teacher
    failed for blocked runs, and for missing runs that a launch held back for that reason.
    """
    with store.gc_paused():
        return run_states_of(study, scan(study, results))


def scan(study: Study, results: str | Path) -> dict[str, tuple[store.RunFiles, dict | None]]:
    """run_id -> (its directory's files and state, its job record), reading each directory once:
    one listing of the study's folder, one of each run directory, one read of each file needed."""
    root = os.path.join(os.fspath(results), study.name)
    present = store.list_names(root)
    scanned = {}
    with store.gc_paused():
        for planned in study.runs:
            if planned.run_id not in present:
                scanned[planned.run_id] = (store.RunFiles("missing"), None)
                continue
            run_dir = os.path.join(root, planned.run_id)
            files = store.read_run(run_dir, store.list_names(run_dir))
            scanned[planned.run_id] = (files, jobs.read_job(Path(run_dir)) if jobs.JOB in files.names else None)
    return scanned


def run_states_of(study: Study, scanned: dict[str, tuple[store.RunFiles, dict | None]]) -> list[dict]:
    """``run_states`` from a ``scan``: one question to the scheduler for all the recorded jobs."""
    records = {run_id: job for run_id, (_, job) in scanned.items()}
    live = jobs.alive({k: v for k, v in records.items() if v})
    states: dict[str, str] = {}
    for planned in study.runs:
        state = scanned[planned.run_id][0].state
        if state in ("started", "missing") and live.get(planned.run_id):
            state = "running"
        elif state == "started":
            state = "interrupted"
        states[planned.run_id] = state
    reasons = {}
    # A run depends on at most its teacher, and a teacher on nothing (load_study lists teachers
    # first, too): no state this loop sets is one it reads, so the study's order will do.
    for planned in study.runs:
        if states[planned.run_id] != "missing":
            continue
        failed = next((d for d in planned.depends_on if states.get(d) in ("failed", "diverged", "corrupt", "blocked")),
                      None)
        if failed is None:
            continue
        reasons[planned.run_id] = f"teacher {failed} {states[failed]}"
        if records.get(planned.run_id):  # its job ended without starting: SLURM cancelled it
            states[planned.run_id] = "blocked"
    rows = []
    for planned in study.runs:
        job = records.get(planned.run_id) or {}
        rows.append({"run_id": planned.run_id, "name": planned.name, "stage": planned.stage,
                     "state": states[planned.run_id], "executor": job.get("executor"), "job_id": job.get("job_id"),
                     "reason": reasons.get(planned.run_id)})
    return rows


def format_status(study: Study, rows: list[dict]) -> str:
    reasons = any(r.get("reason") for r in rows)
    lines = text_table(("run_id", "name", "stage", "state", "job") + (("reason",) if reasons else ()),
                       [(r["run_id"], r["name"], r["stage"], r["state"],
                         f"{r['executor']}:{r['job_id']}" if r["job_id"] else "-")
                        + ((r.get("reason") or "",) if reasons else ()) for r in rows])
    counts = Counter(r["state"] for r in rows)
    lines.append("")
    lines.append(f"study {study.name}: {len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(lines)


def cancel(study: Study, results: str | Path) -> list[str]:
    """Cancel every run whose recorded job is alive; returns their run ids."""
    root = Path(results) / study.name
    records = {p.run_id: jobs.read_job(root / p.run_id) for p in study.runs}
    # Jobs that wait on a teacher that failed are not alive, but still queued: cancelled as well.
    live = jobs.alive({k: v for k, v in records.items() if v}, include_stuck=True)
    cancelled, slurm_ids = [], []
    for run_id, is_alive in live.items():
        if not is_alive:
            continue
        job = records[run_id]
        if job["executor"] == "local":
            try:
                os.kill(int(job["job_id"]), signal.SIGTERM)
            except ProcessLookupError:
                continue
        else:
            slurm_ids.append(job["job_id"])
        cancelled.append(run_id)
    if slurm_ids:
        subprocess.run(["scancel", *slurm_ids], check=False, capture_output=True, timeout=60)
    return cancelled
