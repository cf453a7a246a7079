"""One run, fully described by a JSON object: the unit that study grids are made of.

``load_run(path)`` reads and validates a run file and returns the resolved dict (defaults filled
in), which is what ``spec.json`` records and what the run identity hashes. See
``studies/README.md`` for the schema with examples.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kdbench.errors import UserError
from kdbench.schema import Checker, copy_data, join

TASKS = ("seg", "det")
ROLES = ("student", "teacher")
DATASETS = ("fashion_scenes", "cityscapes", "coco")
OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("poly", "constant", "step")
DEVICES = ("auto", "cpu", "cuda")

SCHEDULE_DEFAULTS: dict[str, Any] = {
    "iterations": 200,          # training iterations (0 = evaluate only; teacher runs with a checkpoint)
    "batch_size": 8,            # images per iteration (the paper: 8)
    "crop": None,               # [h, w] random crop; None = the dataset's default
    "optimizer": "sgd",
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "lr_schedule": "poly",      # poly 0.9 to min_lr, as the paper and MMRazor
    "min_lr": 0.0001,
    "warmup_iters": 0,
    "val_interval": None,       # None = evaluate once, at the end
    "checkpoint_interval": 50,  # iterations between resumable checkpoints
    "num_workers": 0,
}
TERM_KEYS = ("name", "method", "params", "student_location", "teacher_location", "weight",
             "adapter", "resize")
TOP_KEYS = ("task", "role", "name", "teacher", "student", "distill", "dataset", "schedule", "seed",
            "device", "out", "revision")
# Keys that do not change the numbers: left out of the run identity.
NON_IDENTITY_KEYS = ("name", "device", "out")


def _model(check: Checker, value: Any, path: str, is_teacher: bool) -> dict:
    allowed = ("config", "overrides", "checkpoint", "trusted") if is_teacher else ("config", "overrides")
    model = check.mapping(value, path, allowed, required=("config",))
    check.string(model["config"], join(path, "config"))
    model.setdefault("overrides", {})
    check.mapping(model["overrides"], join(path, "overrides"), model["overrides"])
    _finite_everywhere(check, model["overrides"], join(path, "overrides"))
    if is_teacher:
        ckpt = model.setdefault("checkpoint", None)
        if isinstance(ckpt, dict):
            check.mapping(ckpt, join(path, "checkpoint"), ("run",), required=("run",))
            check.string(ckpt["run"], join(path, "checkpoint.run"))
        elif ckpt is not None:
            check.string(ckpt, join(path, "checkpoint"))
        check.boolean(model.setdefault("trusted", False), join(path, "trusted"))
    return model


def _finite_everywhere(check: Checker, value: Any, path: str) -> None:
    """NaN and Inf are not JSON and never a sensible setting: reject them wherever they are."""
    if isinstance(value, float) and not math.isfinite(value):
        raise check.fail(path, f"must be a finite number, got {value!r}")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite_everywhere(check, item, join(path, str(key)))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _finite_everywhere(check, item, join(path, index))


def _locations(check: Checker, value: Any, path: str) -> list[str]:
    items = [value] if isinstance(value, str) else check.sequence(value, path, min_length=1)
    return [check.string(item, join(path, i)) for i, item in enumerate(items)]


def validate_term(check: Checker, value: Any, path: str) -> dict:
    from kdbench import loss_catalog as losses  # the registry's answers, without importing torch

    term = check.mapping(value, path, TERM_KEYS, required=("method", "student_location"))
    method = check.string(term["method"], join(path, "method"), choices=losses.available())
    params = check.mapping(term.setdefault("params", {}), join(path, "params"),
                           [p for p in losses.parameters(method) if p != "loss_weight"])
    weight = check.number(term.get("weight", 1.0), join(path, "weight"), minimum=0)
    try:  # building the loss checks the values (a temperature <= 0, an unknown norm, ...)
        losses.check(method, params, weight)
    except UserError as error:
        raise check.fail(join(path, "params"), str(error)) from None
    term["student_location"] = _locations(check, term["student_location"], join(path, "student_location"))
    term["teacher_location"] = _locations(
        check, term.get("teacher_location", term["student_location"]), join(path, "teacher_location")
    )
    if len(term["teacher_location"]) != len(term["student_location"]):
        raise check.fail(join(path, "teacher_location"),
                         "must list as many locations as student_location")
    term["weight"] = weight
    adapter = term.setdefault("adapter", None)
    if adapter is True:
        term["adapter"] = {"norm": False, "act": False}
    elif adapter is not None and adapter is not False:
        adapter = check.mapping(adapter, join(path, "adapter"), ("norm", "act"))
        term["adapter"] = {k: check.boolean(adapter.get(k, False), join(path, f"adapter.{k}"))
                           for k in ("norm", "act")}
    else:
        term["adapter"] = None
    term["resize"] = check.boolean(term.get("resize", False), join(path, "resize"))
    term.setdefault("name", f"{method}_{term['student_location'][0].split('.')[-1]}")
    check.string(term["name"], join(path, "name"))
    return term


def _schedule(check: Checker, value: Any, path: str) -> dict:
    schedule = {**SCHEDULE_DEFAULTS, **check.mapping(value, path, SCHEDULE_DEFAULTS)}
    check.integer(schedule["iterations"], join(path, "iterations"), minimum=0)
    check.integer(schedule["batch_size"], join(path, "batch_size"), minimum=1)
    crop = schedule["crop"]
    if crop is not None:
        crop = [crop, crop] if isinstance(crop, int) and not isinstance(crop, bool) else crop
        crop = check.sequence(crop, join(path, "crop"), min_length=2)
        if len(crop) != 2:
            raise check.fail(join(path, "crop"), "must be [height, width] or one integer")
        schedule["crop"] = [check.integer(c, join(path, f"crop[{i}]"), minimum=1) for i, c in enumerate(crop)]
    check.string(schedule["optimizer"], join(path, "optimizer"), OPTIMIZERS)
    check.string(schedule["lr_schedule"], join(path, "lr_schedule"), LR_SCHEDULES)
    check.number(schedule["lr"], join(path, "lr"), positive=True)
    for key in ("momentum", "weight_decay", "min_lr"):
        check.number(schedule[key], join(path, key), minimum=0)
    for key in ("warmup_iters", "num_workers"):
        check.integer(schedule[key], join(path, key), minimum=0)
    for key in ("val_interval", "checkpoint_interval"):
        if schedule[key] is not None:
            check.integer(schedule[key], join(path, key), minimum=1)
    return schedule


def validate_run(data: Any, source: str = "<run>") -> dict:
    """Check a run dict and return a resolved deep copy with every default filled in."""
    check = Checker(source)
    run = copy_data(check.mapping(data, "", TOP_KEYS, required=("task", "dataset")))
    check.string(run["task"], "task", TASKS)
    role = check.string(run.setdefault("role", "student"), "role", ROLES)
    if role == "teacher":
        run["teacher"] = _model(check, run.get("teacher"), "teacher", is_teacher=True)
        if "student" in run or run.get("distill"):
            raise check.fail("role", "a teacher run has no student and no distill terms")
        run["distill"] = []
    else:
        run["student"] = _model(check, run.get("student"), "student", is_teacher=False)
        terms = check.sequence(run.setdefault("distill", []), "distill")
        run["distill"] = [validate_term(check, t, f"distill[{i}]") for i, t in enumerate(terms)]
        names = [t["name"] for t in run["distill"]]
        if len(set(names)) != len(names):
            raise check.fail("distill", f"term names must be unique, got {names}")
        if run["distill"]:
            run["teacher"] = _model(check, run.get("teacher"), "teacher", is_teacher=True)
            if run["teacher"]["checkpoint"] is None:
                raise check.fail("teacher.checkpoint",
                                 "a distillation run needs the teacher's weights: a path, a URL or {run: DIR}")
        elif "teacher" in run:
            run["teacher"] = _model(check, run["teacher"], "teacher", is_teacher=True)
    dataset = check.mapping(run["dataset"], "dataset", ("name", "root", "params"), required=("name",))
    check.string(dataset["name"], "dataset.name", DATASETS)
    dataset.setdefault("root", None)
    if dataset["root"] is not None:
        check.string(dataset["root"], "dataset.root")
    elif dataset["name"] != "fashion_scenes":
        raise check.fail("dataset.root", f"{dataset['name']} needs the path of its data")
    dataset.setdefault("params", {})
    check.mapping(dataset["params"], "dataset.params", dataset["params"])
    _finite_everywhere(check, dataset["params"], "dataset.params")
    run["dataset"] = dataset
    run["schedule"] = _schedule(check, run.get("schedule", {}), "schedule")
    check.integer(run.setdefault("seed", 0), "seed", minimum=0)
    check.string(run.setdefault("device", "auto"), "device", DEVICES)
    run.setdefault("name", Path(source).stem if source != "<run>" else "run")
    check.string(run["name"], "name")
    check.integer(run.setdefault("revision", 0), "revision", minimum=0)
    run.setdefault("out", None)
    if run["out"] is not None:
        check.string(run["out"], "out")
    return run


def load_run(path: str | Path) -> dict:
    """Read and validate a run file (JSON)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise UserError(f"{path}: cannot read the run file ({error.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    return validate_run(data, str(path))


def identity_payload(run: dict) -> dict:
    """What changes the numbers: the resolved run without name, device, output directory and
    where the dataset is mounted (the same data under another path is the same run)."""
    payload = {k: v for k, v in run.items() if k not in NON_IDENTITY_KEYS}
    if isinstance(payload.get("dataset"), dict):
        payload["dataset"] = {k: v for k, v in payload["dataset"].items() if k != "root"}
    teacher = payload.get("teacher")
    if isinstance(teacher, dict) and isinstance(teacher.get("checkpoint"), dict):
        # {run: DIR}: the teacher run's directory is named by its id; where the store lives is not
        # part of the run.
        checkpoint = {"run": Path(str(teacher["checkpoint"].get("run", ""))).name}
        payload["teacher"] = {**teacher, "checkpoint": checkpoint}
    return payload
