"""Submitting a study to SLURM through submitit: one job array per stage, students after their
teachers (afterok, cancelled by SLURM when a teacher fails), multi-GPU runs as one task per GPU
with mmengine's SLURM launcher."""

from __future__ import annotations

from pathlib import Path

from kdbench import jobs, store
from kdbench.errors import UserError


def _gpus_in(gres: str) -> int:
    """``gpu:2``, ``gpu:a100:4(S:0-1)``, ``gpu:2,shard:8`` -> the node's GPU count."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def check_resources(resources: dict, keys: dict[str, str] | None = None) -> None:
    """Before anything is submitted: the partition exists and one of its nodes can hold a run
    (GPUs, CPUs for one task per GPU, memory); otherwise a one-line error and nothing submitted.
    ``keys`` names where each resource was set (``--gpus`` or ``study.yaml: resources.gpus``)."""
    import shutil
    import subprocess

    keys = {"partition": "--partition", **{k: f"resources.{k}" for k in ("gpus", "cpus", "mem_gb")},
            **(keys or {})}

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
    partition = resources.get("partition") or default
    if partition not in nodes:
        raise UserError(f"{keys['partition']}: {partition!r} is not a partition of this cluster; "
                        f"valid: {', '.join(sorted(nodes))}")
    gpus, tasks = resources["gpus"], max(1, resources["gpus"])
    need = (gpus, resources["cpus"] * tasks, resources["mem_gb"] * 1024)
    if not any(g >= need[0] and c >= need[1] and m >= need[2] for g, c, m in nodes[partition]):
        best = max(nodes[partition])
        culprit = next((key for index, key in enumerate(("gpus", "cpus", "mem_gb"))
                        if not any(node[index] >= need[index] for node in nodes[partition])), "gpus")
        raise UserError(f"{keys[culprit]}: a run asks for {gpus} GPU(s), {need[1]} CPU(s), {resources['mem_gb']} GB, "
                        f"but no node of partition {partition!r} has that (largest: {best[0]} GPU(s), "
                        f"{best[1]} CPU(s), {best[2] // 1024} GB); lower --gpus/--cpus/--mem-gb")


def executor_for(root: Path, resources: dict, stage: str, study_name: str, dependency: list[str]):
    import submitit

    executor = submitit.AutoExecutor(folder=str(root / ".submitit" / "%j"), cluster="slurm")
    gpus = resources["gpus"]
    parameters = {
        "name": f"kdbench-{study_name}-{stage}",
        "timeout_min": resources["time_min"],
        "mem_gb": resources["mem_gb"],
        "cpus_per_task": resources["cpus"],
        "tasks_per_node": max(1, gpus),             # one task per GPU (mmengine's slurm launcher)
        "nodes": 1,
        "slurm_array_parallelism": resources.get("array_parallelism") or 64,
        "slurm_signal_delay_s": min(120, max(20, resources["time_min"] * 60 // 10)),
    }
    if gpus:
        parameters["gpus_per_node"] = gpus
    if resources.get("partition"):
        parameters["slurm_partition"] = resources["partition"]
    if dependency:
        # kill-on-invalid-dep: when a teacher's job fails, SLURM cancels its students' jobs (reason
        # DependencyNeverSatisfied) instead of leaving them pending forever; status shows them blocked.
        parameters["slurm_additional_parameters"] = {"dependency": "afterok:" + ":".join(dependency),
                                                     "kill_on_invalid_dep": "yes"}
    # One OpenMP/MKL thread per CPU the job was given: threads beyond its CPUs slow every job on
    # the node (seen: 10x slower steps on an oversubscribed node).
    setup = ["export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} MKL_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}"]
    if gpus > 1:
        # mmengine's SLURM launcher; its rendezvous port defaults to 29500 for every job, so two
        # multi-GPU jobs sharing a node would meet there: each job gets a port from its id.
        setup.append("export KDBENCH_LAUNCHER=slurm")
        setup.append("export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))")
    parameters["slurm_setup"] = setup
    executor.update_parameters(**parameters)
    return executor


def submit_study(study, todo: list, root: Path, resources: dict, options) -> dict[str, str]:
    """Submit the runs in ``todo`` (launch decisions, made under the study's lock), teachers first;
    record each job id. ``kdbench.launch.launch`` has checked ``resources`` (check_resources)."""
    job_ids: dict[str, str] = {}
    for planned in study.runs:  # teachers in flight from an earlier launch gate their students too
        record = jobs.read_job(root / planned.run_id)
        if record and record["executor"] == "slurm":
            job_ids[planned.run_id] = record["job_id"]
    # A run submitted again whose earlier job still waits on a teacher that failed (submitted
    # without --kill-on-invalid-dep): that job could never run; it is cancelled, not left queued.
    # Which those are, the decisions know: no second question to the scheduler.
    stuck = [job_ids[d.planned.run_id] for d in todo if d.job == "stuck" and d.planned.run_id in job_ids]
    if stuck:
        import subprocess

        subprocess.run(["scancel", *stuck], check=False, capture_output=True, timeout=60)

    def pending_dependencies(planned) -> tuple[str, ...]:
        return tuple(sorted(job_ids[dep] for dep in planned.depends_on
                            if dep in job_ids and store.run_state(root / dep) != "complete"))

    # One array per stage and dependency set: teachers first; a student baseline, which needs no
    # teacher, starts at once instead of waiting in its stage's array behind the teachers.
    stages = list(dict.fromkeys(d.planned.stage for d in todo))
    for stage in stages:
        in_stage = [d.planned for d in todo if d.planned.stage == stage]
        groups: dict[tuple[str, ...], list] = {}
        for planned in in_stage:
            groups.setdefault(pending_dependencies(planned), []).append(planned)
        for dependency, batch in groups.items():
            _submit_array(study, batch, root, resources, stage, list(dependency), job_ids)
    return job_ids


def _submit_array(study, batch: list, root: Path, resources: dict, stage: str, dependency: list[str],
                  job_ids: dict[str, str]) -> None:
    import submitit

    from kdbench.launch import write_run_file
    from runners.job import RunJob

    executor = executor_for(root, resources, stage, study.name, dependency)
    submitted = []
    try:
        with executor.batch():
            for planned in batch:
                write_run_file(root, planned)
                submitted.append((planned, executor.submit(RunJob(), planned.run, str(root / planned.run_id))))
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as error:
        lines = str(error).strip().splitlines()
        raise UserError(f"sbatch refused the {stage} array of {study.name}: "
                        f"{lines[-1] if lines else error}") from None
    for planned, job in submitted:
        jobs.write_job(root / planned.run_id, "slurm", job.job_id)
        job_ids[planned.run_id] = job.job_id
