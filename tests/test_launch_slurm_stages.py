"""A tuned study (``tune:``) launched once on the real local SLURM cluster (tools/slurm/up.sh):
the final stage is submitted by a continuation job once the tune stage's results exist, and a
relaunch by hand never submits a run or a continuation twice."""

import pytest

from kdbench import store
from kdbench.stages import load_study, reload
from runners.launch.continuation import RECORD
from runners.launch.launcher import LaunchOptions, launch, summary
from tests.launch_helpers import CWD, run_cli, slurm_states, wait_until, write_study

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path_factory.getbasetemp() / "data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _complete(study) -> bool:
    study = reload(study)
    states = store.scan(study.directory, [p.run_id for p in study.runs])
    return not study.waiting and all(files.state == "complete" for files in states.values())


def test_a_tuned_study_on_slurm_submits_its_final_stage_from_a_continuation_once_the_tune_results_exist(
        slurm_cluster, tmp_path, tiny_teacher):
    """Guarantee: A tuned study on slurm submits its final stage from a continuation once the tune results exist."""
    axes = {"student": {"schedule.lr": [0.02, 0.05]}, "cwd_logits": {"term.weight": [1.0, 3.0]}}
    path = write_study(tmp_path, "tuned_slurm", methods={"cwd_logits": CWD}, seeds=(0, 1),
                       tune={"holdout": 0.25, "axes": axes})
    study = load_study(path, tmp_path / "results")
    assert tiny_teacher(study)  # its teacher, complete (tests/conftest.py): the stages are what this is about
    code, out, _ = run_cli("launch", str(path), "--results", str(tmp_path / "results"), "--executor", "slurm",
                           "--dry-run")
    assert code == 0 and "then a continuation job (1 CPU, afterany on the jobs of the 4 run(s)" in out
    options = LaunchOptions(executor="slurm", progress=False)
    assert summary(launch(study, options)) == {"skip-complete": 1, "submit": 4}  # the 4 tune runs
    continuation = store.read_json(study.directory / RECORD)
    tune_jobs = {store.read_job(study.directory / p.run_id)["job_id"] for p in study.runs if p.stage == "tune"}
    assert set(continuation["after"]) == tune_jobs
    # A relaunch by hand while the tune stage runs: nothing submitted twice, no second continuation.
    again = summary(launch(load_study(path, tmp_path / "results"), options))
    assert "submit" not in again and store.read_json(study.directory / RECORD)["job_id"] == continuation["job_id"]

    wait_until(lambda: _complete(study), timeout=900, what="the tune stage, the continuation and the final stage")
    study = reload(study)
    assert slurm_states([continuation["job_id"]])[continuation["job_id"]] == "COMPLETED"
    finals = {p.name: p for p in study.runs if p.stage == "student"}
    assert sorted(finals) == ["cwd_logits_s0", "cwd_logits_s1", "student_s0", "student_s1"]
    assert all(store.read_job(study.directory / p.run_id)["executor"] == "slurm" for p in finals.values())
    # The baseline trains at the lr whose tune run scored best on the held-out share (a tie: the first).
    held_out = {p.params["schedule.lr"]: store.read_json(study.directory / p.run_id / "final.json")["metrics"][
        "val/mIoU"] for p in study.runs if p.stage == "tune" and p.params["method"] == "student"}
    best = max(held_out.values())
    assert finals["student_s0"].run.schedule.lr == next(lr for lr, score in held_out.items() if score == best)
    assert summary(launch(study, options)) == {"skip-complete": 9}
    assert store.read_json(study.directory / RECORD)["job_id"] == continuation["job_id"]


def test_cancel_also_cancels_the_pending_continuation_so_nothing_is_launched_again(slurm_cluster, tmp_path):
    """Guarantee: Cancel also cancels the pending continuation so nothing is launched again."""
    from runners.launch.jobs import cancel

    axes = {"student": {"schedule.lr": [0.02, 0.05]}, "cwd_logits": {"term.weight": [1.0, 3.0]}}
    path = write_study(tmp_path, "tuned_cancel", methods={"cwd_logits": CWD}, tune={"holdout": 0.25, "axes": axes})
    study = load_study(path, tmp_path / "results")
    assert summary(launch(study, LaunchOptions(executor="slurm", progress=False))) == {"submit": 5}
    job_id = store.read_json(study.directory / RECORD)["job_id"]
    assert len(cancel(study)) == 5
    wait_until(lambda: slurm_states([job_id]).get(job_id, "").startswith("CANCELLED"),
               what="the continuation to be cancelled")
