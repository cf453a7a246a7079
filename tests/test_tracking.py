"""Live curves: every run writes TensorBoard event files; a run whose study lists W&B and MLflow
logs there too (offline / file store), each KD term apart, lr and evaluations, one experiment per
study, one run per run id named by the run's name and tagged with its axis values."""

import json
import sys

import pytest
import yaml

from kdbench import store
from kdbench.cli import main
from kdbench.ids import run_id
from kdbench.spec import parse_run
from kdbench.stages import load_study
from tests.run_fixtures import SHORT, TINY_DATA, cwd_terms, execute, seg_run


@pytest.fixture(autouse=True)
def _offline(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path_factory.getbasetemp() / "data"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a file store only with it
    for name in ("WANDB_MODE", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)


def tensorboard_scalars(directory) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def study_file(tmp_path, seg_teacher, loggers) -> str:
    teacher = {"config": "tiny_seg_teacher", "checkpoint": str(seg_teacher / "model_final.pth")}
    spec = {"name": "curves", "base": {"task": "seg", "student": {"config": "tiny_seg_student"}, "teacher": teacher,
                                       "dataset": TINY_DATA, "schedule": {**SHORT, "val_interval": 2}},
            "methods": {"cwd": cwd_terms()[:1]}, "grid": {"term.params.tau": [4.0]},
            "baselines": {"student": False, "teacher": False}, "loggers": loggers}
    path = tmp_path / "curves.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.slow
def test_a_study_run_logs_each_kd_term_lr_and_evaluations_to_tensorboard_wandb_and_mlflow(
        seg_teacher, tmp_path, capsys):
    """Guarantee: Every run logs each KD term, lr and evaluations to TensorBoard, and to W&B (offline) and MLflow (file
    store) when its study lists them: one experiment per study, one run per run id named by the run and tagged
    with its axis values, the same numbers as `metrics.jsonl`; a resume continues the MLflow run; only rank 0 of
    a multi-process run logs; loggers never change a run id."""
    study = load_study(study_file(tmp_path, seg_teacher, ["wandb", "mlflow"]), tmp_path / "results")
    planned = next(r for r in study.runs if r.kind == "cell")
    tracking = planned.run.tracking
    assert tracking.experiment == "curves" and tracking.tags == {"method": "cwd", "term.params.tau": 4.0, "seed": 0}
    assert tracking.loggers == ("tensorboard", "wandb", "mlflow")
    out = study.directory / planned.run_id
    execute(planned.run.to_dict(), out)
    evaluations = store.read_jsonl(out / "metrics.jsonl")
    assert [e["iter"] for e in evaluations] == [2, 4]

    board = tensorboard_scalars(out / "tensorboard")
    assert {"loss_kd_cwd_logits", "decode.loss_ce", "lr"} <= set(board)
    assert [(step, pytest.approx(value, abs=1e-4)) for step, value in board["mIoU"]] \
        == [(e["iter"], e["val/mIoU"]) for e in evaluations]

    import mlflow

    mlflow.set_tracking_uri((study.directory / "mlruns").as_uri())
    (mlrun,) = mlflow.search_runs(experiment_names=["curves"], output_format="list")
    assert mlrun.info.run_name == planned.name
    assert mlrun.data.tags["kdbench_run_id"] == planned.run_id and mlrun.data.tags["term.params.tau"] == "4.0"
    history = mlflow.MlflowClient().get_metric_history(mlrun.info.run_id, "mIoU")
    assert [(m.step, pytest.approx(m.value, abs=1e-4)) for m in history] == [(e["iter"], e["val/mIoU"])
                                                                              for e in evaluations]
    kd_steps = [m.step for m in mlflow.MlflowClient().get_metric_history(mlrun.info.run_id, "loss_kd_cwd_logits")]
    assert kd_steps == [step for step, _ in board["loss_kd_cwd_logits"]]

    # W&B offline: its run id is the run id, in the study's project; the records name the run, its
    # axis values and the same curves (their values are checked above, in TensorBoard and MLflow).
    (wandb_run,) = (out / "wandb").glob(f"offline-run-*-{planned.run_id}")
    assert f"finishing run curves/{planned.run_id}" in (wandb_run / "logs" / "debug.log").read_text()
    records = (wandb_run / f"run-{planned.run_id}.wandb").read_bytes()
    for text in (planned.name, "term.params.tau=4.0", "loss_kd_cwd_logits", "mIoU", "lr"):
        assert text.encode() in records

    capsys.readouterr()  # the training's own output
    assert main(["status", study.spec.path.as_posix(), "--results", str(tmp_path / "results"), "--tensorboard"]) == 0
    command = capsys.readouterr().out.strip()
    assert command.startswith("tensorboard --logdir_spec ") and "\n" not in command
    assert f"{planned.name}:{out / 'tensorboard'}" in command.split(" ", 2)[2].split(",")
    assert planned.name in [run.split("/")[0] for run in tensorboard_runs(command)]  # TensorBoard shows "cwd_s0/."


def tensorboard_runs(command: str) -> list[str]:
    """The runs a real TensorBoard started with ``command`` serves (its /data/runs)."""
    import shlex
    import socket
    import subprocess
    import time
    import urllib.request
    from pathlib import Path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = shlex.split(command)
    argv[0] = str(Path(sys.executable).parent / "tensorboard")
    server = subprocess.Popen([*argv, "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180  # a loaded machine starts it slowly; the runs appear after a reload
        while time.monotonic() < deadline:
            try:
                runs = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5).read())
            except OSError:
                runs = []
            if runs or server.poll() is not None:
                return runs
            time.sleep(0.5)
        return []
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_status_tensorboard_prints_one_command_naming_every_run_of_the_study(tmp_path, capsys):
    study = tmp_path / "grid.yaml"
    study.write_text(yaml.safe_dump({"name": "grid", "base": {
        "task": "seg", "student": {"config": "tiny_seg_student"}, "dataset": TINY_DATA, "schedule": SHORT},
        "grid": {"schedule.lr": [0.01, 0.02]}, "seeds": [0, 1]}))
    assert main(["status", str(study), "--results", str(tmp_path / "r"), "--tensorboard"]) == 0
    command = capsys.readouterr().out.strip()
    runs = load_study(study, tmp_path / "r").runs
    assert command.startswith("tensorboard --logdir_spec ")
    assert command.split(" ", 2)[2].split(",") == [f"{r.name}:{tmp_path / 'r' / 'grid' / r.run_id / 'tensorboard'}"
                                                   for r in runs]


def test_loggers_are_not_part_of_a_runs_identity_and_tensorboard_is_always_one():
    """Guarantee: Loggers are not part of a runs identity and tensorboard is always one."""
    plain = parse_run(seg_run())
    watched = parse_run(seg_run(tracking={"loggers": ["mlflow"], "experiment": "s", "tags": {"lr": 0.1}}))
    assert run_id(plain) == run_id(watched)
    assert watched.tracking.loggers == ("tensorboard", "mlflow") and plain.tracking.loggers == ("tensorboard",)
    assert "tracking" not in plain.to_dict() and watched.to_dict()["tracking"]["tags"] == {"lr": 0.1}


def test_an_unknown_logger_in_a_study_is_one_line_naming_the_valid_ones(tmp_path, capsys):
    study = tmp_path / "bad.yaml"
    study.write_text(yaml.safe_dump({"name": "bad", "base": {"task": "seg", "dataset": TINY_DATA,
                                                             "student": {"config": "tiny_seg_student"}},
                                     "loggers": ["comet"]}))
    assert main(["plan", str(study), "--no-model-check", "--no-data-check"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "loggers[0]" in error and "tensorboard, wandb, mlflow" in error


@pytest.mark.slow
def test_a_resumed_run_continues_its_one_mlflow_run(seg_teacher, tmp_path):
    """Guarantee: A resumed run continues its one mlflow run."""
    study = load_study(study_file(tmp_path, seg_teacher, ["mlflow"]), tmp_path / "results")
    planned = next(r for r in study.runs if r.kind == "cell")
    out = study.directory / planned.run_id
    execute(planned.run.to_dict(), out)
    for name in ("final.json", "model_final.pth", "iter_4.pth"):  # as if killed after iteration 2's checkpoint
        (out / name).unlink()
    (out / "last_checkpoint").write_text(str(out / "iter_2.pth"))
    assert execute(planned.run.to_dict(), out)["resumed_from"] == "iter_2.pth"

    import mlflow

    mlflow.set_tracking_uri((study.directory / "mlruns").as_uri())
    (mlrun,) = mlflow.search_runs(experiment_names=["curves"], output_format="list")
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(mlrun.info.run_id, "mIoU")]
    assert mlrun.info.run_name == planned.name and sorted(set(steps)) == [2, 4]


RANK = """
import sys
from runners.run import run_one
from kdbench.spec import load_run
record = run_one(load_run(sys.argv[1]), sys.argv[2])
print("rank", record.get("rank", 0), record["status"])
"""


@pytest.mark.slow
def test_only_rank_0_of_a_two_process_run_logs_curves(seg_teacher, tmp_path):
    """Guarantee: Only rank 0 of a two process run logs curves.

    Two real processes joined by gloo, as a two-task SLURM job runs on CPUs (runners.train)."""
    import os
    import socket
    import subprocess
    from pathlib import Path

    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run_file = tmp_path / "run.json"
    teacher = {"config": "tiny_seg_teacher", "checkpoint": {"run": str(seg_teacher)}}
    run = seg_run(device="cpu", schedule={**SHORT, "batch_size": 4}, teacher=teacher,
                  distill=cwd_terms()[:1], tracking={"loggers": ["wandb", "mlflow"], "experiment": "two"})
    run_file.write_text(json.dumps(run))
    out = tmp_path / "out"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "KDBENCH_LAUNCHER": "slurm", "SLURM_NTASKS": "2",
           "MASTER_PORT": str(port), "CUDA_VISIBLE_DEVICES": "", "WANDB_SILENT": "true"}
    ranks = [subprocess.Popen([sys.executable, "-c", RANK, str(run_file), str(out)], cwd=root, text=True,
                              env={**env, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in (0, 1)]
    results = [p.communicate(timeout=600) for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert len(list((out / "wandb").glob("offline-run-*"))) == 1

    import mlflow

    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    assert len(mlflow.search_runs(experiment_names=["two"], output_format="list")) == 1


@pytest.mark.slow
def test_two_runs_of_one_name_in_one_process_each_log_their_curves_into_their_own_directory(tmp_path):
    """mmengine hands back an existing Visualizer of the same name: runs named alike in one process
    (tests, an in-process resume) must still each write their own scalars.json."""
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        execute(seg_run(name="same_name"), out)
    for out in (first, second):
        (scalars,) = out.glob("*/vis_data/scalars.json")
        assert [json.loads(line)["step"] for line in scalars.read_text().splitlines() if "loss" in line]
