"""What the SLURM executor (runners.launch.slurm) asks SLURM for, read from the sbatch script that
submitit would submit: no cluster and no GPU needed."""

from pathlib import Path

import pytest

from kdbench.study import Resources
from runners.launch.slurm import SlurmExecutor

pytest.importorskip("submitit")

RESOURCES = {"gpus": 2, "cpus": 3, "mem_gb": 4, "time_min": 30}


def executor_for(folder, resources: dict, stage: str, study: str, dependency: list[str], array_parallelism=2):
    return SlurmExecutor(Resources(**resources), study, array_parallelism).executor_for(folder, stage, dependency)


def sbatch_lines(executor, runs: int) -> list[str]:
    """The script submitit writes for an array of ``runs`` jobs (one job when ``runs`` is 1)."""
    from submitit.slurm.slurm import _make_sbatch_string

    slurm = executor._executor
    parameters = {**slurm.parameters, **({"map_count": runs} if runs > 1 else {})}
    return _make_sbatch_string(command="python -u -m submitit.core._submit FOLDER", folder=slurm.folder,
                               **parameters).splitlines()


def test_a_two_gpu_run_asks_for_one_task_per_gpu_behind_its_teachers_in_a_throttled_array(tmp_path):
    """Guarantee: A multi-GPU run is one job of one task per GPU with one result."""
    executor = executor_for(tmp_path, RESOURCES, "student", "grid", ["12_0", "13_1"])
    lines = sbatch_lines(executor, runs=3)
    assert "#SBATCH --ntasks-per-node=2" in lines
    assert "#SBATCH --gpus-per-node=2" in lines
    assert "#SBATCH --cpus-per-task=3" in lines and "#SBATCH --nodes=1" in lines
    assert "#SBATCH --dependency=afterok:12_0:13_1" in lines
    assert "#SBATCH --kill-on-invalid-dep=yes" in lines
    assert "#SBATCH --array=0-2%2" in lines  # 3 runs, at most 2 at a time
    assert "#SBATCH --job-name=kdbench-grid-student" in lines
    # mmengine's SLURM launcher in every task, one OpenMP thread per CPU of the task.
    assert "export KDBENCH_LAUNCHER=slurm" in lines
    assert "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} MKL_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}" in lines
    # Each multi-task job its own rendezvous port: two such jobs on one node must not meet.
    assert any(line.startswith("export MASTER_PORT=") and "SLURM_JOB_ID" in line for line in lines)
    assert executor._executor._num_tasks() == 2
    srun = next(line for line in lines if line.startswith("srun "))
    assert srun.endswith("python -u -m submitit.core._submit FOLDER")


@pytest.mark.parametrize("gpus, tasks", [(0, 1), (1, 1)])
def test_a_run_on_at_most_one_gpu_is_one_task_without_the_distributed_launcher(tmp_path, gpus, tasks):
    executor = executor_for(tmp_path, {**RESOURCES, "gpus": gpus}, "teacher", "grid", [])
    lines = sbatch_lines(executor, runs=1)
    assert f"#SBATCH --ntasks-per-node={tasks}" in lines
    assert any(line.startswith("#SBATCH --gpus-per-node") for line in lines) == (gpus == 1)
    assert not any(line.startswith("#SBATCH --dependency") or "kill-on-invalid-dep" in line for line in lines)
    assert not any("KDBENCH_LAUNCHER" in line or "MASTER_PORT" in line for line in lines)
    assert not any(line.startswith("#SBATCH --array") for line in lines)


@pytest.mark.parametrize("gpus", [1, 4])
def test_a_multi_node_run_is_one_job_of_one_task_per_gpu_on_every_node_meeting_on_its_first_node(tmp_path, gpus):
    """Guarantee: A run on several nodes is one job of one task per GPU on each node, meeting on its first node; more
    nodes than the partition has that fit, or `--executor local`, are refused in one line."""
    executor = executor_for(tmp_path, {**RESOURCES, "gpus": gpus, "nodes": 3}, "student", "grid", [])
    lines = sbatch_lines(executor, runs=2)
    assert "#SBATCH --nodes=3" in lines and f"#SBATCH --ntasks-per-node={gpus}" in lines
    assert f"#SBATCH --gpus-per-node={gpus}" in lines and "#SBATCH --cpus-per-task=3" in lines
    assert executor._executor._num_tasks() == 3 * gpus  # one process group across the nodes
    assert "export KDBENCH_LAUNCHER=slurm" in lines
    assert 'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)' in lines
    assert "#SBATCH --array=0-1%2" in lines  # each run of the array is such a job


def test_the_partition_and_the_signal_before_the_time_limit_follow_the_resources(tmp_path):
    executor = executor_for(tmp_path, {**RESOURCES, "partition": "gpu-a100", "time_min": 5}, "teacher", "grid", [])
    lines = sbatch_lines(executor, runs=1)
    assert "#SBATCH --partition=gpu-a100" in lines
    assert "#SBATCH --time=5" in lines
    assert "#SBATCH --signal=USR2@30" in lines  # a tenth of the time limit, at least 20 s
    assert Path(executor._executor.folder) == tmp_path / ".submitit" / "%j"


def test_a_batch_that_does_not_split_over_the_tasks_of_every_node_is_refused_before_anything_is_written(tmp_path):
    from kdbench.errors import UserError
    from kdbench.stages import load_study
    from runners.launch.launcher import LaunchOptions, launch
    from tests.launch_helpers import write_study

    study = load_study(write_study(tmp_path, "split"), tmp_path / "results")  # batch_size 2 on every run

    def dry_run(**resources):  # a dry run asks nothing of the cluster: no SLURM needed
        return launch(study, LaunchOptions(executor="slurm", dry_run=True, model_check=False, data_check=False,
                                           progress=False, resources=resources))

    assert dry_run(gpus=1, nodes=2)  # 2 images over 2 tasks: fine
    with pytest.raises(UserError) as refused:
        dry_run(gpus=1, nodes=3)
    assert str(refused.value).startswith("--nodes: run ") and "schedule.batch_size 2" in str(refused.value)
    assert "over 3 tasks (3 node(s) x 1)" in str(refused.value)
    with pytest.raises(UserError, match=r"^--gpus: run .* over 4 tasks \(1 node\(s\) x 4\)"):
        dry_run(gpus=4)
    assert not list((tmp_path / "results").glob("**/*.json"))
