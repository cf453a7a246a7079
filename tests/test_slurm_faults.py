"""Faults that ``kdbench launch --executor slurm`` survives, made for real on the local SLURM
cluster (tools/slurm/up.sh): a launcher killed between two array submissions, and a node's slurmd
killed while its job runs. Where a test must act while a job runs, the job waits at a gate the
test opens (tests/plugins/gate_kd.py), so no test races a job."""

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from kdbench import store
from kdbench.stages import load_study
from runners.launch.jobs import status
from runners.launch.launcher import LaunchOptions, launch, summary
from tests.launch_helpers import CWD, gate_study, process_alive, settled, slurm_states, wait_until, write_study

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path_factory.getbasetemp() / "data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def incarnations(job_id: str) -> list[str]:
    """The state of each run of a job, first to last (sacct -D lists the ones before a requeue)."""
    out = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-o", "State", "-j", job_id],
                         capture_output=True, text=True, timeout=60).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def sbatch_that_stops_at_the_second_call(directory: Path) -> Path:
    """A folder holding an ``sbatch`` that runs the real one on its first call. A later call writes
    ``blocked`` (its pid) and waits until the file ``go`` exists, then fails without submitting:
    the test kills the launcher while it waits."""
    real = shutil.which("sbatch")
    directory.mkdir()
    script = directory / "sbatch"
    script.write_text(f"""#!/bin/bash
calls=$(( $(cat {directory}/calls 2>/dev/null || echo 0) + 1 )); echo $calls > {directory}/calls
[ $calls = 1 ] && exec {real} "$@"
echo $$ > {directory}/blocked
for _ in $(seq 3000); do [ -e {directory}/go ] && break; sleep 0.1; done
echo "sbatch: error: stopped by the test" >&2; exit 1
""")
    script.chmod(0o755)
    return directory


