"""The one job class that a scheduler runs: execute a run, checkpointable.

On preemption or a time limit, SLURM sends USR2; submitit calls ``checkpoint`` and requeues a
fresh copy of this job, which resumes from the run's last training checkpoint (``execute`` does
that by itself). A run that already has its ``final.json`` returns it unchanged, so a requeue can
never produce a second result.
"""

from __future__ import annotations

import submitit

_PREEMPTED = False


def preempted() -> bool:
    """True once the scheduler has asked this job to checkpoint: whatever goes wrong from then on
    (SLURM terminating the job's processes as it requeues it) is an interruption, not a failure."""
    return _PREEMPTED


class RunJob(submitit.helpers.Checkpointable):
    """``RunJob()(run, out_dir)`` executes the resolved run into ``out_dir``."""

    def __call__(self, run: dict, out_dir: str) -> dict:
        import signal

        from runners.train import execute

        # submitit already ignores SIGTERM in this process (SLURM sends it before USR2 on
        # preemption). Ignoring it at the OS level as well makes the children inherit that, so the
        # `scontrol requeue` that submitit runs on USR2 is not killed by a late SIGTERM (a race seen
        # on the local cluster: the job then ended FAILED instead of being requeued).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return {k: v for k, v in execute(run, out_dir).items() if k in ("status", "run_id", "metrics")}

    def checkpoint(self, run: dict, out_dir: str) -> submitit.helpers.DelayedSubmission:
        global _PREEMPTED
        _PREEMPTED = True
        return submitit.helpers.DelayedSubmission(RunJob(), run, out_dir)
