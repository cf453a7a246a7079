"""A run's recipe card: what a reader needs to compare its numbers with another run's or a
published row's, recorded in final.json (``recipe``). Everything here is what the run actually
did: its global batch as the processes split it, the epochs its iterations equal on the images it
found, the crop and augmentation it trained with, its schedule, how it was evaluated, which
teacher it distilled from and how, and its numeric precision."""

from __future__ import annotations

from kdbench.spec import RunSpec, TeacherRun

EVALUATION = "single scale, no flip"  # runners.datasets' test pipelines: one resize, no test-time augmentation


def _train_images(run: RunSpec, data: dict | None) -> int | None:
    """The training images the run trained on: the data record's train split, or the generated
    set's size; with a holdout, the part of it left to train on."""
    found = None
    if data and isinstance(data.get("splits"), dict):
        found = (data["splits"].get("train") or {}).get("images")
    elif run.dataset.name == "fashion_scenes":
        from runners.data.fashion_scenes import normalize_params

        found = normalize_params(dict(run.dataset.params))["num_train"]
    holdout = run.dataset.holdout
    if found and holdout is not None:
        from runners.data.holdout import split

        found = len(split(found, holdout.fraction, holdout.seed)[0])
    return found


def _teacher(run: RunSpec) -> dict:
    teacher = run.teacher if (run.role == "teacher" or run.distill) else None
    if teacher is None:
        return {"teacher_checkpoint": None, "teacher_mode": None}
    checkpoint = teacher.checkpoint
    shown = f"teacher run {checkpoint.run.rstrip('/').rsplit('/', 1)[-1]}" if isinstance(checkpoint, TeacherRun) \
        else checkpoint
    card = {"teacher_checkpoint": shown, "teacher_mode": teacher.mode if run.role == "student" else None}
    if teacher.forward != "full" and run.role == "student":  # FpnTeacherDistill: backbone and neck only
        card["teacher_forward"] = teacher.forward
    if getattr(run.student, "init_from_teacher", ()):
        card["init_from_teacher"] = list(run.student.init_from_teacher)
    return card


def _student_init(run: RunSpec) -> str | None:
    """Where the trained model's weights start: the pretrained weights its config names, or random."""
    from runners.model_facts import pretrained_references

    model = run.trained
    found = pretrained_references(run.task, model.config, model.overrides) if model is not None else []
    return "; ".join(found) if found else "random"


def _terms(run: RunSpec) -> str | None:
    """The combination of distillation terms: ``method@location xweight``, "; "-joined (None: no term)."""
    return "; ".join(f"{t.method}@{','.join(t.student_location)} x{t.weight:g}" for t in run.distill) or None


def _selection(schedule) -> dict:
    """How the reported number is chosen: the evaluation interval, and the last or the best evaluation."""
    return {"val_interval": schedule.val_interval or schedule.iterations, "select": schedule.select}


def recipe(run: RunSpec, processes: int, nodes: int, device: str, data: dict | None) -> dict:
    """The recipe card of ``run`` as trained by ``processes`` processes (one per GPU) on ``nodes``
    nodes; ``data``: the run's data record (runners.data.layout.run_record), or None."""
    from runners.datasets import training_size

    schedule = run.schedule
    images = _train_images(run, data)
    epochs = round(schedule.iterations * schedule.batch_size / images, 2) if images else None
    card = {
        "global_batch": schedule.batch_size, "per_process_batch": schedule.batch_size // max(1, processes),
        "processes": processes, "nodes": nodes, "device": device,
        "iterations": schedule.iterations, "train_images": images, "epochs": epochs,
        "crop": list(training_size(run)) if run.task == "seg" else None,
        "pipeline": run.dataset.pipeline, "optimizer": schedule.optimizer, "lr": schedule.lr,
        "momentum": schedule.momentum, "weight_decay": schedule.weight_decay, "lr_schedule": schedule.lr_schedule,
        "min_lr": schedule.min_lr if schedule.lr_schedule == "poly" else None, "warmup_iters": schedule.warmup_iters,
        "evaluation": EVALUATION if run.dataset.holdout is None else f"{EVALUATION}, on a held-out share of train "
                      f"({run.dataset.holdout.fraction:g})",
        "precision": getattr(schedule, "precision", "fp32"),
        **({"grad_clip": schedule.grad_clip} if schedule.grad_clip is not None else {}),
        **_teacher(run), **_selection(schedule), "student_init": _student_init(run), "terms": _terms(run),
    }
    return card
