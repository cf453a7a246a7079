"""The local executor: each run in a subprocess here (``kdbench run``), a few at a time.

``submit`` queues runs with their dependencies; ``after_pass`` starts them as slots free up and
their dependencies complete, and returns when every queued run has ended: the launcher then plans
the study's later stages from their results. A run whose dependency ends
without a result, or whose teacher failed its teacher gate, is never started (its status says
which teacher and why). The job id is the
subprocess's pid, recorded when it starts; a job is alive while that process lives on this host.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from kdbench import store
from kdbench.expand import PlannedRun, Study
from kdbench.safeio import open_no_follow
from kdbench.states import JobState
from kdbench.study import Resources
from kdbench.vocab import State
from runners.contention import PARALLEL_ENV
from runners.launch import worker
from runners.launch.executor import Executor, write_run_file


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class LocalExecutor(Executor):
    """Subprocesses on this machine, ``parallel`` at a time, each with ``resources.cpus`` threads
    (as a SLURM job gets: the thread count is the study's, never this machine's)."""

    name = "local"

    def __init__(self, resources: Resources, parallel: int = 1, progress: bool = True, label: str = "",
                 ignore_teacher_check: bool = False):
        self.parallel = parallel
        self.ignore_teacher_check = ignore_teacher_check
        self.threads = resources.cpus
        self.progress = progress
        self.label = label
        self.queue: list[tuple[PlannedRun, Path, tuple[str, ...]]] = []
        self.worker: worker.Worker | None = None  # forks the runs (runners.launch.worker), once started

    def check(self, study: Study, scheduler: bool = True) -> None:
        """Runs that train here at a precision this machine cannot run (fp16 on a CPU) are refused
        now, not one by one as they start."""
        from runners.precision import check_precision

        seen = set()
        for planned in study.runs:
            signature = (planned.run.schedule.precision, planned.run.device)
            if signature not in seen:
                seen.add(signature)
                check_precision(planned.run, f"{study.path}: run {planned.name}: schedule.precision")

    def submit(self, runs: list[PlannedRun], directory: Path, after: tuple[str, ...]) -> None:
        self.queue.extend((planned, directory, after) for planned in runs)
        if runs and self.worker is None and worker.enabled():  # its imports overlap the launcher's work
            self.worker = worker.Worker(self._environment())

    def after_pass(self, study: Study, relaunch) -> bool:
        """Run what was submitted; then the launcher plans the later stages here."""
        self.wait()
        return True

    def wait(self) -> None:
        """Start the queued runs as slots free up and their dependencies complete; return when
        every one has ended."""
        pending = {planned.run_id: (planned, directory, after) for planned, directory, after in self.queue}
        self.queue = []
        running: dict[str, tuple[subprocess.Popen, object]] = {}
        progress = _progress(len(pending), self.label, self.progress)
        ended = 0
        while pending or running:
            for run_id, (process, log) in list(running.items()):
                if process.poll() is not None:
                    del running[run_id]
                    log.close()
                    ended += 1
                    progress.update(1)
            for run_id, (planned, directory, after) in list(pending.items()):
                states = [self._dependency(directory, dep, pending, running, self.ignore_teacher_check)
                          for dep in after]
                if "ended" in states:  # a teacher without a result: its students never start
                    del pending[run_id]
                    progress.update(1)
                elif all(s == State.COMPLETE for s in states) and len(running) < self.parallel:
                    del pending[run_id]
                    at_once = min(self.parallel, len(pending) + len(running) + 1)   # this one, the others left
                    running[run_id] = self._start(planned, directory, at_once)
            if pending or running:
                time.sleep(0.2)
        progress.close()

    @staticmethod
    def _dependency(directory: Path, run_id: str, pending: dict, running: dict, ignore_check: bool) -> str:
        """``complete``, ``waiting`` (queued or running here or elsewhere) or ``ended`` (no result,
        or a teacher that failed its teacher gate, unless ``ignore_check``)."""
        if run_id in pending or run_id in running:
            return "waiting"
        files = store.read_run(directory / run_id)
        if files.state == State.COMPLETE:
            return "complete" if ignore_check or store.teacher_check_failure(files) is None else "ended"
        if files.job and LocalExecutor.record_alive(files.job):
            return "waiting"  # an earlier launch's run, still going: its result decides
        return "ended"

    def _start(self, planned: PlannedRun, directory: Path, at_once: int) -> tuple[subprocess.Popen, object]:
        """Start one run; ``at_once``: the runs this launch may run beside it, itself included."""
        run_file = write_run_file(directory, planned, self.threads)
        run_dir = directory / planned.run_id
        log = os.fdopen(open_no_follow(run_dir / "run.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a")  # no link
        argv = ["run", str(run_file), "--out", str(run_dir)]
        env = {**self._environment(), PARALLEL_ENV: str(at_once)}   # recorded beside its timings (runners.contention)
        pid = self.worker.start(argv, env, str(run_dir / "run.log")) if self.worker else None
        process = _Forked(pid) if pid else subprocess.Popen(
            [sys.executable, "-m", "kdbench.cli", *argv],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        store.write_job(run_dir, self.name, str(process.pid))
        return process, log

    def _environment(self) -> dict[str, str]:
        """A run's environment. The run sets its own thread count (run.json's `threads`); OpenMP's
        pools follow it too."""
        return {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}

    @classmethod
    def job_states(cls, job_ids: list[str]) -> dict[str, JobState]:
        """By pid; a pid means something only on the host that recorded it (``record_alive``). A
        local run is never queued: its process runs from the start."""
        return {job_id: JobState("alive") if _pid_alive(int(job_id)) else JobState("dead") for job_id in job_ids}

    @staticmethod
    def record_alive(job: dict) -> bool:
        """Whether a local job record's process is alive: on this host, by its pid."""
        return job["executor"] == "local" and job.get("host") == platform.node() and _pid_alive(int(job["job_id"]))

    @classmethod
    def cancel(cls, job_ids: list[str]) -> None:
        for job_id in job_ids:
            try:
                os.kill(int(job_id), signal.SIGTERM)
            except ProcessLookupError:
                pass


class _Forked:
    """A run the worker forked: not this process's child, so it is watched by its pid."""

    def __init__(self, pid: int):
        self.pid = pid

    def poll(self) -> int | None:
        return None if _pid_alive(self.pid) else 0


class _Quiet:
    def update(self, n):  # tqdm's interface
        pass

    def close(self):
        pass


def _progress(total: int, name: str, enabled: bool):
    if not enabled or total == 0:
        return _Quiet()
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="run", file=sys.stderr, dynamic_ncols=True)
