"""``kdbench launch --executor slurm`` on a real single-node SLURM cluster (tools/slurm/up.sh):
submitit arrays, teacher stages gating students, preemption with requeue and resume, relaunch."""

import subprocess
import time
from pathlib import Path

import pytest

from kdbench import jobs, store
from kdbench.launch import LaunchOptions, launch
from kdbench.status import run_states
from kdbench.study import load_study
from tests.launch_helpers import CWD, write_study

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slurm


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path_factory.getbasetemp() / "data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def wait_until(condition, timeout=240, what="condition", poll=0.5):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def settled(study, results):
    return all(r["state"] not in ("running", "missing", "interrupted") for r in run_states(study, results))


def sacct_times(job_id):
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "Start,End", "-j", job_id],
                         capture_output=True, text=True).stdout.split("\n")[0]
    return out.split("|")


def test_a_study_on_slurm_completes_with_every_result_and_teachers_gate_students(slurm_cluster, tmp_path):
    bad = {**CWD, "student_location": "decode_head.no_such_module"}
    path = write_study(tmp_path, "slurm_ok", methods={"cwd_logits": CWD, "bad": bad})
    results = tmp_path / "results"
    study = load_study(path, results)
    counts = launch(study, LaunchOptions(executor="slurm", results=str(results), progress=False))
    assert counts == {"submit": 4}
    wait_until(lambda: settled(study, results), what="the study to finish on SLURM")
    rows = {r["name"]: r for r in run_states(study, results)}
    assert {n: r["state"] for n, r in rows.items()} == {
        "teacher": "complete", "student_s0": "complete", "cwd_logits_s0": "complete", "bad_s0": "failed"}
    assert all(r["executor"] == "slurm" for r in rows.values())
    # The distilled student started only after its teacher's job ended (afterok).
    teacher_end = sacct_times(rows["teacher"]["job_id"])[1]
    student_start = sacct_times(rows["cwd_logits_s0"]["job_id"])[0]
    assert student_start >= teacher_end
    # Same run ids as a local launch would use, and a relaunch submits nothing.
    assert [p.run_id for p in load_study(path, "results").runs] == [p.run_id for p in study.runs]
    again = launch(study, LaunchOptions(executor="slurm", results=str(results), progress=False))
    assert again == {"skip-complete": 3, "skip-failed": 1}


def test_a_preempted_run_requeues_resumes_from_its_checkpoint_and_ends_with_one_result(slurm_cluster, tmp_path):
    import submitit

    path = write_study(tmp_path, "slurm_preempt", methods={}, baselines={"teacher": False, "student": True})
    # ~0.03 s per iteration here: 600 iterations leave the signal ~15 s to arrive after the first
    # checkpoint (150 left only ~4 s, and a loaded CI machine once finished the run first).
    text = path.read_text().replace("iterations: 4", "iterations: 600").replace("checkpoint_interval: 2",
                                                                                 "checkpoint_interval: 5")
    path.write_text(text)
    results = tmp_path / "results"
    study = load_study(path, results)
    assert [p.name for p in study.runs] == ["student_s0"]
    launch(study, LaunchOptions(executor="slurm", results=str(results), progress=False))
    run_dir = results / "slurm_preempt" / study.runs[0].run_id
    wait_until(lambda: (run_dir / "last_checkpoint").exists(), what="the first checkpoint", poll=0.1)
    assert store.run_state(run_dir) == "started"
    job_id = jobs.read_job(run_dir)["job_id"]
    job = submitit.SlurmJob(folder=str(results / "slurm_preempt" / ".submitit" / "%j"), job_id=job_id)
    job._interrupt()  # what SLURM does on preemption: SIGTERM, then USR2 -> checkpoint + requeue
    wait_until(lambda: store.run_state(run_dir) == "complete", what="the requeued run to complete")
    final = store.read_json(run_dir / "final.json")
    assert final["status"] == "complete" and final["resumed_from"].startswith("iter_")
    assert [m["iter"] for m in store.read_jsonl(run_dir / "metrics.jsonl")] == [600]
    # sacct -D lists every incarnation of the job: the first one ended REQUEUED.
    incarnations = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-o", "State", "-j", job_id],
                                  capture_output=True, text=True).stdout.split()
    assert incarnations[0] == "REQUEUED", incarnations
    assert not (run_dir / "error.json").exists()


def test_cancel_stops_a_studys_running_jobs_and_status_shows_them_interrupted(slurm_cluster, tmp_path):
    from kdbench.status import cancel

    path = write_study(tmp_path, "slurm_cancel", methods={}, baselines={"teacher": False, "student": True})
    path.write_text(path.read_text().replace("iterations: 4", "iterations: 5000"))
    results = tmp_path / "results"
    study = load_study(path, results)
    launch(study, LaunchOptions(executor="slurm", results=str(results), progress=False))
    run_dir = results / "slurm_cancel" / study.runs[0].run_id
    wait_until(lambda: (run_dir / "spec.json").exists(), what="the job to start")
    assert [r["state"] for r in run_states(study, results)] == ["running"]
    assert cancel(study, results) == [study.runs[0].run_id]
    job_id = jobs.read_job(run_dir)["job_id"]
    wait_until(lambda: jobs.slurm_states([job_id]).get(job_id, "").startswith("CANCELLED"), what="CANCELLED")
    assert [r["state"] for r in run_states(study, results)] == ["interrupted"]
    assert cancel(study, results) == []


@pytest.mark.parametrize("override, message", [
    ({"gpus": 3}, r"asks for 3 GPU\(s\).*largest: 2 GPU\(s\)"),
    ({"partition": "gpu-a100"}, r"--partition: 'gpu-a100' is not a partition of this cluster; valid: debug"),
    ({"mem_gb": 100000}, r"100000 GB.*lower --gpus/--cpus/--mem-gb"),
])
def test_resources_beyond_the_partition_are_refused_before_anything_is_submitted(slurm_cluster, tmp_path,
                                                                                 override, message):
    from kdbench.errors import UserError

    study = load_study(write_study(tmp_path, "slurm_too_big"), tmp_path / "results")
    with pytest.raises(UserError, match=message):
        launch(study, LaunchOptions(executor="slurm", results=str(tmp_path / "results"), progress=False,
                                    resources=override))
    assert not list((tmp_path / "results" / "slurm_too_big").glob("*/job.json"))
    assert not list((tmp_path / "results" / "slurm_too_big").glob("*/run.json"))
