"""The one job class a SLURM job runs: ``run_one`` on the node, checkpointable.

On preemption or a time limit, SLURM sends USR2; submitit calls ``checkpoint`` and requeues a
fresh copy of this job, which resumes from the run's last training checkpoint (``run_one`` does
that by itself). Once ``checkpoint`` has been called, whatever goes wrong in this process (SLURM
terminating it as it requeues the job) is an interruption, not a failure: the run is told so
through the ``preempted`` function it is given, and records no error. A run that already has its
``final.json`` returns it unchanged, so a requeue can never produce a second result.
"""

from __future__ import annotations

import os

import submitit


class RunJob(submitit.helpers.Checkpointable):
    """``RunJob()(run, out_dir)`` executes the resolved run (``RunSpec.to_dict()``) into ``out_dir``."""

    def __init__(self) -> None:
        self.preempted = False

    def __call__(self, run: dict, out_dir: str) -> dict:
        import signal
        from pathlib import Path

        from kdbench import store
        from kdbench.errors import UserError
        from kdbench.spec import parse_run
        from runners.attempt import StaleAttempt
        from runners.run import record_load_failure, run_one

        # submitit already ignores SIGTERM in this process (SLURM sends it before USR2 on
        # preemption). Ignoring it at the OS level as well makes the children inherit that, so the
        # `scontrol requeue` that submitit runs on USR2 is not killed by a late SIGTERM (a race seen
        # on the local cluster: the job then ended FAILED instead of being requeued).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            spec = parse_run(run, str(Path(out_dir) / "run.json"))  # imports the run's plugins
        except UserError as error:  # recorded, so that status says failed, with the reason
            record_load_failure(Path(out_dir) / "run.json", out_dir, error)
            raise
        try:
            record = run_one(spec, out_dir, source=str(Path(out_dir) / "run.json"), preempted=lambda: self.preempted)
        except StaleAttempt:
            # Superseded by a later attempt of this job (runners.attempt; the reason is on stderr and in
            # the run's stale.log): exit without a result, so submitit writes nothing over the job's own.
            os._exit(3)
        failure = store.teacher_check_failure(store.read_run(out_dir)) if spec.role == "teacher" else None
        if failure:  # the job fails, so SLURM never starts the students that wait on it (afterok)
            raise RuntimeError(f"teacher {spec.name} is complete but failed its teacher gate: it {failure}")
        return {k: v for k, v in record.items() if k in ("status", "run_id", "metrics")}

    def checkpoint(self, run: dict, out_dir: str) -> submitit.helpers.DelayedSubmission:
        self.preempted = True
        return submitit.helpers.DelayedSubmission(RunJob(), run, out_dir)
