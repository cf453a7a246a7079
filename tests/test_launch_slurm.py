"""``kdbench launch --executor slurm`` on a real single-node SLURM cluster (tools/slurm/up.sh):
submitit arrays, teacher stages gating students, preemption with requeue and resume, relaunch."""

import subprocess
from pathlib import Path

import pytest
import yaml

from kdbench import store
from kdbench.stages import load_study
from runners.launch.jobs import status
from runners.launch.launcher import LaunchOptions, launch, summary
from runners.launch.slurm import slurm_jobs
from tests.launch_helpers import (
    CWD,
    dump_yaml,
    gate_study,
    outcome,
    process_alive,
    same_weights,
    settled,
    slurm_states,
    wait_until,
    write_study,
)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path_factory.getbasetemp() / "data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def sacct_times(job_id):
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "Start,End", "-j", job_id],
                         capture_output=True, text=True).stdout.split("\n")[0]
    return out.split("|")


def test_a_study_on_slurm_completes_with_every_result_and_teachers_gate_students(slurm_cluster, tmp_path):
    """Guarantee: A study on slurm completes with every result and teachers gate students."""
    bad = {**CWD, "student_location": "decode_head.no_such_module"}
    path = write_study(tmp_path, "slurm_ok", methods={"cwd_logits": CWD, "bad": bad})
    results = tmp_path / "results"
    study = load_study(path, results)
    # Past the study's model check (--no-model-check): the bad run's own preflight fails it on the node.
    counts = summary(launch(study, LaunchOptions(executor="slurm", progress=False, model_check=False)))
    assert counts == {"submit": 4}
    wait_until(lambda: settled(study), what="the study to finish on SLURM")
    rows = {r.name: r for r in status(study)}
    assert {n: r.state for n, r in rows.items()} == {
        "teacher": "complete", "student_s0": "complete", "cwd_logits_s0": "complete", "bad_s0": "failed"}
    assert all(r.executor == "slurm" for r in rows.values())
    # The distilled student started only after its teacher's job ended (afterok).
    teacher_end = sacct_times(rows["teacher"].job_id)[1]
    student_start = sacct_times(rows["cwd_logits_s0"].job_id)[0]
    assert student_start >= teacher_end
    # Same run ids as a local launch would use, and a relaunch submits nothing.
    assert [p.run_id for p in load_study(path, "results").runs] == [p.run_id for p in study.runs]
    again = summary(launch(study, LaunchOptions(executor="slurm", progress=False, model_check=False)))
    assert again == {"skip-complete": 3, "skip-failed": 1}


def test_a_preempted_run_requeues_resumes_from_its_checkpoint_and_ends_with_one_result(slurm_cluster, tmp_path,
                                                                                      tiny_teacher):
    """Guarantee: A SLURM job preempted (SIGTERM, then USR2: checkpoint and requeue) while held right after its first
    checkpoint (a gate plugin the test opens: no timing window) resumes from it, as the same job, with one
    result.

    Preemption as SLURM does it (SIGTERM, then USR2: submitit checkpoints the job class and
    requeues the job), with no race against the run: the distilled run (tests/plugins/gate_kd.py)
    waits at a gate right after its first checkpoint, so it cannot finish before the test
    interrupts it; the test opens the gate only once the interrupted process has exited. The
    requeued job resumes from that checkpoint, passes the open gate and writes the one result."""
    import submitit

    release = tmp_path / "release"
    results = tmp_path / "results"
    study = load_study(gate_study(tmp_path, "slurm_preempt", release), results)
    assert [p.name for p in study.runs] == ["teacher", "gate_s0"]
    assert tiny_teacher(study)  # its teacher, complete (tests/conftest.py): the preemption is what this is about
    launch(study, LaunchOptions(executor="slurm", progress=False))
    run_dir = results / study.name / study.runs[1].run_id
    waiting = Path(f"{release}.waiting")
    try:
        wait_until(waiting.exists, what="the run to wait at the gate after its first checkpoint")
        held = int(waiting.read_text())
        assert store.run_state(run_dir) == "started" and (run_dir / "iter_2.pth").is_file()
        job_id = store.read_job(run_dir)["job_id"]
        job = submitit.SlurmJob(folder=str(results / study.name / ".submitit" / "%j"), job_id=job_id)
        job._interrupt()  # what SLURM does on preemption: SIGTERM, then USR2 -> checkpoint + requeue
        wait_until(lambda: not process_alive(held), what="the interrupted process to exit")
    finally:
        release.write_text("")  # the gate opens (also when the test failed: the job then ends)
    wait_until(lambda: store.run_state(run_dir) == "complete", what="the requeued run to complete")
    final = store.read_json(run_dir / "final.json")
    assert final["status"] == "complete" and final["resumed_from"] == "iter_2.pth"
    assert [m["iter"] for m in store.read_jsonl(run_dir / "metrics.jsonl")] == [4]
    # sacct -D lists every incarnation of the job: the first one ended REQUEUED, the second completed.
    wait_until(lambda: slurm_states([job_id]).get(job_id) == "COMPLETED", what="the job to end")
    incarnations = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-o", "State", "-j", job_id],
                                  capture_output=True, text=True).stdout.split()
    assert incarnations == ["REQUEUED", "COMPLETED"], incarnations
    assert store.read_job(run_dir)["job_id"] == job_id  # the same job, not a new submission
    assert not (run_dir / "error.json").exists()


