"""The one interface every executor implements: submit a batch of runs behind their dependencies,
say whether recorded jobs are alive, cancel them.

The launcher (runners.launch.launcher) decides what to submit (a ``Decision`` per run), once per
pass under the study's lock, and hands each stage to an executor as batches that share their
dependencies (``batches``). After each pass, ``after_pass`` is the one place the executors differ
in how a study's later stages go on: the local executor waits for its runs, and the launcher plans
the stages again; SLURM submits a continuation job that launches the study again once they end. An executor
writes each run's file (``run.json``), starts or queues what executes it (``kdbench run``, which
calls runners.run.run_one, or the SLURM job class, which calls it too) and records the job in the
run's ``job.json`` as soon as it has an id, so a launch killed half-way leaves records for exactly
what it submitted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdbench import store
from kdbench.expand import PlannedRun, Study
from kdbench.states import JobState
from kdbench.vocab import Action, State

RUN_FILE = "run.json"


@dataclass
class Decision:
    planned: PlannedRun
    state: State                      # its state in the store
    action: Action
    job: str = ""                     # its recorded job: alive | stuck | dead, "" if none


def batches(decisions: list[Decision]) -> list[tuple[tuple[str, ...], list[PlannedRun]]]:
    """The runs to submit as (pending dependencies, runs): stage by stage, in batches that share
    their pending dependencies."""
    todo = [d for d in decisions if d.action == Action.SUBMIT]
    complete = {d.planned.run_id for d in decisions if d.state == State.COMPLETE}
    found = []
    for stage in dict.fromkeys(d.planned.stage for d in todo):
        by_after: dict[tuple[str, ...], list[PlannedRun]] = {}
        for decision in todo:
            if decision.planned.stage == stage:
                pending = tuple(sorted(d for d in decision.planned.depends_on if d not in complete))
                by_after.setdefault(pending, []).append(decision.planned)
        found += list(by_after.items())
    return found


class Executor(ABC):
    """What runs a study's runs: ``local`` (subprocesses here) or ``slurm`` (submitit)."""

    name: str = ""
    offline: bool = False             # its runs cannot download: weight files must be cached first

    @abstractmethod
    def check(self, study: Study, scheduler: bool = True) -> None:
        """Refuse runs this executor cannot run as planned (a UserError), before anything is written;
        with ``scheduler``, also resources no node can give (SLURM asks the controller: a dry run
        checks without it where none answers)."""

    @abstractmethod
    def submit(self, runs: list[PlannedRun], directory: Path, after: tuple[str, ...]) -> None:
        """Start or queue ``runs`` (run directories under ``directory``) to run once every run in
        ``after`` (run ids) has completed; a run whose dependency fails never runs. Each run's
        job is recorded (``store.write_job``) when it has an id."""

    @abstractmethod
    def after_pass(self, study: Study, relaunch: Callable[[str, str], object]) -> bool:
        """Once a launch's pass has handed its runs over: True when their results are in and the
        launcher should plan the study's later stages now (local: it waits for its runs to end);
        False when the launch ends here (SLURM: a study whose stages still wait gets a job that
        calls ``relaunch(study path, results root)`` once the runs they need have ended)."""

    def describe(self, study: Study, decisions: list[Decision]) -> list[str]:
        """What a dry run would hand the scheduler, as lines (none for an executor without one)."""
        return []

    @classmethod
    @abstractmethod
    def job_states(cls, job_ids: list[str]) -> dict[str, JobState]:
        """Each job id this executor recorded: ``alive`` (pending or running), ``stuck`` (queued
        behind a dependency that can never be met) or ``dead``, with what the scheduler says."""

    @classmethod
    @abstractmethod
    def cancel(cls, job_ids: list[str]) -> None:
        """Stop these jobs (pending or running)."""


def run_data(planned: PlannedRun, threads: int) -> dict:
    """What a run's job executes: its resolved spec with the thread count the study's resources
    give each run (``resources.cpus``), however many runs share the machine."""
    return {**planned.run.to_dict(), "threads": threads}


def write_run_file(directory: Path, planned: PlannedRun, threads: int) -> Path:
    """``run_data`` as ``<run dir>/run.json``: what its job executes."""
    run_dir = directory / planned.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN_FILE
    store.write_json_atomic(path, run_data(planned, threads))
    return path
