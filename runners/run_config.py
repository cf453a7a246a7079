"""The complete mmengine config a run trains with, for ``kdbench plan STUDY --show RUN --config``:
the trained model (the teacher for a teacher run, else the student) with the run's overrides,
the teacher and the distill terms of a distilled run, the train and val pipelines and loaders, the
optimizer and its wrapper, the parameter schedulers, the loops and the default hooks, built by the
same functions the training builds its Runner from. Nothing is trained or loaded; a dataset root
that is not on this machine is named as it is."""

from __future__ import annotations

from kdbench.spec import RunSpec, TeacherRun


def _model(run: RunSpec, role: str) -> dict:
    from runners.build import load_config
    from runners.train import input_size_overrides

    model = run.teacher if role == "teacher" else run.student
    cfg = load_config(model.config, {**input_size_overrides(run), **model.overrides}, f"{role}.config")
    return cfg.model.to_dict()


def run_config(run: RunSpec, device: str = "cuda") -> str:
    """The run's config as mmengine would dump it (``Config.pretty_text``); ``device``: the one the
    optimizer wrapper is chosen for (the run's precision on a GPU by default)."""
    from mmengine.config import Config

    from runners.datasets import dataset_configs
    from runners.precision import optim_wrapper_type
    from runners.train import default_hooks, optim_config

    schedule = run.schedule
    config: dict = {"model": _model(run, "teacher" if run.role == "teacher" else "student")}
    if run.role == "student" and run.distill:
        checkpoint = run.teacher.checkpoint
        checkpoint = checkpoint.run if isinstance(checkpoint, TeacherRun) else checkpoint
        config["teacher"] = {"model": _model(run, "teacher"), "mode": run.teacher.mode, "checkpoint": checkpoint}
        if run.teacher.forward != "full":
            config["teacher"]["forward"] = run.teacher.forward
        for part in run.student.init_from_teacher:  # shown as MMRazor's MGD config writes it
            config["model"][part]["init_cfg"] = {"type": "Pretrained", "prefix": f"{part}.", "checkpoint": checkpoint}
        config["distill"] = run.to_dict()["distill"]
    config.update(dataset_configs(run, check_root=False))
    config["val_cfg"] = {"type": "ValLoop"}
    if schedule.iterations > 0:
        wrapper, schedulers = optim_config(schedule)
        wrapper.update(optim_wrapper_type(schedule.precision, device))
        config.update(optim_wrapper=wrapper, param_scheduler=schedulers,
                      train_cfg={"type": "IterBasedTrainLoop", "max_iters": schedule.iterations,
                                 "val_interval": schedule.val_interval or schedule.iterations})
    config.update(default_hooks=default_hooks(schedule), randomness={"seed": run.seed},
                  env_cfg={"cudnn_benchmark": False})
    return Config(config).pretty_text
