"""``kdbench launch``: submit a study's runs that still need doing, stage by stage.

Idempotent: complete runs are skipped, runs whose recorded job is alive are not resubmitted,
failed runs are retried only with ``retry_failed``, and a lock on the study's results directory
serialises concurrent launches (the second waits, then finds nothing left to submit). What to do
is decided once per pass, under the lock. Before anything is written: the options are checked
(once: ``check_flags``, then ``executor_for`` builds the launch's one executor), the preflight runs
(runners.preflight: files, locations, shapes) and the executor checks its runs and the resources
(SLURM: a node of the partition must hold a run). Before anything is submitted, the weight files
the runs download are fetched here (runners.weights; SLURM jobs run offline).

Each stage (teachers, then students) is handed to the executor in batches that share their
pending dependencies, so a student baseline, which needs no teacher, never waits behind one.
Stages planned from results (kdbench.stages): one loop for every executor. After each pass the
executor says whether the later stages can be planned now (``Executor.after_pass``: the local
executor waits for its runs, and the loop plans the study again and submits what became
plannable); a SLURM launch ends there, its continuation job launching the study again later
(runners.launch.continuation).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from kdbench import store
from kdbench.errors import Problems, UserError
from kdbench.expand import Study
from kdbench.safeio import open_no_follow
from kdbench.sbatch import SITE_KEYS, check_site_value
from kdbench.schema import Checker, did_you_mean, safe_name
from kdbench.stages import reload
from kdbench.vocab import ERROR_STATES, Action, State
from runners.launch import jobs
from runners.launch.executor import Decision, Executor, batches
from runners.launch.local import LocalExecutor
from runners.launch.slurm import SlurmExecutor


@dataclass
class LaunchOptions:
    executor: str = "local"           # local | slurm
    dry_run: bool = False             # decide and report, submit nothing
    retry_failed: bool = False        # resubmit failed, diverged and kd_inactive runs
    parallel: int | None = None       # local: runs at a time (None: not given, 1)
    resources: dict = field(default_factory=dict)   # overrides of the study's resources (None = not given)
    array_parallelism: int | None = None  # slurm: array tasks running at once (None: not given, 64)
    progress: bool = True             # local: a progress bar
    model_check: bool = True          # preflight: locations and shapes against the models
    data_check: bool = True           # preflight: dataset roots and teacher checkpoint files
    ignore_teacher_check: bool = False  # run the students of a teacher that failed its teacher gate
    fetch: bool = True                # download the runs' weight files here first (runners.weights)


def check_flags(options: LaunchOptions) -> None:
    """Every option checked, without the study: before any work or output (every problem at once)."""
    problems = Problems()
    if options.executor not in jobs.EXECUTORS:
        problems.add(UserError(f"--executor: {options.executor!r} is not valid"
                               f"{did_you_mean(options.executor, jobs.EXECUTORS)}; valid: {', '.join(jobs.EXECUTORS)}"))
    for flag, value, executor in (("--parallel", options.parallel, "local"),
                                  ("--array-parallelism", options.array_parallelism, "slurm")):
        if value is None:
            continue
        if options.executor != executor and options.executor in jobs.EXECUTORS:
            problems.add(UserError(f"{flag}: applies to --executor {executor} only, not {options.executor}"))
        elif value < 1:
            problems.add(UserError(f"{flag}: must be >= 1, got {value}"))
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


def executor_for(study: Study, options: LaunchOptions) -> Executor:
    """The launch's executor, for options ``check_flags`` accepted: the resources as the options
    override the study's, checked against what the executor can run."""
    given = {k: v for k, v in options.resources.items() if v is not None}
    resources = replace(study.resources, **given)
    keys = {key: f"--{key.replace('_', '-')}" if key in given else f"{study.path}: resources.{key}"
            for key in ("partition", "gpus", "nodes", "cpus", "mem_gb")}
    if options.executor == "local":
        if resources.nodes > 1:  # the local executor's runs are processes on this machine
            raise UserError(f"{keys['nodes']}: {resources.nodes} nodes per run need --executor slurm "
                            "(the local executor runs each run on this machine)")
        return LocalExecutor(resources, options.parallel or 1, options.progress, study.name,
                             options.ignore_teacher_check)
    return SlurmExecutor(resources, study.name, options.array_parallelism or 64, keys)


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
        recorded = job_states.get(planned.run_id)
        state, job = scanned[planned.run_id].state, recorded.liveness if recorded else ""
        if state == State.COMPLETE:
            action = Action.SKIP_COMPLETE
        elif job == "alive":
            action = Action.SKIP_IN_FLIGHT
        elif state in ERROR_STATES and not retry_failed:
            action = Action.SKIP_FAILED
        else:
            action = Action.SUBMIT
        decisions[planned.run_id] = Decision(planned, State(state), action, job)
    for decision in decisions.values():  # a student whose teacher cannot complete is blocked
        teachers = [decisions[d] for d in decision.planned.depends_on]
        gated = not ignore_teacher_check and any(
            store.teacher_check_failure(scanned[d]) for d in decision.planned.depends_on)
        if decision.action == Action.SUBMIT and (gated or any(t.action == Action.SKIP_FAILED for t in teachers)):
            decision.action = Action.BLOCKED
    return list(decisions.values())