def test_cancel_stops_a_studys_running_jobs_and_status_shows_them_interrupted(slurm_cluster, tmp_path):
    from runners.launch.jobs import cancel

    path = write_study(tmp_path, "slurm_cancel", methods={}, baselines={"teacher": False, "student": True})
    path.write_text(path.read_text().replace("iterations: 4", "iterations: 5000"))
    results = tmp_path / "results"
    study = load_study(path, results)
    launch(study, LaunchOptions(executor="slurm", progress=False))
    run_dir = results / "slurm_cancel" / study.runs[0].run_id
    wait_until(lambda: (run_dir / "spec.json").exists(), what="the job to start")
    assert [r.state for r in status(study)] == ["running"]
    assert cancel(study) == [study.runs[0].run_id]
    job_id = store.read_job(run_dir)["job_id"]
    wait_until(lambda: slurm_states([job_id]).get(job_id, "").startswith("CANCELLED"), what="CANCELLED")
    assert [r.state for r in status(study)] == ["interrupted"]
    assert cancel(study) == []


@pytest.mark.parametrize("where, resources, message", [
    ("option", {"gpus": 3}, r"^--gpus: a run asks for 3 GPU\(s\).*largest: 2 GPU\(s\)"),
    ("option", {"partition": "gpu-a100"},
     r"^--partition: 'gpu-a100' is not a partition of this cluster; valid: debug$"),
    ("option", {"cpus": 1000}, r"^--cpus: a run asks for 0 GPU\(s\), 1000 CPU\(s\).*, \d+ CPU\(s\), "),
    ("option", {"gpus": 2, "cpus": 500}, r"^--cpus: a run asks for 2 GPU\(s\), 1000 CPU\(s\)"),  # per task x tasks
    ("option", {"mem_gb": 100000}, r"^--mem-gb: a run asks .*100000 GB.*lower --gpus/--cpus/--mem-gb$"),
    ("study", {"cpus": 1000}, r"slurm_too_big.yaml: resources.cpus: a run asks for 0 GPU\(s\), 1000 CPU\(s\)"),
])
def test_resources_beyond_the_partition_are_refused_before_anything_is_submitted(slurm_cluster, tmp_path,
                                                                                 where, resources, message):
    """Guarantee: Resources beyond the partition are refused before anything is submitted.

    GPUs, CPUs and memory are each refused, in one line naming the option or the study's key
    that asked for too much."""
    from kdbench.errors import UserError

    path = write_study(tmp_path, "slurm_too_big")
    if where == "study":
        spec = yaml.safe_load(path.read_text())
        spec["resources"].update(resources)
        path.write_text(dump_yaml(spec))
    study = load_study(path, tmp_path / "results")
    with pytest.raises(UserError, match=message) as refused:
        launch(study, LaunchOptions(executor="slurm", progress=False, resources=resources if where == "option" else {}))
    assert "\n" not in str(refused.value)
    assert not list((tmp_path / "results" / "slurm_too_big").glob("*/job.json"))
    assert not list((tmp_path / "results" / "slurm_too_big").glob("*/run.json"))


