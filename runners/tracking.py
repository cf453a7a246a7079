"""Live curves in the tools researchers use: mmengine's visualisation backends for one run.

mmengine's LoggerHook sends every logged scalar to the Runner's Visualizer: each loss (the task
losses and every ``loss_kd_<term>`` apart), ``lr``, and each evaluation's metrics. Its backends
log on the main process only (``Visualizer.add_scalars`` is ``master_only``), so a multi-GPU run
writes one set of curves. Where they go (``RunSpec.tracking``):

- TensorBoard, always: event files in ``<run dir>/tensorboard``; ``kdbench status STUDY
  --tensorboard`` prints the command that shows a whole study.
- W&B (``loggers: [wandb]``): project = the study, run name = the run's name, W&B run id = the
  run id (a resumed attempt continues the same W&B run), tags and config = its axis values.
  Offline by default (``<run dir>/wandb``, ``wandb sync`` uploads it); ``WANDB_MODE=online``
  logs live.
- MLflow (``loggers: [mlflow]``): experiment = the study, one MLflow run per run id (tag
  ``kdbench_run_id``; a resumed attempt continues it), named by the run's name, tagged with its
  axis values. A file store beside the study's runs (``<results>/<study>/mlruns``) unless
  ``MLFLOW_TRACKING_URI`` names a server.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from pathlib import Path

from kdbench.errors import UserError
from kdbench.ids import run_id
from kdbench.spec import RunSpec

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
RUN_ID_TAG = "kdbench_run_id"


def tensorboard_dir(out: str | Path) -> Path:
    return Path(out) / "tensorboard"


def tensorboard_command(study) -> str:
    """``tensorboard --logdir_spec NAME:DIR,...``: every run of ``study`` (a kdbench.expand.Study)
    under its name (TensorBoard splits the list at ',' and a name at its first ':')."""
    import shlex

    pairs = [f"{re.sub(r'[,:]', '_', p.name)}:{tensorboard_dir(study.directory / p.run_id)}" for p in study.runs]
    return f"tensorboard --logdir_spec {shlex.quote(','.join(pairs))}"


def mlflow_dir(out: str | Path) -> Path:
    """The MLflow file store the run logs into: one per study (beside the run directories)."""
    return Path(out).parent / "mlruns"


def check_installed(run: RunSpec) -> None:
    missing = [name for name in run.tracking.loggers if importlib.util.find_spec(PACKAGES[name]) is None]
    if missing:
        raise UserError(f"tracking.loggers: {', '.join(missing)} is not installed "
                        "(pip install tensorboard; W&B and MLflow: pip install -e .[trackers])")


def _tags(run: RunSpec) -> dict[str, str]:
    return {str(k): str(v) for k, v in run.tracking.tags.items()}


def _mlflow_run(run: RunSpec, experiment: str, tracking_uri: str) -> None:
    """Create the study's experiment (two runs starting at once may race to) and point
    ``MLFLOW_RUN_ID`` at this run id's MLflow run when an earlier attempt made one."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        try:
            mlflow.create_experiment(experiment)
        except mlflow.exceptions.MlflowException:
            if mlflow.get_experiment_by_name(experiment) is None:  # not the race: a real error
                raise
    found = mlflow.search_runs(experiment_names=[experiment], output_format="list",
                               filter_string=f"tags.{RUN_ID_TAG} = '{run_id(run)}'")
    if found:
        os.environ["MLFLOW_RUN_ID"] = found[0].info.run_id
    else:
        os.environ.pop("MLFLOW_RUN_ID", None)


def _register_mlflow_backend() -> str:
    """mmengine's MLflow backend, ending its run without uploading the work directory's files
    (mmengine's own close reads them from a Runner config kdbench does not pass)."""
    from mmengine.registry import VISBACKENDS
    from mmengine.visualization import MLflowVisBackend

    class RunMLflowVisBackend(MLflowVisBackend):
        def close(self) -> None:
            if hasattr(self, "_mlflow"):
                self._mlflow.end_run()

    VISBACKENDS.register_module("KdbenchMLflowVisBackend", module=RunMLflowVisBackend, force=True)
    return "KdbenchMLflowVisBackend"


def visualizer_config(run: RunSpec, out: str | Path, rank: int = 0) -> dict:
    """The Runner's ``visualizer``: mmengine's local scalars.json, TensorBoard, and the run's
    other loggers. ``rank``: other ranks log nothing (their backends are never written to)."""
    check_installed(run)
    out = Path(out).resolve()
    experiment = run.tracking.experiment or run.name
    backends: list[dict] = [{"type": "LocalVisBackend"},
                            {"type": "TensorboardVisBackend", "save_dir": str(tensorboard_dir(out))}]
    if "wandb" in run.tracking.loggers:
        backends.append({"type": "WandbVisBackend", "save_dir": str(out / "wandb"), "init_kwargs": {
            "project": experiment, "name": run.name, "id": run_id(run), "resume": "allow",
            "mode": os.environ.get("WANDB_MODE", "offline"), "dir": str(out),
            "tags": [f"{k}={v}" for k, v in _tags(run).items()], "config": {**run.tracking.tags}}})
    if "mlflow" in run.tracking.loggers:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if uri is None:  # the file store: MLflow 3 asks for this opt-in to use one
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        if rank == 0:
            _mlflow_run(run, experiment, uri or mlflow_dir(out).as_uri())
        backends.append({"type": _register_mlflow_backend(), "save_dir": str(mlflow_dir(out)), "exp_name": experiment,
                         "run_name": run.name, "tags": {**_tags(run), RUN_ID_TAG: run_id(run)},
                         **({"tracking_uri": uri} if uri else {})})
    # mmengine keeps one Visualizer per name in the process and hands an existing one back; the Runner
    # names it after the experiment (the run's name). Two attempts in one process (a test's runs, a
    # resume) would then share the first one's backends and write its curves into the first run's
    # directory: each attempt's visualizer is named after its own directory and start.
    name = f"kdbench:{out}:{time.time_ns()}"
    return {"type": "Visualizer", "name": name, "vis_backends": backends}
