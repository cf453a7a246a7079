"""``kdbench launch``: submit a study's runs that still need doing, stage by stage.

Idempotent: complete runs are skipped, runs whose recorded job is alive are not resubmitted,
failed runs are retried only with ``retry_failed``, and a lock on the study's results directory
serialises concurrent launches (the second waits, then finds nothing left to submit).

``local`` runs each run in a subprocess (``kdbench run``), a few at a time, teachers first.
``slurm`` submits through submitit: one job array per stage, the students' array depending
(afterok) on the teacher jobs, so one launch submits the whole study and returns.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kdbench import jobs, store
from kdbench.errors import UserError
from kdbench.schema import safe_name
from kdbench.study import PlannedRun, Study


@dataclass
class LaunchOptions:
    executor: str = "local"           # local | slurm
    dry_run: bool = False             # print what would be submitted, submit nothing
    retry_failed: bool = False        # resubmit failed and diverged runs
    parallel: int = 1                 # local: runs at a time
    results: str = "results"
    resources: dict = field(default_factory=dict)   # overrides of the study's resources
    progress: bool = True


@dataclass
class Decision:
    planned: PlannedRun
    state: str                        # store state
    action: str                       # submit | skip-complete | skip-in-flight | skip-failed | blocked
    job: str = ""                     # its recorded job: alive | stuck | dead (jobs.job_states), "" if none


def study_dir(study: Study, results: str | Path) -> Path:
    return Path(results) / study.name


@contextlib.contextmanager
def study_lock(directory: Path, wait: bool = True):
    """An exclusive lock on ``directory/.launch.lock`` (held by one launch at a time)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / ".launch.lock", "w")
    except OSError as error:  # a read-only or full results directory: nothing can be recorded there
        raise UserError(f"{directory}: cannot write the study's results directory ({error.strerror}); "
                        f"choose another --results") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise UserError(f"{directory}: another kdbench launch of this study is running") from None
            print(f"kdbench launch: waiting for another launch of {directory.name} to finish", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def decide(study: Study, options: LaunchOptions) -> list[Decision]:
    """What to do with each run, from the store and the recorded jobs."""
    root = study_dir(study, options.results)
    records = {p.run_id: jobs.read_job(root / p.run_id) for p in study.runs}
    job_states = jobs.job_states({k: v for k, v in records.items() if v})  # one question to the scheduler
    decisions: dict[str, Decision] = {}
    for planned in study.runs:
        state = store.run_state(root / planned.run_id)
        if state == "complete":
            action = "skip-complete"
        elif job_states.get(planned.run_id) == "alive":
            action = "skip-in-flight"
        elif state in ("failed", "diverged") and not options.retry_failed:
            action = "skip-failed"
        else:
            action = "submit"
        decisions[planned.run_id] = Decision(planned, state, action, job_states.get(planned.run_id, ""))
    for decision in decisions.values():  # a student whose teacher cannot complete is blocked
        for dependency in decision.planned.depends_on:
            if decision.action == "submit" and decisions[dependency].action == "skip-failed":
                decision.action = "blocked"
    return list(decisions.values())


def _resources(study: Study, options: LaunchOptions) -> dict:
    resources = {**study.resources, "array_parallelism": 64,
                 **{k: v for k, v in options.resources.items() if v is not None}}
    partition = resources.get("partition")
    if partition is not None and not safe_name(partition):
        raise UserError(f"--partition: {partition!r} must be letters, digits, '_', '-' or '.'")
    for key in ("gpus", "cpus", "mem_gb", "time_min"):
        if not isinstance(resources[key], int) or resources[key] < (0 if key == "gpus" else 1):
            raise UserError(f"--{key.replace('_', '-')}: must be a whole number "
                            f"{'>= 0' if key == 'gpus' else '>= 1'}, got {resources[key]!r}")
    return resources


def launch(study: Study, options: LaunchOptions) -> dict:
    """Submit what needs submitting; returns counts per action (and, local, per final state)."""
    if options.executor not in ("local", "slurm"):
        raise UserError(f"--executor: {options.executor!r} is not valid; valid: local, slurm")
    resources = _resources(study, options)
    root = study_dir(study, options.results)
    if options.dry_run:
        decisions = decide(study, options)
        return _summary(decisions)
    if options.executor == "slurm" and any(d.action == "submit" for d in decide(study, options)):
        from kdbench.slurm import check_resources  # before the lock: a refused launch writes nothing

        check_resources(resources, _resource_keys(study, options))
    with study_lock(root):
        decisions = decide(study, options)
        todo = [d for d in decisions if d.action == "submit"]
        if options.executor == "local":
            _run_local(study, todo, root, resources, options)
        else:
            from kdbench.slurm import submit_study

            submit_study(study, todo, root, resources, options)
    return _summary(decisions)


def _resource_keys(study: Study, options: LaunchOptions) -> dict[str, str]:
    """Where each resource was set, for errors: its command-line option, else the study's key."""
    return {key: f"--{key.replace('_', '-')}" if options.resources.get(key) is not None
            else f"{study.path}: resources.{key}" for key in ("partition", "gpus", "cpus", "mem_gb")}


def _summary(decisions: list[Decision]) -> dict:
    counts: dict[str, int] = {}
    for decision in decisions:
        counts[decision.action] = counts.get(decision.action, 0) + 1
    return counts


def write_run_file(root: Path, planned: PlannedRun) -> Path:
    run_dir = root / planned.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "run.json"
    store.write_json_atomic(path, planned.run)
    return path


def _run_local(study: Study, todo: list[Decision], root: Path, resources: dict, options: LaunchOptions) -> None:
    """Teachers first, then students, ``options.parallel`` subprocesses at a time."""
    pending = {d.planned.run_id: d.planned for d in todo}
    failed: set[str] = set()
    running: dict[str, subprocess.Popen] = {}
    threads = max(1, (os.cpu_count() or 1) // max(1, options.parallel))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    progress = _progress(len(pending), study.name, options.progress)
    logs = {}
    while pending or running:
        for run_id, process in list(running.items()):
            if process.poll() is not None:
                del running[run_id]
                logs.pop(run_id).close()
                state = store.run_state(root / run_id)
                if state != "complete":
                    failed.add(run_id)
                progress.update(1)
                progress.set_postfix_str(f"{len(failed)} not complete")
        ready = [p for p in pending.values()
                 if all(store.run_state(root / d) == "complete" for d in p.depends_on)]
        blocked = [p for p in pending.values() if any(d in failed for d in p.depends_on)]
        for planned in blocked:
            del pending[planned.run_id]
            progress.update(1)
        for planned in ready[: max(0, options.parallel - len(running))]:
            del pending[planned.run_id]
            run_file = write_run_file(root, planned)
            log = open(root / planned.run_id / "run.log", "a")
            logs[planned.run_id] = log
            process = subprocess.Popen(
                [sys.executable, "-m", "kdbench.cli", "run", str(run_file), "--out", str(root / planned.run_id)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )
            jobs.write_job(root / planned.run_id, "local", str(process.pid))
            running[planned.run_id] = process
        if not ready and not running and pending:
            break  # waiting on runs that are in flight elsewhere: nothing more to do here
        time.sleep(0.2)
    progress.close()


class _Quiet:
    def update(self, n):  # noqa: D401 - tqdm's interface
        pass

    def set_postfix_str(self, s):
        pass

    def close(self):
        pass


def _progress(total: int, name: str, enabled: bool):
    if not enabled or total == 0:
        return _Quiet()
    from tqdm import tqdm

    return tqdm(total=total, desc=f"{name}", unit="run", file=sys.stderr, dynamic_ncols=True)
