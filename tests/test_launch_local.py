"""``kdbench launch --executor local``: every run once, teachers first, failures recorded."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdbench import store
from kdbench.stages import load_study
from runners.launch.jobs import status
from runners.launch.launcher import LaunchOptions, launch, summary
from tests.launch_helpers import CWD, outcome, same_weights, write_study

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # every test launches runs that train


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path_factory.getbasetemp() / "data"))


def test_a_local_launch_completes_every_run_and_a_relaunch_submits_nothing(tmp_path):
    """Guarantee: A relaunch submits nothing that is complete or in flight; two concurrent launches run each run
    once."""
    study = load_study(write_study(tmp_path, "local_ok"), tmp_path / "results")
    counts = summary(launch(study, LaunchOptions(parallel=2, progress=False)))
    assert counts == {"submit": 3}  # teacher, student baseline, cwd
    states = {r.name: r.state for r in status(study)}
    assert states == {"teacher": "complete", "student_s0": "complete", "cwd_logits_s0": "complete"}
    again = summary(launch(study, LaunchOptions(progress=False)))
    assert again == {"skip-complete": 3}


def test_a_failing_run_becomes_an_error_record_while_the_others_complete(tmp_path, tiny_teacher):
    """Guarantee: One failing run becomes an error record; the others complete; students of a failed teacher are
    blocked."""
    bad = {**CWD, "student_location": "decode_head.conv_sg"}
    study = load_study(write_study(tmp_path, "local_fail", methods={"good": CWD, "bad": bad}), tmp_path / "r")
    assert tiny_teacher(study)  # its teacher, complete: the students are what this test is about
    # Launched past the study's model check (--no-model-check): the run's own preflight finds it.
    launch(study, LaunchOptions(progress=False, model_check=False))
    rows = {r.name: r for r in status(study)}
    assert rows["bad_s0"].state == "failed" and rows["good_s0"].state == "complete"
    error = store.read_json(tmp_path / "r" / "local_fail" / rows["bad_s0"].run_id / "error.json")
    assert "decode_head.conv_seg" in error["error"]  # the close match is named
    # Failed runs are retried only when asked.
    again = LaunchOptions(dry_run=True, model_check=False)
    assert summary(launch(study, again))["skip-failed"] == 1
    assert summary(launch(study, LaunchOptions(dry_run=True, retry_failed=True, model_check=False)))["submit"] == 1


def test_students_of_a_teacher_that_failed_are_blocked_not_run(tmp_path):
    """Guarantee: Students of a teacher that failed are blocked not run."""
    path = write_study(tmp_path, "local_blocked")
    broken = "config: tiny_seg_teacher\n    overrides: {model.decode_head.num_classes: 0}"
    spec = path.read_text().replace("config: tiny_seg_teacher", broken)
    path.write_text(spec)
    study = load_study(path, tmp_path / "r")
    # Past the model check, which would refuse the teacher's 0 classes against the student's 11.
    launch(study, LaunchOptions(progress=False, model_check=False))
    states = {r.name: r.state for r in status(study)}
    assert states["teacher"] == "failed" and states["student_s0"] == "complete"
    assert states["cwd_logits_s0"] == "missing"
    assert summary(launch(study, LaunchOptions(dry_run=True, model_check=False)))["blocked"] == 1


def test_two_concurrent_launches_of_one_study_run_each_run_once(tmp_path):
    """Guarantee: Two concurrent launches of one study run each run once."""
    path = write_study(tmp_path, "local_twice", methods={"cwd_logits": CWD})
    command = [sys.executable, "-m", "kdbench.cli", "launch", str(path), "--results", str(tmp_path / "r"),
               "--no-progress"]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = [p.communicate(timeout=900) for p in (first, second)]  # generous: a loaded machine
    submitted = sorted(int(out.split("submitted ")[1].split(";")[0].split()[0]) for out, _ in outputs)
    assert submitted == [0, 3], outputs
    study = load_study(path, tmp_path / "r")
    for planned in study.runs:
        run_dir = tmp_path / "r" / "local_twice" / planned.run_id
        assert store.run_state(run_dir) == "complete"
        assert json.loads((run_dir / "spec.json").read_text())["run_id"] == planned.run_id


def test_status_reports_a_run_killed_without_result_as_interrupted(tmp_path):
    study = load_study(write_study(tmp_path, "local_status"), tmp_path / "r")
    planned = study.runs[0]
    run_dir = tmp_path / "r" / "local_status" / planned.run_id
    run_dir.mkdir(parents=True)
    store.write_json_atomic(run_dir / "spec.json", planned.run.to_dict())
    (run_dir / "job.json").write_text(json.dumps({"executor": "local", "job_id": "999999", "host": "nowhere"}))
    rows = {r.name: r.state for r in status(study)}
    assert rows[planned.name] == "interrupted" and rows["student_s0"] == "missing"


def test_a_run_launched_beside_another_and_the_same_run_alone_give_bit_identical_results(tmp_path):
    """Guarantee: Same spec, same numbers: a run's threads come from the study's `resources.cpus` (never `--parallel`,
    the shell or the machine), so a run launched two at a time and the same run alone give bit-identical
    evaluations, logged losses and weights; every numerics setting (threads, deterministic algorithms, cuDNN
    flags, matmul precision) is set from the spec and recorded in env.json; `schedule.deterministic` is part of
    the id when on, `threads` never.

    Same spec, same numbers: a run's threads are the study's ``resources.cpus`` (1 here), never
    the launcher's parallelism, the shell's OMP_NUM_THREADS or the machine's cores. The teacher and
    the distilled student, launched two at a time, are run again alone from their run files, in a
    shell that asks for 2 threads: every evaluation, logged loss and weight is the same."""
    study = load_study(write_study(tmp_path, "local_same"), tmp_path / "r")
    launch(study, LaunchOptions(parallel=2, progress=False))
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
    for planned in (p for p in study.runs if p.kind in ("teacher", "cell")):
        launched, alone = study.directory / planned.run_id, tmp_path / "alone" / planned.run_id
        subprocess.run([sys.executable, "-m", "kdbench.cli", "run", str(launched / "run.json"), "--out", str(alone)],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        assert outcome(launched) == outcome(alone) and outcome(alone)["threads"] == 1
        assert outcome(alone)["logged"] and same_weights(launched / "model_final.pth", alone / "model_final.pth")


def test_a_teacher_off_its_expected_metric_blocks_its_students_until_the_check_is_ignored(tmp_path):
    """Guarantee: The teacher gate: a teacher scoring outside `teacher.expect`'s tolerance completes and records its
    check, its students are blocked with both numbers in status and the report (on SLURM its job fails so
    `afterok` students never start); `--ignore-teacher-check` runs them; the expectation is in no run id.

    The teacher gate: the teacher run completes and records its check; a score outside
    teacher.expect's tolerance blocks its students (status names both numbers); with
    --ignore-teacher-check they run."""
    from tests.launch_helpers import TINY_BASE

    expect = {"metric": "val/mIoU", "value": 99.0, "tolerance": 0.5}  # no 4-iteration teacher scores 99
    base = {**TINY_BASE, "teacher": {**TINY_BASE["teacher"], "expect": expect}}
    study = load_study(write_study(tmp_path, "gate", base=base), tmp_path / "r")
    launch(study, LaunchOptions(progress=False))
    rows = {r.name: r for r in status(study)}
    teacher = study.directory / rows["teacher"].run_id
    check = store.read_json(teacher / "final.json")["teacher_check"]
    measured = store.read_json(teacher / "final.json")["metrics"]["val/mIoU"]
    assert check == {"metric": "val/mIoU", "expected": 99.0, "tolerance": 0.5, "measured": measured, "passed": False}
    assert rows["teacher"].state == "complete" and rows["student_s0"].state == "complete"
    assert rows["cwd_logits_s0"].state == "blocked"
    assert rows["cwd_logits_s0"].reason == (f"teacher {rows['teacher'].run_id} scored {measured:.2f} val/mIoU, "
                                            "expected 99.0 ± 0.5 (launch --ignore-teacher-check runs its students "
                                            "anyway)")
    assert not (study.directory / rows["cwd_logits_s0"].run_id).exists()
    assert summary(launch(study, LaunchOptions(dry_run=True)))["blocked"] == 1
    launch(study, LaunchOptions(progress=False, ignore_teacher_check=True))
    assert {r.name: r.state for r in status(study)}["cwd_logits_s0"] == "complete"


def test_a_teacher_within_its_tolerance_lets_its_students_run_and_the_expectation_is_not_in_any_run_id(tmp_path):
    """Guarantee: A teacher within its tolerance lets its students run and the expectation is not in any run id."""
    from tests.launch_helpers import TINY_BASE

    plain = load_study(write_study(tmp_path, "gate_ok"), tmp_path / "r")
    base = {**TINY_BASE, "teacher": {**TINY_BASE["teacher"],
                                     "expect": {"metric": "val/mIoU", "value": 50.0, "tolerance": 50.0}}}
    study = load_study(write_study(tmp_path, "gate_ok", base=base), tmp_path / "r")
    assert [p.run_id for p in study.runs] == [p.run_id for p in plain.runs]
    launch(study, LaunchOptions(progress=False))
    assert {r.state for r in status(study)} == {"complete"}


def test_the_slurm_job_of_a_teacher_off_its_expected_metric_fails_after_writing_its_result(tmp_path):
    """Guarantee: The slurm job of a teacher off its expected metric fails after writing its result.

    On SLURM the students wait on their teacher's job with afterok: the job must fail for SLURM
    never to start them, while the teacher's own result stays (the report shows its score)."""
    from runners.launch.job import RunJob
    from tests.launch_helpers import TINY_BASE

    teacher = {**TINY_BASE["teacher"], "expect": {"metric": "val/mIoU", "value": 99.0}}
    run = {**TINY_BASE, "role": "teacher", "teacher": teacher, "name": "gated_teacher"}
    run.pop("student")
    with pytest.raises(RuntimeError, match=r"teacher gated_teacher is complete but failed its teacher gate: it scored "
                                           r"\d+\.\d\d val/mIoU, expected 99\.0 ± 1\.0"):
        RunJob()(run, str(tmp_path / "t"))
    assert store.run_state(tmp_path / "t") == "complete"
