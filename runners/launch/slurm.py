"""The SLURM executor, through submitit: each batch one job array, behind its dependencies
(``afterok``, and SLURM cancels the batch when a dependency fails); a run with several GPUs is one
job of one task per GPU, joined by mmengine's SLURM launcher.

Job states come from squeue (which knows why a pending job waits), then sacct for jobs that have
left it. A job pending on a dependency that can never be met (its teacher failed; submitted
without ``--kill-on-invalid-dep``) is ``stuck``: not alive, but still queued.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from kdbench import store
from kdbench.errors import UserError
from kdbench.expand import PlannedRun
from kdbench.study import Resources
from runners.launch.executor import Executor, run_data, write_run_file
from runners.model_facts import cache_root

# The states (squeue(1), JOB STATE CODES) of a job that holds an allocation or is still queued,
# held ones included: its run must not be submitted again. STOPPED (SIGSTOP: the allocation is
# kept) and SPECIAL_EXIT (requeued and held) are seen on the local cluster. PREEMPTED is not here:
# it is an end ("terminated due to preemption"); a job SLURM requeues after a preemption is
# PENDING or REQUEUED. A requeue after a node failure shows PENDING (its previous run ended NODE_FAIL).
ALIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT", "RESV_DEL_HOLD",
         "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING", "STAGE_OUT"}
NEVER_SATISFIED = "DependencyNeverSatisfied"


def slurm_jobs(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """The scheduler's (state, reason) of each job id (``123``, ``123_4``); unknown ids are left
    out. squeue first (it knows why a pending job waits), then sacct for jobs that have left it."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    found: dict[str, tuple[str, str]] = {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            job, _, rest = line.partition("|")
            state, _, reason = rest.partition("|")
            found[job.strip()] = (state.strip(), reason.strip())
        missing = [j for j in job_ids if j not in found]
        if missing and shutil.which("sacct"):
            out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,Reason", "-j", ",".join(missing)],
                                 capture_output=True, text=True, timeout=30).stdout
            for line in out.splitlines():
                job, _, rest = line.partition("|")
                state, _, reason = rest.partition("|")
                found.setdefault(job.strip(), (state.split()[0] if state.strip() else "UNKNOWN", reason.strip()))
    except (OSError, subprocess.SubprocessError):
        pass
    return found


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """The scheduler's state of each job id; unknown ids are left out."""
    return {job: state for job, (state, _) in slurm_jobs(job_ids).items()}