def submit(study: Study, decisions: list[Decision], executor: Executor) -> None:
    """Hand the runs to submit to the executor (``batches``). A run resubmitted while its earlier
    job still waits on a teacher that failed has that job cancelled first (it could never run)."""
    todo = [d for d in decisions if d.action == Action.SUBMIT]
    stuck = {d.planned.run_id: store.read_job(study.directory / d.planned.run_id) for d in todo if d.job == "stuck"}
    jobs.cancel_runs({run_id: job for run_id, job in stuck.items() if job})
    for after, runs in batches(decisions):
        executor.submit(runs, study.directory, after)


def prepare_weights(study: Study, decisions: list[Decision], options: LaunchOptions, executor: Executor) -> None:
    """The weight files of the runs to submit, fetched (and verified) on this host before anything
    is submitted. An offline executor's jobs (SLURM) cannot download: there, a file still missing
    (``--no-fetch``) refuses the launch instead of failing on a compute node after the queue wait."""
    from runners import weights
    from runners.preflight import study_weights

    todo = {d.planned.run_id for d in decisions if d.action == Action.SUBMIT}
    if not todo or not (options.fetch or executor.offline):
        return
    needed = [file for run_id, files in study_weights(study).items() if run_id in todo for file in files]
    if options.fetch:
        weights.fetch(needed, progress=options.progress)
    if executor.offline:
        weights.require_cached(needed)


def launch(study: Study, options: LaunchOptions, executor: Executor | None = None) -> list[Decision]:
    """Check, then submit what needs submitting (local: and run it), stage by stage; what was
    decided per run (``summary`` counts the actions). ``executor``: the one ``executor_for`` built
    from these options (built here when not given)."""
    from runners.preflight import check_study

    if executor is None:
        check_flags(options)
        executor = executor_for(study, options)
    if options.model_check or options.data_check:  # nothing is submitted or written before it
        check_study(study, models=options.model_check, files=options.data_check)
    executor.check(study, scheduler=not options.dry_run)
    if options.dry_run:
        return decide(study, options.retry_failed, options.ignore_teacher_check)
    with study_lock(study.directory):
        return list(_passes(study, options, executor).values())


def _passes(study: Study, options: LaunchOptions, executor: Executor) -> dict[str, Decision]:
    """Decide and submit, pass after pass: after each, the executor runs what it was handed
    (``after_pass``) and, while later stages wait, the study is planned again from the results
    just written (a tune stage's choice, an equal-budget twin) until nothing new is planned. Runs
    a pass already decided are not decided again; the new ones are preflighted first."""
    from runners.preflight import check_study

    relaunch = Continuation(asdict(replace(options, progress=False, fetch=False, dry_run=False)))
    decisions: dict[str, Decision] = {}
    while True:
        new = [d for d in decide(study, options.retry_failed, options.ignore_teacher_check)
               if d.planned.run_id not in decisions]
        prepare_weights(study, new, options, executor)
        submit(study, new, executor)
        decisions.update((d.planned.run_id, d) for d in new)
        if not executor.after_pass(study, relaunch) or not study.waiting:
            return decisions
        study = reload(study)
        runs = tuple(p for p in study.runs if p.run_id not in decisions)
        if not runs:
            return decisions
        if options.model_check or options.data_check:  # the runs checked before stand
            check_study(replace(study, runs=runs), models=options.model_check, files=options.data_check)


class Continuation:
    """``Continuation(options as a dict)(study path, results root)``: the launch, again, in a SLURM
    job (runners.launch.continuation); nodes are offline, so it reads the weights cache."""

    def __init__(self, options: dict):
        self.options = options

    def __call__(self, path: str, results: str) -> dict:
        from kdbench.stages import load_study

        return summary(launch(load_study(path, results), LaunchOptions(**self.options)))


def summary(decisions: list[Decision]) -> dict[str, int]:
    """How many runs got each action."""
    counts: dict[str, int] = {}
    for decision in decisions:
        counts[decision.action] = counts.get(decision.action, 0) + 1
    return counts