def jobs_named(prefix: str, since: str) -> set[str]:
    """Every job (array task) SLURM knows whose name starts with ``prefix``, submitted since ``since``."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-S", since, "-o", "JobID,JobName"],
                         capture_output=True, text=True, timeout=60).stdout
    return {job for job, _, name in (line.partition("|") for line in out.splitlines()) if name.startswith(prefix)}


def test_a_launcher_killed_between_two_array_submissions_is_completed_by_the_next_launch(slurm_cluster, tmp_path):
    """Guarantee: A launcher SIGKILLed between two array submissions: the next launch submits only the runs without a
    job, and each run ends with exactly one SLURM job.

    The launcher submits the teacher's array, then is killed (SIGKILL) inside the sbatch of the
    next array. What it submitted is recorded (the teacher's job.json); the next launch submits only
    the runs without a job, behind the teacher's job, and each run ends with exactly one job."""
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    results = tmp_path / "results"
    path = write_study(tmp_path, "slurm_killed_launch", methods={"cwd_logits": CWD})
    study = load_study(path, results)
    assert [p.stage for p in study.runs] == ["teacher", "student", "student"]  # three arrays
    wrapper = sbatch_that_stops_at_the_second_call(tmp_path / "bin")
    env = {**os.environ, "PATH": f"{wrapper}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "launch.log", "w") as log:
        launcher = subprocess.Popen([sys.executable, "-m", "kdbench.cli", "launch", str(path), "--executor", "slurm",
                                     "--results", str(results), "--no-progress"],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            wait_until((wrapper / "blocked").exists, what="the launcher's second sbatch")
        finally:
            launcher.send_signal(signal.SIGKILL)
            launcher.wait(timeout=60)
            (wrapper / "go").write_text("")
    wait_until(lambda: not process_alive(int((wrapper / "blocked").read_text())), what="the stopped sbatch to exit")
    recorded = {p.name: store.read_job(study.directory / p.run_id) for p in study.runs}
    assert recorded["teacher"] is not None and recorded["teacher"]["executor"] == "slurm"
    assert recorded["student_s0"] is None and recorded["cwd_logits_s0"] is None
    # The next launch (the real sbatch): the teacher's job is in flight or done, the two others go.
    decisions = {d.planned.name: d.action for d in launch(study, LaunchOptions(executor="slurm", progress=False))}
    assert decisions["teacher"] in ("skip-in-flight", "skip-complete")
    assert (decisions["student_s0"], decisions["cwd_logits_s0"]) == ("submit", "submit")
    assert (wrapper / "calls").read_text().strip() == "2"  # the wrapper submitted once, in the first launch
    wait_until(lambda: settled(study), what="the study to finish")
    rows = {r.name: r for r in status(study)}
    assert {n: r.state for n, r in rows.items()} == {n: "complete" for n in rows}
    assert rows["teacher"].job_id == recorded["teacher"]["job_id"]
    # Each run exactly one job, and no job SLURM ran for this study that no run records.
    recorded_jobs = [r.job_id for r in rows.values()]
    assert len(set(recorded_jobs)) == 3
    assert jobs_named(f"kdbench-{study.name}-", since) == set(recorded_jobs)


@pytest.mark.slurm_exclusive  # it stops the node's slurmd: no other test's job may run meanwhile
def test_a_job_whose_slurmd_dies_ends_requeued_or_failed_and_its_run_completes_once(slurm_cluster, tmp_path,
                                                                                  tiny_teacher):
    """Guarantee: A node's slurmd killed under a running job: within about 30 s SLURM ends that attempt `NODE_FAIL` and
    requeues it; with slurmd back, the job resumes (or fails at once and a relaunch resumes it); the run
    completes once, without an error, and is never shown running forever.

    slurmd killed (SIGKILL) under a running job: its slurmstepd and the training process live on,
    held at the gate. SLURM marks the node DOWN after SlurmdTimeout (20 s in up.sh) and requeues
    the job (that run of it ends NODE_FAIL); status then shows the run waiting for its job. With
    slurmd back, SLURM kills the orphaned step, and only then does the test open the gate. The
    requeued job either runs and resumes, or fails at once (slurmd refuses a job whose credential
    it has just revoked): the run is then interrupted, and a relaunch resumes it. Either way the run
    ends complete, resumed from its checkpoint, with one result and no error."""
    release = tmp_path / "release"
    results = tmp_path / "results"
    study = load_study(gate_study(tmp_path, "slurm_node_fail", release), results)
    assert tiny_teacher(study)  # its teacher, complete (tests/conftest.py): the gated run is what this is about
    launch(study, LaunchOptions(executor="slurm", progress=False))
    gated = study.runs[1]
    run_dir = study.directory / gated.run_id
    waiting = Path(f"{release}.waiting")
    try:
        wait_until(waiting.exists, what="the run to wait at the gate after its first checkpoint")
        held = int(waiting.read_text())
        job_id = store.read_job(run_dir)["job_id"]
        try:
            os.kill(int((slurm_cluster.directory / "run" / "slurmd.pid").read_text()), signal.SIGKILL)
            killed = time.time()
            wait_until(lambda: "NODE_FAIL" in incarnations(job_id), timeout=120, what="SLURM to see the node fail")
            print(f"NODE_FAIL {time.time() - killed:.1f} s after slurmd was killed; "
                  f"incarnations {incarnations(job_id)}, now {slurm_states([job_id])}")
            assert slurm_states([job_id]) == {job_id: "PENDING"}  # requeued
            queued = {r.name: r for r in status(study)}["gate_s0"]
            assert (queued.state, queued.reason.split(" (")[0]) == ("pending", "slurm: PENDING")  # queued again
            assert process_alive(held)  # the step outlived slurmd
        finally:
            slurm_cluster.up()  # slurmd back: the node returns to service
        wait_until(lambda: not process_alive(held), timeout=120, what="SLURM to stop the orphaned step")
    finally:
        release.write_text("")  # only now can a second process train this run
    wait_until(lambda: {r.name: r.state for r in status(study)}["gate_s0"] not in ("pending", "running"), timeout=300,
               what="the requeued job to end")
    print(f"after slurmd came back: incarnations {incarnations(job_id)}, "
          f"state {[r.state for r in status(study)]}")
    if {r.name: r.state for r in status(study)}["gate_s0"] == "interrupted":
        assert summary(launch(study, LaunchOptions(executor="slurm", progress=False))) == {
            "skip-complete": 1, "submit": 1}
        wait_until(lambda: settled(study), what="the relaunched run to finish")
    assert [r.state for r in status(study)] == ["complete", "complete"]
    final = store.read_json(run_dir / "final.json")
    assert final["resumed_from"] == "iter_2.pth"
    assert [m["iter"] for m in store.read_jsonl(run_dir / "metrics.jsonl")] == [4]
    assert not (run_dir / "error.json").exists()


def test_a_job_slurm_stopped_or_holds_in_its_queue_still_owns_its_run_and_is_not_submitted_again(
        slurm_cluster, tmp_path):
    """Guarantee: A job SLURM stopped (SIGSTOP) or holds after a requeue (`SPECIAL_EXIT`) still owns its run: shown
    running (stopped) or pending (held), never submitted twice; once cancelled, the run is interrupted and resubmitted.

    A run's job that SLURM stopped (SIGSTOP: it keeps its allocation) or requeued and holds
    (SPECIAL_EXIT) can still go on: status shows the run running (it holds its allocation) or
    pending (held in the queue) and a launch leaves it alone (a second job would write the same run
    directory). Once the job is cancelled, the run is interrupted and a launch submits it again."""
    from runners.launch.executor import write_run_file

    path = write_study(tmp_path, "slurm_held", methods={}, baselines={"teacher": False, "student": True})
    study = load_study(path, tmp_path / "results")
    (planned,) = study.runs
    job = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "-t", "5", "--wrap", "sleep 300"],
                         capture_output=True, text=True, check=True).stdout.strip()
    write_run_file(study.directory, planned, study.resources.cpus)
    store.write_job(study.directory / planned.run_id, "slurm", job)
    store.write_json_atomic(study.directory / planned.run_id / "spec.json", planned.run.to_dict())  # started

    def kdbench_sees() -> tuple[str, str]:
        """The run's state in ``kdbench status`` and what a launch would do with it."""
        decided = launch(study, LaunchOptions(executor="slurm", dry_run=True, model_check=False, data_check=False))
        return status(study)[0].state, decided[0].action

    try:
        wait_until(lambda: slurm_states([job]).get(job) == "RUNNING", timeout=60, what="the job to run")
        assert kdbench_sees() == ("running", "skip-in-flight")
        subprocess.run(["scancel", "--signal=STOP", job], check=True)
        wait_until(lambda: slurm_states([job]).get(job) == "STOPPED", timeout=60, what="STOPPED")
        assert kdbench_sees() == ("running", "skip-in-flight")
        subprocess.run(["scancel", "--signal=CONT", job], check=True)
        subprocess.run(["scontrol", "requeuehold", "State=SpecialExit", job], check=True)
        wait_until(lambda: slurm_states([job]).get(job) == "SPECIAL_EXIT", timeout=60, what="SPECIAL_EXIT")
        assert kdbench_sees() == ("pending", "skip-in-flight")
        assert status(study)[0].reason.startswith("slurm: SPECIAL_EXIT")
    finally:
        subprocess.run(["scancel", job], check=False)
    wait_until(lambda: slurm_states([job]).get(job, "").startswith("CANCELLED"), timeout=60, what="CANCELLED")
    assert kdbench_sees() == ("interrupted", "submit")


def test_status_and_the_report_tell_a_job_that_waits_in_the_queue_from_one_that_runs(slurm_cluster, tmp_path):
    """Guarantee: `status` and the report tell a queued job from a running one: pending with SLURM's reason
    (held, behind a dependency), running once it holds an allocation.

    Two runs with recorded jobs: one held by its user (PENDING, JobHeldUser), one behind a
    dependency on the held job (PENDING, Dependency). Released, the first runs: running, with
    SLURM's state as its reason. The report's rows say the same."""
    from analysis.collect import collect
    from kdbench.states import format_status
    from runners.launch.executor import write_run_file

    path = write_study(tmp_path, "slurm_queue", methods={}, seeds=(0, 1),
                       baselines={"teacher": False, "student": True})
    study = load_study(path, tmp_path / "results")
    first, second = study.runs

    def sbatch(*args) -> str:
        return subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "-t", "5", *args, "--wrap", "sleep 300"],
                              capture_output=True, text=True, check=True).stdout.strip()

    held = sbatch("--hold")
    behind = sbatch(f"--dependency=afterok:{held}")
    for planned, job in ((first, held), (second, behind)):
        write_run_file(study.directory, planned, study.resources.cpus)
        store.write_job(study.directory / planned.run_id, "slurm", job)
    try:
        from runners.launch.slurm import slurm_jobs

        # SLURM's reason settles once its scheduler has looked at the jobs (at first: None or Resources)
        wait_until(lambda: slurm_jobs([held, behind]) == {held: ("PENDING", "JobHeldUser"),
                                                          behind: ("PENDING", "Dependency")},
                   timeout=120, what="both jobs queued with their reasons")
        rows = {r.run_id: r for r in status(study)}
        assert (rows[first.run_id].state, rows[first.run_id].reason) == ("pending", "slurm: PENDING (JobHeldUser)")
        assert (rows[second.run_id].state, rows[second.run_id].reason) == ("pending", "slurm: PENDING (Dependency)")
        assert "slurm: PENDING (JobHeldUser)" in format_status(study, list(rows.values()))
        details = dict(zip(*collect(study, statuses=list(rows.values()), write=False)[["run_id", "detail"]].T.values))
        assert details[first.run_id] == "its job waits in the queue (slurm: PENDING (JobHeldUser))"
        subprocess.run(["scontrol", "release", held], check=True)
        wait_until(lambda: slurm_states([held]).get(held) == "RUNNING", timeout=60, what="the released job to run")
        running = {r.run_id: r for r in status(study)}[first.run_id]
        assert (running.state, running.reason) == ("running", "slurm: RUNNING")
    finally:
        subprocess.run(["scancel", held, behind], check=False)