def _gpus_in(gres: str) -> int:
    """``gpu:2``, ``gpu:a100:4(S:0-1)``, ``gpu:2,shard:8`` -> the node's GPU count."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def _nodes() -> tuple[dict[str, list[tuple[int, int, int]]], str | None]:
    """{partition: [(GPUs, CPUs, memory MB) per node]} and the default partition, from sinfo."""
    if shutil.which("sinfo") is None:
        raise UserError("--executor slurm: sinfo is not on PATH (no SLURM client here)")
    result = subprocess.run(["sinfo", "-h", "-N", "-o", "%P|%G|%c|%m"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["sinfo failed"])[-1]
        raise UserError(f"--executor slurm: cannot reach the SLURM controller: {reason}")
    nodes: dict[str, list[tuple[int, int, int]]] = {}
    default = None
    for line in result.stdout.splitlines():
        partition, gres, cpus, memory = line.split("|")
        if partition.endswith("*"):
            partition = default = partition[:-1]
        nodes.setdefault(partition, []).append((_gpus_in(gres), int(cpus), int(memory.rstrip("+") or 0)))
    return nodes, default


def check_resources(resources: Resources, keys: dict[str, str]) -> None:
    """The partition exists and one of its nodes can hold a run (GPUs, CPUs for one task per GPU,
    memory); otherwise a one-line error naming where the culprit was set (``keys``: resource ->
    ``--gpus`` or ``study.yaml: resources.gpus``)."""
    nodes, default = _nodes()
    partition = resources.partition or default
    if partition not in nodes:
        raise UserError(f"{keys['partition']}: {partition!r} is not a partition of this cluster; "
                        f"valid: {', '.join(sorted(nodes))}")
    need = (resources.gpus, resources.cpus * max(1, resources.gpus), resources.mem_gb * 1024)
    if any(all(have >= want for have, want in zip(node, need)) for node in nodes[partition]):
        return
    best = max(nodes[partition])
    culprit = next((key for index, key in enumerate(("gpus", "cpus", "mem_gb"))
                    if not any(node[index] >= need[index] for node in nodes[partition])), "gpus")
    raise UserError(f"{keys[culprit]}: a run asks for {resources.gpus} GPU(s), {need[1]} CPU(s), "
                    f"{resources.mem_gb} GB, but no node of partition {partition!r} has that (largest: "
                    f"{best[0]} GPU(s), {best[1]} CPU(s), {best[2] // 1024} GB); lower --gpus/--cpus/--mem-gb")


class SlurmExecutor(Executor):
    """One submitit job array per batch; ``array_parallelism`` array tasks run at once."""

    name = "slurm"

    def __init__(self, resources: Resources, study_name: str, array_parallelism: int = 64,
                 resource_keys: dict[str, str] | None = None):
        self.resources = resources
        self.study_name = study_name
        self.array_parallelism = array_parallelism
        self.keys = {"partition": "--partition", **{k: f"resources.{k}" for k in ("gpus", "cpus", "mem_gb")},
                     **(resource_keys or {})}

    def check(self) -> None:
        check_resources(self.resources, self.keys)

    def executor_for(self, directory: Path, stage: str, dependency: list[str]):
        """The submitit executor of one array: resources, dependencies, the job's environment."""
        import submitit

        executor = submitit.AutoExecutor(folder=str(directory / ".submitit" / "%j"), cluster="slurm")
        resources, gpus = self.resources, self.resources.gpus
        parameters = {
            "name": f"kdbench-{self.study_name}-{stage}",
            "timeout_min": resources.time_min,
            "mem_gb": resources.mem_gb,
            "cpus_per_task": resources.cpus,
            "tasks_per_node": max(1, gpus),             # one task per GPU (mmengine's slurm launcher)
            "nodes": 1,
            "slurm_array_parallelism": self.array_parallelism,
            "slurm_signal_delay_s": min(120, max(20, resources.time_min * 60 // 10)),
        }
        if gpus:
            parameters["gpus_per_node"] = gpus
        if resources.partition:
            parameters["slurm_partition"] = resources.partition
        if dependency:
            # kill-on-invalid-dep: when a teacher's job fails, SLURM cancels its students' jobs (reason
            # DependencyNeverSatisfied) instead of leaving them pending forever; status shows them blocked.
            parameters["slurm_additional_parameters"] = {"dependency": "afterok:" + ":".join(dependency),
                                                         "kill_on_invalid_dep": "yes"}
        # One OpenMP/MKL thread per CPU the job was given: threads beyond its CPUs slow every job on
        # the node (seen: 10x slower steps on an oversubscribed node).
        setup = ["export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} MKL_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}"]
        # Compute nodes often have no internet: the job reads the weights the launch fetched into
        # this host's cache (a shared file system) and may not download (runners.weights).
        setup.append(f"export KDBENCH_CACHE={shlex.quote(str(cache_root().resolve()))} KDBENCH_OFFLINE=1")
        if gpus > 1:
            # mmengine's SLURM launcher; its rendezvous port defaults to 29500 for every job, so two
            # multi-GPU jobs sharing a node would meet there: each job gets a port from its id.
            setup.append("export KDBENCH_LAUNCHER=slurm")
            setup.append("export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))")
        parameters["slurm_setup"] = setup
        executor.update_parameters(**parameters)
        return executor

    def submit(self, runs: list[PlannedRun], directory: Path, after: tuple[str, ...]) -> None:
        import submitit

        from runners.launch.job import RunJob

        dependency = sorted({job["job_id"] for dep in after
                             if (job := store.read_job(directory / dep)) and job["executor"] == self.name})
        executor = self.executor_for(directory, runs[0].stage, dependency)
        submitted = []
        try:
            with executor.batch():
                for planned in runs:
                    write_run_file(directory, planned, self.resources.cpus)
                    submitted.append((planned, executor.submit(RunJob(), run_data(planned, self.resources.cpus),
                                                               str(directory / planned.run_id))))
        except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as error:
            lines = str(error).strip().splitlines()
            raise UserError(f"sbatch refused the {runs[0].stage} array of {self.study_name}: "
                            f"{lines[-1] if lines else error}") from None
        for planned, job in submitted:
            store.write_job(directory / planned.run_id, self.name, job.job_id)

    @classmethod
    def job_states(cls, job_ids: list[str]) -> dict[str, str]:
        states = slurm_jobs(job_ids)
        result = {}
        for job_id in job_ids:
            state, reason = states.get(job_id, ("", ""))
            stuck = state == "PENDING" and reason == NEVER_SATISFIED
            result[job_id] = "stuck" if stuck else "alive" if state in ALIVE else "dead"
        return result

    @classmethod
    def cancel(cls, job_ids: list[str]) -> None:
        if job_ids:
            subprocess.run(["scancel", *job_ids], check=False, capture_output=True, timeout=60)

