"""``kdbench launch``: submit a study's runs that still need doing, stage by stage.

Idempotent: complete runs are skipped, runs whose recorded job is alive are not resubmitted,
failed runs are retried only with ``retry_failed``, and a lock on the study's results directory
serialises concurrent launches (the second waits, then finds nothing left to submit). What to do
is decided once per launch, under the lock. Before anything is written: the options are checked,
the preflight runs (runners.preflight: files, locations, shapes) and the executor checks the
resources (SLURM: a node of the partition must hold a run). Before anything is submitted, the
weight files the runs download are fetched here (runners.weights; SLURM jobs run offline).

Each stage (teachers, then students) is handed to the executor in batches that share their
pending dependencies, so a student baseline, which needs no teacher, never waits behind one.
Stages planned from results (kdbench.expand.Waiting): a local launch plans the study again once
its runs end; a SLURM launch submits a continuation job that does (runners.launch.continuation).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from kdbench import store
from kdbench.errors import Problems, UserError
from kdbench.expand import PlannedRun, Study, reload
from kdbench.safeio import open_no_follow
from kdbench.sbatch import SITE_KEYS, check_site_value
from kdbench.schema import Checker, did_you_mean, safe_name
from runners.launch import jobs
from runners.launch.executor import Executor
from runners.launch.local import LocalExecutor
from runners.launch.slurm import SlurmExecutor


@dataclass
class LaunchOptions:
    executor: str = "local"           # local | slurm
    dry_run: bool = False             # decide and report, submit nothing
    retry_failed: bool = False        # resubmit failed, diverged and kd_inactive runs
    parallel: int = 1                 # local: runs at a time
    resources: dict = field(default_factory=dict)   # overrides of the study's resources (None = not given)
    array_parallelism: int = 64       # slurm: array tasks running at once
    progress: bool = True             # local: a progress bar
    model_check: bool = True          # preflight: locations and shapes against the models
    data_check: bool = True           # preflight: dataset roots and teacher checkpoint files
    ignore_teacher_check: bool = False  # run the students of a teacher that failed its teacher gate
    fetch: bool = True                # download the runs' weight files here first (runners.weights)


@dataclass
class Decision:
    planned: PlannedRun
    state: str                        # its state in the store
    action: str                       # submit | skip-complete | skip-in-flight | skip-failed | blocked
    job: str = ""                     # its recorded job: alive | stuck | dead, "" if none


def check_flags(options: LaunchOptions) -> None:
    """Every option checked, without the study: before any work or output (every problem at once)."""
    problems = Problems()
    if options.executor not in jobs.EXECUTORS:
        problems.add(UserError(f"--executor: {options.executor!r} is not valid"
                               f"{did_you_mean(options.executor, jobs.EXECUTORS)}; valid: {', '.join(jobs.EXECUTORS)}"))
    if options.parallel < 1:
        problems.add(UserError(f"--parallel: must be >= 1, got {options.parallel}"))
    if options.array_parallelism < 1:
        problems.add(UserError(f"--array-parallelism: must be >= 1, got {options.array_parallelism}"))
    for key, value in options.resources.items():
        if value is None:
            continue
        flag = f"--{key.replace('_', '-')}"
        if key == "partition":
            if not safe_name(value):
                problems.add(UserError(f"--partition: {value!r} must be letters, digits, '_', '-' or '.'"))
        elif key in SITE_KEYS:
            problems.get(check_site_value, Checker(flag), key, value, "")
        elif not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "gpus" else 1):
            problems.add(UserError(f"{flag}: must be a whole number {'>= 0' if key == 'gpus' else '>= 1'}, "
                                   f"got {value!r}"))
    problems.raise_any()


def check_options(study: Study, options: LaunchOptions) -> Executor:
    """The executor for these options; every option checked before any work or output."""
    check_flags(options)
    given = {k: v for k, v in options.resources.items() if v is not None}
    resources = replace(study.resources, **given)
    keys = {key: f"--{key.replace('_', '-')}" if key in given else f"{study.path}: resources.{key}"
            for key in ("partition", "gpus", "nodes", "cpus", "mem_gb")}
    if options.executor == "local":
        if resources.nodes > 1:  # the local executor's runs are processes on this machine
            raise UserError(f"{keys['nodes']}: {resources.nodes} nodes per run need --executor slurm "
                            "(the local executor runs each run on this machine)")
        _check_precisions_here(study)
        return LocalExecutor(resources, options.parallel, options.progress, study.name, options.ignore_teacher_check)
    return SlurmExecutor(resources, study.name, options.array_parallelism, keys)


def _check_precisions_here(study: Study) -> None:
    """Runs that train here (the local executor) at a precision this machine cannot run (fp16 on a
    CPU) are refused now, not one by one as they start. A SLURM job checks on its node."""
    from runners.precision import check_precision

    seen = set()
    for planned in study.runs:
        signature = (planned.run.schedule.precision, planned.run.device)
        if signature not in seen:
            seen.add(signature)
            check_precision(planned.run, f"{study.path}: run {planned.name}: schedule.precision")


def _check_batch_splits(study: Study, executor: Executor) -> None:
    """A SLURM run of several tasks (one per GPU, on every node) splits its global batch between
    them: every training run's batch size must divide evenly, found before anything is submitted
    rather than in the job (after the partition's capacity: a run that fits no node is that first)."""
    if not isinstance(executor, SlurmExecutor):
        return
    resources, keys = executor.resources, executor.keys
    tasks = max(1, resources.gpus) * resources.nodes
    for planned in study.runs:
        schedule = planned.run.schedule
        if tasks > 1 and schedule.iterations and schedule.batch_size % tasks:
            key = keys["nodes"] if resources.nodes > 1 else keys["gpus"]
            raise UserError(f"{key}: run {planned.name}: schedule.batch_size {schedule.batch_size} (images per "
                            f"iteration, over all GPUs) does not split evenly over {tasks} tasks "
                            f"({resources.nodes} node(s) x {max(1, resources.gpus)})")


@contextlib.contextmanager
def study_lock(directory: Path):
    """An exclusive lock on ``directory/.launch.lock``, held by one launch at a time."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = os.fdopen(open_no_follow(directory / ".launch.lock", os.O_RDWR | os.O_CREAT), "r+")  # no link
    except OSError as error:  # a read-only or full results directory: nothing can be recorded there
        raise UserError(f"{directory}: cannot write the study's results directory ({error.strerror}); "
                        f"choose another --results") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"kdbench launch: waiting for another launch of {directory.name} to finish", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def decide(study: Study, retry_failed: bool, ignore_teacher_check: bool = False) -> list[Decision]:
    """What to do with each run, from the store and the recorded jobs (one question per executor).
    A student whose teacher run is complete but failed its teacher gate (``teacher.expect``) is
    blocked, unless ``ignore_teacher_check``."""
    scanned = store.scan(study.directory, [p.run_id for p in study.runs])
    job_states = jobs.job_states(jobs.records(scanned))
    decisions: dict[str, Decision] = {}
    for planned in study.runs:
        state, job = scanned[planned.run_id].state, job_states.get(planned.run_id, "")
        if state == "complete":
            action = "skip-complete"
        elif job == "alive":
            action = "skip-in-flight"
        elif state in store.ERROR_STATES and not retry_failed:
            action = "skip-failed"
        else:
            action = "submit"
        decisions[planned.run_id] = Decision(planned, state, action, job)
    for decision in decisions.values():  # a student whose teacher cannot complete is blocked
        teachers = [decisions[d] for d in decision.planned.depends_on]
        gated = not ignore_teacher_check and any(
            store.teacher_check_failure(scanned[d]) for d in decision.planned.depends_on)
        if decision.action == "submit" and (gated or any(t.action == "skip-failed" for t in teachers)):
            decision.action = "blocked"
    return list(decisions.values())


def batches(study: Study, decisions: list[Decision]) -> list[tuple[tuple[str, ...], list[PlannedRun]]]:
    """The runs to submit as (pending dependencies, runs): stage by stage, in batches that share
    their pending dependencies."""
    todo = [d for d in decisions if d.action == "submit"]
    complete = {d.planned.run_id for d in decisions if d.state == "complete"}
    found = []
    for stage in dict.fromkeys(d.planned.stage for d in todo):
        by_after: dict[tuple[str, ...], list[PlannedRun]] = {}
        for decision in todo:
            if decision.planned.stage == stage:
                pending = tuple(sorted(d for d in decision.planned.depends_on if d not in complete))
                by_after.setdefault(pending, []).append(decision.planned)
        found += list(by_after.items())
    return found


def submit(study: Study, decisions: list[Decision], executor: Executor) -> None:
    """Hand the runs to submit to the executor (``batches``). A run resubmitted while its earlier
    job still waits on a teacher that failed has that job cancelled first (it could never run)."""
    todo = [d for d in decisions if d.action == "submit"]
    stuck = {d.planned.run_id: store.read_job(study.directory / d.planned.run_id) for d in todo if d.job == "stuck"}
    jobs.cancel_runs({run_id: job for run_id, job in stuck.items() if job})
    for after, runs in batches(study, decisions):
        executor.submit(runs, study.directory, after)


def describe(study: Study, decisions: list[Decision], executor: SlurmExecutor) -> list[str]:
    """What a SLURM launch would submit (``launch --executor slurm --dry-run``): each array, its
    size and throttle, resources, dependencies and where its logs go."""
    lines: list[str] = []
    earlier: dict[str, str] = {}
    for number, (after, runs) in enumerate(batches(study, decisions), 1):
        lines += [f"[{number}] " + line if i == 0 else line
                  for i, line in enumerate(executor.describe(runs, study.directory, after, earlier))]
        earlier.update({p.run_id: f"array [{number}]" for p in runs})
    for waiting in study.waiting:   # what a real launch adds behind them (runners.launch.continuation)
        lines.append(f"then a continuation job (1 CPU, afterany on the jobs of the {len(waiting.needs)} run(s) it "
                     f"needs) launches the study again for {waiting.stage}: {waiting.why}")
    return lines


def prepare_weights(study: Study, decisions: list[Decision], options: LaunchOptions) -> None:
    """The weight files of the runs to submit, fetched (and verified) on this host before anything
    is submitted. SLURM jobs run offline: there, a file still missing (``--no-fetch``) refuses
    the launch instead of failing on a compute node after the queue wait."""
    from runners import weights
    from runners.preflight import study_weights

    todo = {d.planned.run_id for d in decisions if d.action == "submit"}
    if not todo or not (options.fetch or options.executor == "slurm"):
        return
    needed = [file for run_id, files in study_weights(study).items() if run_id in todo for file in files]
    if options.fetch:
        weights.fetch(needed, progress=options.progress)
    if options.executor == "slurm":
        weights.require_cached(needed)


def launch(study: Study, options: LaunchOptions) -> list[Decision]:
    """Check, then submit what needs submitting (local: and run it); what was decided per run
    (``summary`` counts the actions)."""
    from runners.preflight import check_study

    executor = check_options(study, options)
    if options.model_check or options.data_check:  # nothing is submitted or written before it
        check_study(study, models=options.model_check, files=options.data_check)
    if options.dry_run:
        _check_batch_splits(study, executor)
        return decide(study, options.retry_failed, options.ignore_teacher_check)
    executor.check()
    _check_batch_splits(study, executor)
    with study_lock(study.directory):
        decisions = _submit_and_wait(study, options, executor)
        while study.waiting and isinstance(executor, LocalExecutor):
            # Later stages (a tune stage's choice, an equal-budget baseline) are planned from the
            # results just written: the study is planned again until nothing new can be submitted.
            study = reload(study)
            new = tuple(p for p in study.runs if p.run_id not in decisions)
            if new and (options.model_check or options.data_check):  # the runs checked before stand
                check_study(replace(study, runs=new), models=options.model_check, files=options.data_check)
            more = _submit_and_wait(study, options, executor, set(decisions))
            if not any(d.action == "submit" for d in more.values()):
                break
            decisions.update(more)
        if study.waiting and isinstance(executor, SlurmExecutor):
            _continue_on_slurm(study, options, executor)
    return list(decisions.values())


class Continuation:
    """``Continuation()(study path, results root, launch options as a dict)``: the launch, again,
    in a SLURM job (runners.launch.continuation)."""

    def __call__(self, path: str, results: str, options: dict) -> dict:
        from kdbench.expand import load_study

        return summary(launch(load_study(path, results), LaunchOptions(**options)))


def _continue_on_slurm(study: Study, options: LaunchOptions, executor: SlurmExecutor) -> None:
    """Later stages wait on runs whose jobs are queued: a continuation job launches the study again
    once they end (runners.launch.continuation)."""
    from runners.launch.continuation import continue_later

    job_id = continue_later(study, options, executor, Continuation())
    if job_id is not None:
        print(f"kdbench launch: {study.name}: later stages wait on results; SLURM job {job_id} launches the "
              "study again once the runs they need have ended (afterany)", file=sys.stderr)


def _submit_and_wait(study: Study, options: LaunchOptions, executor: Executor,
                     seen: set[str] = frozenset()) -> dict[str, Decision]:
    """Decide, fetch weights, submit and (local) wait; the decisions of runs not in ``seen``."""
    decisions = [d for d in decide(study, options.retry_failed, options.ignore_teacher_check)
                 if d.planned.run_id not in seen]
    prepare_weights(study, decisions, options)
    submit(study, decisions, executor)
    executor.wait()
    return {d.planned.run_id: d for d in decisions}


def summary(decisions: list[Decision]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for decision in decisions:
        counts[decision.action] = counts.get(decision.action, 0) + 1
    return counts
