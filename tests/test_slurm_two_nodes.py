"""The local SLURM cluster as two nodes (tools/slurm/up.sh with KDBENCH_SLURM_NODES=2: each node's
slurmd in its own network namespace, address and host name; the results root shared as a cluster's
file system is): a run across both nodes trains, a two-node job is preempted and resumes, and an
attempt that SLURM gave up on (its node's slurmd died while it was stopped) writes nothing once a
newer attempt of its job has taken the run over."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from kdbench import store
from kdbench.stages import load_study
from runners.launch.jobs import status
from runners.launch.launcher import LaunchOptions, launch, summary
from tests.launch_helpers import dump_yaml, gate_study, process_alive, settled, slurm_states, wait_until, write_study

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.two_nodes]
NODES = ["kdbench-node1", "kdbench-node2"]


@pytest.fixture(scope="module")
def two_nodes(slurm_cluster):
    """The cluster as two nodes for this module's tests, one node again after them: in an exclusive
    turn (tests/conftest.py), so that no other test's job meets the switch."""
    with slurm_cluster.turn(exclusive=True):
        slurm_cluster.up(nodes=2)
        try:
            yield slurm_cluster
        finally:
            slurm_cluster.up()


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path_factory.getbasetemp() / "data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def sacct(job_id: str, fields: str) -> list[str]:
    """Every incarnation's ``fields`` (sacct -D: a requeued job's earlier runs too)."""
    return subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-o", fields, "-j", job_id], capture_output=True,
                          text=True).stdout.split()


