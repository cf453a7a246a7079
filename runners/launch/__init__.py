"""Launchers: the executor interface (executor.py), the local and SLURM executors, the job
class a SLURM job runs (job.py), job records across executors (jobs.py) and the launch itself
(launcher.py)."""
