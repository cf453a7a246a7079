"""The one interface every executor implements: submit a batch of runs behind their dependencies,
say whether recorded jobs are alive, cancel them.

The launcher (runners.launch.launcher) decides what to submit, once per launch under the study's
lock, and hands each stage to an executor as batches that share their dependencies. An executor
writes each run's file (``run.json``), starts or queues what executes it (``kdbench run``, which
calls runners.run.run_one, or the SLURM job class, which calls it too) and records the job in the
run's ``job.json`` as soon as it has an id, so a launch killed half-way leaves records for exactly
what it submitted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from kdbench import store
from kdbench.expand import PlannedRun

RUN_FILE = "run.json"


class Executor(ABC):
    """What runs a study's runs: ``local`` (subprocesses here) or ``slurm`` (submitit)."""

    name: str = ""

    def check(self) -> None:  # noqa: B027  (an executor without limits checks nothing)
        """Refuse resources no node can give (a UserError), before anything is written."""

    @abstractmethod
    def submit(self, runs: list[PlannedRun], directory: Path, after: tuple[str, ...]) -> None:
        """Start or queue ``runs`` (run directories under ``directory``) to run once every run in
        ``after`` (run ids) has completed; a run whose dependency fails never runs. Each run's
        job is recorded (``store.write_job``) when it has an id."""

    def wait(self) -> None:  # noqa: B027  (a scheduler runs what was submitted: nothing to wait for)
        """Return when what was submitted has ended (local) or at once (a scheduler runs it)."""

    @classmethod
    @abstractmethod
    def job_states(cls, job_ids: list[str]) -> dict[str, str]:
        """``alive`` (pending or running), ``stuck`` (queued behind a dependency that can never be
        met) or ``dead`` for each job id this executor recorded."""

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