def student_run(tmp_path: Path, name: str, nodes: int, gpus: int) -> tuple:
    """A student baseline of 4 iterations, batch 4 over ``nodes`` x ``gpus`` tasks, launched; its study."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_study(tmp_path, name, methods={}, baselines={"teacher": False, "student": True})
    spec = yaml.safe_load(path.read_text())
    spec["base"]["schedule"]["batch_size"] = 4  # 2 images per task: the PSP head's BatchNorm needs 2
    spec["resources"].update(nodes=nodes, gpus=gpus)
    path.write_text(dump_yaml(spec))
    study = load_study(path, tmp_path / "results")
    assert summary(launch(study, LaunchOptions(executor="slurm", progress=False))) == {"submit": 1}
    return study


def test_sinfo_shows_both_nodes_idle_each_with_its_own_address(two_nodes):
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T %o"], capture_output=True, text=True).stdout.split("\n")
    nodes = {line.split()[0]: line.split()[1:] for line in out if line.strip()}
    assert sorted(nodes) == NODES
    assert {state for state, _ in nodes.values()} <= {"idle", "mixed", "allocated", "completing"}
    assert sorted(address for _, address in nodes.values()) == ["10.77.0.2", "10.77.0.3"]


def test_a_run_across_two_nodes_trains_as_one_process_group_and_equals_two_processes_on_one_node(
        two_nodes, tmp_path):
    """Guarantee: A run with `resources.nodes: 2` trains on two nodes of the local cluster as one process group
    (gloo, joined at its first node), writes one result, and its weights equal those of the same global batch
    trained as two processes on one node.

    The same run (one run id: resources are not part of it) as one task on each of two nodes and
    as two tasks on one node. Tolerance: gloo's allreduce sums the two ranks' gradients in one
    order on either layout, so the weights are expected equal; with more ranks, or another
    reduction algorithm, the order (and the last bits) could differ, so the test allows 1e-6."""
    import torch

    across = student_run(tmp_path / "across", "across", nodes=2, gpus=0)
    beside = student_run(tmp_path / "beside", "beside", nodes=1, gpus=2)
    started = time.time()
    wait_until(lambda: settled(across) and settled(beside), timeout=600, what="both runs to finish")
    print(f"both runs finished {time.time() - started:.0f} s after their launch")
    dirs = [study.directory / study.runs[0].run_id for study in (across, beside)]
    assert [[r.state for r in status(s)] for s in (across, beside)] == [["complete"], ["complete"]]
    job = store.read_job(dirs[0])["job_id"]
    assert sacct(job, "NNodes,NodeList") == ["2|kdbench-node[1-2]"]  # the job's allocation: both nodes
    logs = across.directory / ".submitit" / job
    hosts = sorted(line.split("hostname=")[1].split(",")[0] for rank in (0, 1)
                   for line in (logs / f"{job}_{rank}_log.out").read_text().splitlines() if "hostname=" in line)
    assert hosts == NODES  # one process on each node
    rank0 = (logs / f"{job}_0_log.out").read_text()
    assert "Distributed training: True" in rank0 and "GPU number: 2" in rank0  # mmengine's world size
    final = store.read_json(dirs[0] / "final.json")
    assert (final["recipe"]["nodes"], final["recipe"]["processes"]) == (2, 2)
    assert (store.read_json(dirs[1] / "final.json")["recipe"]["nodes"], final["recipe"]["global_batch"]) == (1, 4)
    weights = [torch.load(d / "model_final.pth", weights_only=True) for d in dirs]
    largest = max((weights[0][k].double() - weights[1][k].double()).abs().max().item()
                  for k in weights[0] if weights[0][k].is_floating_point())
    print(f"largest weight difference, two nodes vs two processes on one node: {largest}")
    assert weights[0].keys() == weights[1].keys() and largest <= 1e-6
    assert final["metrics"] == store.read_json(dirs[1] / "final.json")["metrics"]


def test_a_preempted_two_node_job_requeues_resumes_from_its_checkpoint_and_ends_with_one_result(
        two_nodes, tmp_path):
    """Guarantee: A two-node SLURM job preempted at a gate after its first checkpoint requeues, resumes from that
    checkpoint on two nodes as the same job, and ends with one result."""
    import submitit

    release = tmp_path / "release"
    path = gate_study(tmp_path, "two_node_preempt", release)
    spec = yaml.safe_load(path.read_text())
    spec["base"]["schedule"]["batch_size"] = 4
    spec["resources"]["nodes"] = 2
    path.write_text(dump_yaml(spec))
    study = load_study(path, tmp_path / "results")
    launch(study, LaunchOptions(executor="slurm", progress=False))
    run_dir = study.directory / study.runs[1].run_id
    waiting = Path(f"{release}.waiting")
    try:
        wait_until(waiting.exists, timeout=600, what="the run to wait at the gate after its first checkpoint")
        assert (run_dir / "iter_2.pth").is_file()
        job_id = store.read_job(run_dir)["job_id"]
        job = submitit.SlurmJob(folder=str(study.directory / ".submitit" / "%j"), job_id=job_id)
        job._interrupt()  # SIGTERM, then USR2 -> checkpoint + requeue, as SLURM preempts
        wait_until(lambda: "REQUEUED" in sacct(job_id, "State"), timeout=300, what="the job to be requeued")
    finally:
        release.write_text("")
    wait_until(lambda: store.run_state(run_dir) == "complete", timeout=600, what="the requeued run to complete")
    wait_until(lambda: slurm_states([job_id]).get(job_id) == "COMPLETED", what="the job to end")
    final = store.read_json(run_dir / "final.json")
    assert final["resumed_from"] == "iter_2.pth" and final["attempt"]["restart"] == 1
    assert [m["iter"] for m in store.read_jsonl(run_dir / "metrics.jsonl")] == [4]
    assert sacct(job_id, "State,NNodes") == ["REQUEUED|2", "COMPLETED|2"]
    assert not (run_dir / "error.json").exists()


def test_an_attempt_slurm_gave_up_on_writes_nothing_once_the_requeued_attempt_has_taken_the_run_over(
        two_nodes, tmp_path):
    """Guarantee: When a node's slurmd dies while its step is stopped, the job requeued onto the other node takes
    the run over and writes the one `final.json`; the old step, resumed, writes nothing, logs why and exits.

    The distilled run waits at a gate after its first checkpoint; the test stops that process
    (SIGSTOP), kills its node's slurmd, lets SLURM requeue the job onto the other node (NODE_FAIL),
    opens the gate, and lets the new attempt finish. Then it resumes the old process (SIGCONT):
    at its next write it finds the run's current attempt is not its own, refuses, appends why to
    the run's stale.log and exits."""
    release = tmp_path / "release"
    study = load_study(gate_study(tmp_path, "stale_writer", release), tmp_path / "results")
    launch(study, LaunchOptions(executor="slurm", progress=False))
    run_dir = study.directory / study.runs[1].run_id
    waiting = Path(f"{release}.waiting")
    wait_until(waiting.exists, timeout=600, what="the run to wait at the gate after its first checkpoint")
    held = int(waiting.read_text())
    job_id = store.read_job(run_dir)["job_id"]
    node_a = store.read_json(run_dir / "attempt.json")["host"]
    node_b = next(n for n in NODES if n != node_a)
    os.kill(held, signal.SIGSTOP)
    try:
        os.kill(int((two_nodes.directory / "run" / f"slurmd-{node_a}.pid").read_text()), signal.SIGKILL)
        wait_until(lambda: "NODE_FAIL" in sacct(job_id, "State"), timeout=180, what="SLURM to see node A fail")
        release.write_text("")  # the new attempt may pass the gate
        wait_until(lambda: store.run_state(run_dir) == "complete", timeout=600, what="the new attempt to finish")
        final = store.read_json(run_dir / "final.json")
        assert (final["attempt"]["host"], final["attempt"]["restart"]) == (node_b, 1)
        assert final["resumed_from"] == "iter_2.pth"
        written = (run_dir / "final.json").read_bytes()
        assert process_alive(held)  # the old step outlived its slurmd, stopped
    finally:
        os.kill(held, signal.SIGCONT)
        wait_until(lambda: not process_alive(held), timeout=120, what="the old attempt to stop")
        two_nodes.up(nodes=2)  # node A's slurmd back
    stale = store.read_jsonl(run_dir / "stale.log")
    print(f"the old attempt's stale.log: {stale}")
    assert len(stale) == 1 and stale[0]["attempt"]["host"] == node_a and stale[0]["attempt"]["restart"] == 0
    assert stale[0]["current"]["host"] == node_b and stale[0]["refused"].startswith("the checkpoint after iteration")
    assert (run_dir / "final.json").read_bytes() == written  # exactly the new attempt's result
    assert sorted(p.name for p in run_dir.glob("final*.json")) == ["final.json"]
    assert [m["iter"] for m in store.read_jsonl(run_dir / "metrics.jsonl")] == [4]
    assert not (run_dir / "error.json").exists()
    assert [r.state for r in status(study)] == ["complete", "complete"]
