"""The SLURM executor, through submitit: each batch one job array, behind its dependencies
(``afterok``, and SLURM cancels the batch when a dependency fails); a run with several GPUs is one
job of one task per GPU, on ``resources.nodes`` nodes (``gpus`` per node), joined by mmengine's
SLURM launcher.

Job states come from squeue (which knows why a pending job waits), then sacct for jobs that have
left it. A job pending on a dependency that can never be met (its teacher failed; submitted
without ``--kill-on-invalid-dep``) is ``stuck``: not alive, but still queued.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from kdbench import store
from kdbench.errors import UserError
from kdbench.expand import PlannedRun, Study
from kdbench.sbatch import as_parameters
from kdbench.states import JobState
from kdbench.study import Resources
from runners.launch import continuation
from runners.launch.executor import Decision, Executor, batches, run_data, write_run_file
from runners.model_facts import cache_root

# The states (squeue(1), JOB STATE CODES) of a job that holds an allocation or is still queued,
# held ones included: its run must not be submitted again. STOPPED (SIGSTOP: the allocation is
# kept) and SPECIAL_EXIT (requeued and held) are seen on the local cluster. PREEMPTED is not here:
# it is an end ("terminated due to preemption"); a job SLURM requeues after a preemption is
# PENDING or REQUEUED. A requeue after a node failure shows PENDING (its previous run ended NODE_FAIL).
ALIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT", "RESV_DEL_HOLD",
         "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING", "STAGE_OUT"}
# The alive states of a job that holds no allocation yet: it waits in the queue (a requeued job
# waits again; SPECIAL_EXIT and the holds wait for a person).
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT", "RESV_DEL_HOLD"}
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


def _gpus_in(gres: str) -> int:
    """``gpu:2``, ``gpu:a100:4(S:0-1)``, ``gpu:2,shard:8`` -> the node's GPU count."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def reachable() -> bool:
    """Whether a SLURM controller answers here (sinfo on PATH and answering)."""
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


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
    """The partition exists and ``resources.nodes`` of its nodes can each hold their part of a run
    (GPUs, CPUs for one task per GPU, memory); otherwise a one-line error naming where the culprit
    was set (``keys``: resource -> ``--gpus`` or ``study.yaml: resources.gpus``)."""
    nodes, default = _nodes()
    partition = resources.partition or default
    if partition not in nodes:
        raise UserError(f"{keys['partition']}: {partition!r} is not a partition of this cluster; "
                        f"valid: {', '.join(sorted(nodes))}")
    need = (resources.gpus, resources.cpus * max(1, resources.gpus), resources.mem_gb * 1024)
    fit = sum(all(have >= want for have, want in zip(node, need)) for node in nodes[partition])
    if fit >= resources.nodes:
        return
    if fit:
        per_node = " per node" if resources.nodes > 1 else ""
        raise UserError(f"{keys['nodes']}: a run asks for {resources.nodes} nodes of {resources.gpus} GPU(s), "
                        f"{need[1]} CPU(s), {resources.mem_gb} GB{per_node}, but partition {partition!r} has "
                        f"{fit} such node(s) ({len(nodes[partition])} in all); lower --nodes")
    best = max(nodes[partition])
    culprit = next((key for index, key in enumerate(("gpus", "cpus", "mem_gb"))
                    if not any(node[index] >= need[index] for node in nodes[partition])), "gpus")
    raise UserError(f"{keys[culprit]}: a run asks for {resources.gpus} GPU(s), {need[1]} CPU(s), "
                    f"{resources.mem_gb} GB{' per node' if resources.nodes > 1 else ''}, but no node of partition "
                    f"{partition!r} has that (largest: {best[0]} GPU(s), {best[1]} CPU(s), {best[2] // 1024} GB); "
                    "lower --gpus/--cpus/--mem-gb")


def log_folder(directory: Path) -> Path:
    """Where submitit keeps a study's job scripts and logs: ``<study dir>/.submitit/<job>_<task>/``
    (on the file system the nodes share, as the results are)."""
    return directory / ".submitit" / "%j"