def test_students_of_a_teacher_whose_job_failed_end_blocked_and_a_retry_resubmits_them(slurm_cluster, tmp_path,
                                                                                      monkeypatch):
    """Guarantee: Students of a teacher whose SLURM job failed end `blocked`, never pending forever; `--retry-failed`
    runs them all."""
    from kdbench.states import format_status

    path = write_study(tmp_path, "slurm_teacher_fails", methods={"cwd_logits": CWD, "cwd_w1": {**CWD, "weight": 1.0}},
                       baselines={"teacher": True, "student": False})
    results = tmp_path / "results"
    study = load_study(path, results)
    # The teacher's job fails where it reads its data (the environment travels with sbatch):
    # the study itself is sound, so a retry with a working environment can complete it.
    (tmp_path / "not_a_dir").write_text("")
    good_data = __import__("os").environ["KDBENCH_DATA"]
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "not_a_dir" / "data"))
    assert summary(launch(study, LaunchOptions(executor="slurm", progress=False))) == {"submit": 3}
    wait_until(lambda: settled(study), what="the teacher to fail and its students to end")
    rows = {r.name: r for r in status(study)}
    teacher = rows["teacher"].run_id
    assert {n: r.state for n, r in rows.items()} == {
        "teacher": "failed", "cwd_logits_s0": "blocked", "cwd_w1_s0": "blocked"}
    assert rows["cwd_logits_s0"].reason == rows["cwd_w1_s0"].reason == f"teacher {teacher} failed"
    # SLURM itself cancelled the students' jobs (kill-on-invalid-dep): none is left pending.
    student_jobs = [rows[n].job_id for n in ("cwd_logits_s0", "cwd_w1_s0")]
    queue = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%r", "-j", ",".join(student_jobs)],
                           capture_output=True, text=True).stdout.split()
    assert sorted(queue) == sorted(f"{j}|CANCELLED|DependencyNeverSatisfied" for j in student_jobs)
    table = format_status(study, status(study))
    assert f"teacher {teacher} failed" in table and "2 blocked, 1 failed" in table
    # A relaunch says so and submits nothing; --retry-failed resubmits the teacher and its students.
    assert summary(launch(study, LaunchOptions(executor="slurm", progress=False))) == {
        "skip-failed": 1, "blocked": 2}
    monkeypatch.setenv("KDBENCH_DATA", good_data)
    assert summary(launch(study, LaunchOptions(executor="slurm", progress=False,
                                       retry_failed=True))) == {"submit": 3}
    new_teacher_job = store.read_job(results / study.name / teacher)["job_id"]
    assert new_teacher_job != rows["teacher"].job_id
    wait_until(lambda: settled(study), what="the retried study to finish")
    assert {r.name: (r.state, r.reason) for r in status(study)} == {
        "teacher": ("complete", None), "cwd_logits_s0": ("complete", None), "cwd_w1_s0": ("complete", None)}


def test_a_student_job_left_pending_on_its_failed_teachers_job_counts_as_blocked_and_cancel_removes_it(
        slurm_cluster, tmp_path):
    """Guarantee: A student job left pending on its failed teachers job counts as blocked and cancel removes it.

    Jobs that an older launch submitted without --kill-on-invalid-dep wait forever once their
    teacher's job failed: they are not counted as running, and ``kdbench cancel`` removes them."""
    from runners.launch.executor import write_run_file
    from runners.launch.jobs import cancel

    path = write_study(tmp_path, "slurm_stuck", baselines={"teacher": True, "student": False})
    results = tmp_path / "results"
    study = load_study(path, results)
    teacher, student = study.runs
    assert (teacher.name, student.depends_on) == ("teacher", (teacher.run_id,))

    def sbatch(*arguments):
        return subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", *arguments], capture_output=True,
                              text=True, check=True).stdout.strip()

    failed_job = sbatch("--wrap", "false")
    stuck_job = sbatch(f"--dependency=afterok:{failed_job}", "--wrap", "true")
    for planned, job_id in ((teacher, failed_job), (student, stuck_job)):
        write_run_file(results / study.name, planned, study.resources.cpus)
        store.write_job(results / study.name / planned.run_id, "slurm", job_id)
    store.write_json_atomic(results / study.name / teacher.run_id / "spec.json", teacher.run.to_dict())
    store.write_json_atomic(results / study.name / teacher.run_id / "error.json",
                            {"status": "failed", "error": "RuntimeError: boom"})
    wait_until(lambda: slurm_jobs([stuck_job]).get(stuck_job) == ("PENDING", "DependencyNeverSatisfied"),
               timeout=60, what="the student's job to wait on a dependency never satisfied")
    rows = {r.name: r for r in status(study)}
    assert (rows["cwd_logits_s0"].state, rows["cwd_logits_s0"].reason) == (
        "blocked", f"teacher {teacher.run_id} failed")
    assert summary(launch(study, LaunchOptions(executor="slurm", progress=False, dry_run=True))) == {
        "skip-failed": 1, "blocked": 1}
    assert cancel(study) == [student.run_id]
    wait_until(lambda: slurm_states([stuck_job]).get(stuck_job, "PENDING") != "PENDING", timeout=60,
               what="the stuck job to be cancelled")
    assert slurm_states([stuck_job])[stuck_job].startswith("CANCELLED")