class SlurmExecutor(Executor):
    """One submitit job array per batch; ``array_parallelism`` array tasks run at once."""

    name = "slurm"
    offline = True      # compute nodes often have no internet: a job reads the cache the launch filled

    def __init__(self, resources: Resources, study_name: str, array_parallelism: int = 64,
                 resource_keys: dict[str, str] | None = None):
        self.resources = resources
        self.study_name = study_name
        self.array_parallelism = array_parallelism
        self.keys = {"partition": "--partition", **{k: f"resources.{k}" for k in ("gpus", "nodes", "cpus", "mem_gb")},
                     **(resource_keys or {})}

    def check(self, study: Study, scheduler: bool = True) -> None:
        """With ``scheduler``, the partition's nodes can hold a run (``check_resources``). Then a
        run of several tasks (one per GPU, on every node) splits its global batch between them:
        every training run's batch size must divide evenly, found before anything is submitted
        rather than in the job (after the partition's capacity: a run that fits no node is that first)."""
        if scheduler:
            check_resources(self.resources, self.keys)
        resources, keys = self.resources, self.keys
        tasks = max(1, resources.gpus) * resources.nodes
        for planned in study.runs:
            schedule = planned.run.schedule
            if tasks > 1 and schedule.iterations and schedule.batch_size % tasks:
                key = keys["nodes"] if resources.nodes > 1 else keys["gpus"]
                raise UserError(f"{key}: run {planned.name}: schedule.batch_size {schedule.batch_size} (images per "
                                f"iteration, over all GPUs) does not split evenly over {tasks} tasks "
                                f"({resources.nodes} node(s) x {max(1, resources.gpus)})")

    def after_pass(self, study: Study, relaunch) -> bool:
        """Later stages wait on runs whose jobs are queued: a continuation job launches the study
        again once they end (runners.launch.continuation). The launch ends here."""
        if study.waiting:
            job_id = continuation.continue_later(study, self, relaunch)
            if job_id is not None:
                print(f"kdbench launch: {study.name}: later stages wait on results; SLURM job {job_id} launches "
                      "the study again once the runs they need have ended (afterany)", file=sys.stderr)
        return False

    def describe(self, study: Study, decisions: list[Decision]) -> list[str]:
        """What ``launch --executor slurm --dry-run`` would submit: each array, its size and
        throttle, resources, dependencies and where its logs go; whether the resources were checked
        against the cluster's nodes (they are when a controller answers here)."""
        checked = reachable()
        if checked:  # the dry run refuses what the launch would refuse
            self.check(study)
        lines: list[str] = []
        earlier: dict[str, str] = {}
        for number, (after, runs) in enumerate(batches(decisions), 1):
            lines += [f"[{number}] " + line if i == 0 else line
                      for i, line in enumerate(self.describe_array(runs, study.directory, after, earlier))]
            earlier.update({p.run_id: f"array [{number}]" for p in runs})
        for waiting in study.waiting:   # what a real launch adds behind them (runners.launch.continuation)
            lines.append(f"then a continuation job (1 CPU, afterany on the jobs of the {len(waiting.needs)} run(s) "
                         f"it needs) launches the study again for {waiting.stage}: {waiting.why}")
        note = ("the resources fit the cluster's nodes" if checked else
                "no SLURM controller answers here: the resources are not checked against its nodes")
        return ["would submit to SLURM:", *lines, f"({note})"]

    def parameters(self, stage: str, dependency: list[str]) -> dict:
        """submitit's parameters of one array: resources, the site's settings, dependencies, the
        job's environment."""
        resources, gpus = self.resources, self.resources.gpus
        parameters = {
            "name": f"kdbench-{self.study_name}-{stage}",
            "timeout_min": resources.time_min,
            "mem_gb": resources.mem_gb,
            "cpus_per_task": resources.cpus,
            "tasks_per_node": max(1, gpus),             # one task per GPU (mmengine's slurm launcher)
            "nodes": resources.nodes,                   # every task of every node: one process group
            "slurm_array_parallelism": self.array_parallelism,
            "slurm_signal_delay_s": min(120, max(20, resources.time_min * 60 // 10)),
        }
        if gpus:
            parameters["gpus_per_node"] = gpus
        if resources.partition:
            parameters["slurm_partition"] = resources.partition
        for key in ("account", "qos", "constraint", "exclude"):   # submitit's own parameters
            if getattr(resources, key) is not None:
                parameters[f"slurm_{key}"] = getattr(resources, key)
        extra = as_parameters(resources.sbatch)
        if resources.reservation is not None:
            extra["reservation"] = resources.reservation
        if dependency:
            # kill-on-invalid-dep: when a teacher's job fails, SLURM cancels its students' jobs (reason
            # DependencyNeverSatisfied) instead of leaving them pending forever; status shows them blocked.
            extra.update({"dependency": "afterok:" + ":".join(dependency), "kill_on_invalid_dep": "yes"})
        if extra:
            parameters["slurm_additional_parameters"] = extra
        # One OpenMP/MKL thread per CPU the job was given: threads beyond its CPUs slow every job on
        # the node (seen: 10x slower steps on an oversubscribed node).
        setup = ["export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} MKL_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}"]
        # Compute nodes often have no internet: the job reads the weights the launch fetched into
        # this host's cache (a shared file system) and may not download (runners.weights).
        setup.append(f"export KDBENCH_CACHE={shlex.quote(str(cache_root().resolve()))} KDBENCH_OFFLINE=1")
        if max(1, gpus) * resources.nodes > 1:
            # mmengine's SLURM launcher; its rendezvous port defaults to 29500 for every job, so two
            # multi-GPU jobs sharing a node would meet there: each job gets a port from its id.
            setup.append("export KDBENCH_LAUNCHER=slurm")
            setup.append("export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))")
            # The rendezvous is on the job's first node, as mmengine's launcher finds it, for the CPU
            # process group too (runners.train._init_cpu_ranks): one path for one node and several.
            setup.append('export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)')
        parameters["slurm_setup"] = setup
        return parameters

    def executor_for(self, directory: Path, stage: str, dependency: list[str]):
        """The submitit executor of one array."""
        import submitit

        executor = submitit.AutoExecutor(folder=str(log_folder(directory)), cluster="slurm")
        executor.update_parameters(**self.parameters(stage, dependency))
        return executor

    def describe_array(self, runs: list[PlannedRun], directory: Path, after: tuple[str, ...],
                       earlier: dict[str, str]) -> list[str]:
        """What ``submit`` would hand sbatch for this batch, as lines for ``launch --dry-run``:
        the array, its size and throttle, the resources and site settings, its dependencies
        (``earlier``: run id -> the label of the array a run is in, for runs submitted by the same
        launch) and where its logs go."""
        recorded = sorted({job["job_id"] for dep in after if dep not in earlier
                           and (job := store.read_job(directory / dep)) and job["executor"] == self.name})
        parameters = self.parameters(runs[0].stage, recorded)
        resources = self.resources
        waits = sorted({earlier[dep] for dep in after if dep in earlier}) + [f"job {j}" for j in recorded]
        site = " ".join(f"--{k}" if v is True else f"--{k}={v}" for k, v in resources.site().items())
        throttle = min(len(runs), self.array_parallelism)
        more = f" and {len(runs) - 8} more" if len(runs) > 8 else ""
        return [f"sbatch array {parameters['name']}: {len(runs)} task(s), at most {throttle} at once "
                 f"(--array=0-{len(runs) - 1}%{throttle})",
                 f"  per task: {resources.gpus} GPU(s), {resources.cpus} CPU(s) x {max(1, resources.gpus)} task(s)"
                 + (f" on each of {resources.nodes} nodes" if resources.nodes > 1 else "") + ", "
                 f"{resources.mem_gb} GB, {resources.time_min} min, partition "
                 f"{resources.partition or '(the cluster default)'}" + (f", {site}" if site else ""),
                 "  after: " + (", ".join(waits) + " complete (afterok; cancelled if one fails)" if waits
                                else "nothing (starts when scheduled)"),
                 f"  logs: {directory / '.submitit'}/<job>_<task>/<job>_<task>_0_log.out and _0_log.err",
                f"  runs: {', '.join(p.name for p in runs[:8])}{more}"]

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

    def submit_continuation(self, directory: Path, after: list[str], function, *args) -> str:
        """Submit ``function(*args)`` as one small job (1 CPU, no GPU, the study's memory and site
        settings) that starts once every job in ``after`` has ended, whatever its outcome (afterany);
        its job id. runners.launch.continuation."""
        import submitit

        parameters = self.parameters("continue", [])
        parameters.update(cpus_per_task=1, tasks_per_node=1, nodes=1, timeout_min=60)
        parameters.pop("gpus_per_node", None)
        parameters.pop("slurm_array_parallelism", None)
        extra = dict(parameters.get("slurm_additional_parameters", {}))
        extra["dependency"] = "afterany:" + ":".join(after)
        parameters["slurm_additional_parameters"] = extra
        executor = submitit.AutoExecutor(folder=str(log_folder(directory)), cluster="slurm")
        executor.update_parameters(**parameters)
        try:
            return executor.submit(function, *args).job_id
        except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as error:
            lines = str(error).strip().splitlines()
            raise UserError(f"sbatch refused the continuation of {self.study_name}: "
                            f"{lines[-1] if lines else error}") from None

    @classmethod
    def job_states(cls, job_ids: list[str]) -> dict[str, JobState]:
        states = slurm_jobs(job_ids)
        result = {}
        for job_id in job_ids:
            state, reason = states.get(job_id, ("", ""))
            stuck = state == "PENDING" and reason == NEVER_SATISFIED
            liveness = "stuck" if stuck else "alive" if state in ALIVE else "dead"
            said = f"{state} ({reason})" if reason and reason != "None" else state
            result[job_id] = JobState(liveness, state in QUEUED, f"slurm: {said}" if state else "")
        return result

    @classmethod
    def cancel(cls, job_ids: list[str]) -> None:
        if job_ids:
            subprocess.run(["scancel", *job_ids], check=False, capture_output=True, timeout=60)