def test_a_two_gpu_run_trains_as_two_processes_of_one_job_and_writes_one_result(slurm_cluster, tmp_path):
    """Guarantee: A two gpu run trains as two processes of one job and writes one result.

    The multi-GPU path (one task per GPU, mmengine's slurm launcher, DDP) on the CPUs of the local
    cluster: its fake GPUs are requested, the two tasks meet over gloo."""
    path = write_study(tmp_path, "slurm_two_tasks", methods={}, baselines={"teacher": False, "student": True})
    # batch_size is global: 2 images per process (1 would leave the PSP head's BatchNorm one value per channel)
    path.write_text(path.read_text().replace("gpus: 0", "gpus: 2").replace("batch_size: 2", "batch_size: 4"))
    results = tmp_path / "results"
    study = load_study(path, results)
    assert summary(launch(study, LaunchOptions(executor="slurm", progress=False))) == {"submit": 1}
    wait_until(lambda: settled(study), what="the two-task run to finish")
    run_dir = results / study.name / study.runs[0].run_id
    assert [r.state for r in status(study)] == ["complete"]
    job_id = store.read_job(run_dir)["job_id"]
    logs = results / study.name / ".submitit" / job_id
    assert sorted(p.name for p in logs.glob("*_result.pkl")) == [f"{job_id}_0_result.pkl", f"{job_id}_1_result.pkl"]
    rank0 = (logs / f"{job_id}_0_log.out").read_text()
    assert "Distributed training: True" in rank0 and "GPU number: 2" in rank0  # mmengine's world size
    assert [m["iter"] for m in store.read_jsonl(run_dir / "metrics.jsonl")] == [4]  # rank 0 alone writes
    assert store.read_json(run_dir / "final.json")["status"] == "complete"




def test_the_smoke_study_and_a_plugin_loss_give_bit_identical_results_locally_and_on_slurm(
        slurm_cluster, tmp_path, monkeypatch):
    """Guarantee: The same study gives bit-identical results locally and on SLURM: every metric, every logged training
    loss and every trained weight (both give a run `resources.cpus` threads, whatever the shell says), and a
    plugin's loss runs inside the SLURM job. Bit-identical is the tolerance: after two iterations a thread-count
    mismatch already moves the losses in the 7th digit and the weights by 2e-7.

    Both executors give a run ``resources.cpus`` threads (here 1, while the launching shell says 2),
    and nothing else of the machine reaches training: every metric, every logged loss and every
    trained weight is bit-identical. The SLURM job imports the study's plugin and trains with its loss."""
    # studies/smoke.yaml as shipped (teacher, baseline, every method), shrunk to 2 iterations,
    # 8 images and one seed so that both launches take seconds; plus the shipped plugin's loss.
    spec = yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text())
    spec["base"]["dataset"]["params"].update(num_train=8, num_val=2)
    spec["base"]["schedule"].update(iterations=2, val_interval=2, checkpoint_interval=2)
    spec["teacher_run"]["schedule"].update(iterations=2, val_interval=2, checkpoint_interval=2)
    spec["seeds"] = [0]
    spec["plugins"] = [str(ROOT / "studies" / "examples" / "cosine_kd.py")]
    spec["methods"]["cosine_logits"] = {"method": "cosine", "weight": 1.0, "student_location": "decode_head.conv_seg"}
    assert spec["resources"]["cpus"] == 1
    path = tmp_path / "smoke.yaml"
    path.write_text(dump_yaml(spec))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # what each executor must override
    monkeypatch.setenv("MKL_NUM_THREADS", "2")
    # SLURM first: its launch returns once the jobs are submitted, and they run while the local launch trains
    studies = {executor: load_study(path, tmp_path / executor) for executor in ("slurm", "local")}
    for executor, study in studies.items():
        launch(study, LaunchOptions(executor=executor, parallel=2 if executor == "local" else None, progress=False))
    directories = {}
    for executor, study in studies.items():
        wait_until(lambda study=study: settled(study), what=f"the smoke study to finish ({executor})")
        rows = status(study)
        assert all(r.executor == executor for r in rows)
        assert [r.state for r in rows] == ["complete"] * len(rows) == ["complete"] * (2 + len(spec["methods"]))
        directories[executor] = {r.name: study.directory / r.run_id for r in rows}
    local, slurm = directories["local"], directories["slurm"]
    assert {n: d.name for n, d in local.items()} == {n: d.name for n, d in slurm.items()}  # the same run ids
    for name in local:
        assert outcome(slurm[name]) == outcome(local[name]), name
        assert outcome(slurm[name])["threads"] == 1
        assert same_weights(slurm[name] / "model_final.pth", local[name] / "model_final.pth"), name
    cosine = [value for line in outcome(slurm["cosine_logits_s0"])["logged"]
              for key, value in line.items() if key.startswith("loss_kd_cosine")]
    assert len(cosine) == 2 and all(0 < value < 2 for value in cosine)  # one per iteration; 1 - cos is in [0, 2]
