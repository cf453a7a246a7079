"""One run, typed: the unit that study grids are made of.

A run is a frozen ``RunSpec``: what to train (the student, or the teacher for a teacher run), the
distillation terms, the data, the schedule and the seed. ``parse_run(data, source)`` validates a
JSON-like dict (one-line errors naming the file and key path) and fills every default;
``RunSpec.to_dict()`` gives back the resolved dict, which is what ``spec.json`` records and what
the run identity hashes (kdbench.ids). ``load_run(path)`` reads a run file. The schema, with
examples, is in studies/README.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from kdbench import locations, losses, plugins
from kdbench.errors import Problems, UserError
from kdbench.losses.params import INPUTS
from kdbench.reading import read_json, read_spec_text
from kdbench.schema import Checker, copy_data, join

TASKS = ("seg", "det")
ROLES = ("student", "teacher")
DATASETS = ("fashion_scenes", "cityscapes", "coco", "voc", "ade20k")
OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("poly", "constant", "step")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")
SELECTIONS = ("last", "best")   # schedule.select: which evaluation a run reports
TERM_KEYS = ("name", "method", "params", "student_location", "teacher_location", "weight",
             "adapter", "resize")
TOP_KEYS = ("task", "role", "name", "teacher", "student", "distill", "dataset", "schedule", "seed",
            "device", "threads", "out", "revision", "plugins", "tracking")
LOGGERS = ("tensorboard", "wandb", "mlflow")  # mmengine's visualisation backends a run's curves go to


@dataclass(frozen=True)
class Schedule:
    iterations: int = 200           # training iterations (0 = evaluate only: a teacher with a checkpoint)
    batch_size: int = 8             # images per iteration, over all GPUs (the paper: 8)
    crop: tuple[int, int] | None = None   # (h, w) random crop; None = the dataset's default
    optimizer: str = "sgd"          # sgd | adamw
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    lr_schedule: str = "poly"       # poly (power 0.9 to min_lr, as the paper and MMRazor) | constant | step
    min_lr: float = 0.0001
    warmup_iters: int = 0
    val_interval: int | None = None   # None = evaluate once, at the end
    checkpoint_interval: int = 50   # iterations between resumable checkpoints (at most the run's iterations)
    num_workers: int = 0
    deterministic: bool = False     # PyTorch's deterministic algorithms, cuDNN deterministic, cuBLAS workspace
    precision: str = "fp32"         # fp32 | bf16 | fp16: autocast of the training step (mmengine's AMP
    #                                 wrapper on CUDA; bf16 only on a CPU); KD terms stay fp32
    grad_clip: float | None = None  # clip the gradients' total L2 norm to this (mmengine's clip_grad); None: off
    select: str = "last"            # the number a run reports: its last evaluation, or its best validation
    #                                 (best: as the CIRKD-lineage code reports; selected on val, optimistic)


DEFAULT_CHECKPOINT_INTERVAL = Schedule.checkpoint_interval
MAX_SEED = 2**32 - 1   # NumPy's and mmengine's seeds are 32-bit: a larger one fails every run it reaches

# Fields added after runs were recorded: in a run's dict (and so its id) only when not at their
# default, so every run recorded before them keeps its id.
LATER_DEFAULTS = {"deterministic": False, "precision": "fp32", "grad_clip": None, "select": "last"}
TEACHER_MODES = ("eval", "bn_eval")
TEACHER_FORWARDS = ("full", "neck")
FEATURE_PARTS = ("backbone", "neck")  # what a detector's extract_feat runs (teacher forward: neck)
# default: the dataset's standard training augmentation (mmseg's for Cityscapes: random resize
# 0.5-2, crop, flip, photometric; mmdet's 1x for COCO); crop_only (Cityscapes): a plain random crop,
# as the CWD paper's official code trains
PIPELINES = ("default", "crop_only")

SCHEDULE_KEYS = tuple(f.name for f in fields(Schedule))


@dataclass(frozen=True)
class Model:
    config: str                     # kdbench config name, "mmseg::dir/file.py", "mmdet::..." or a path
    overrides: dict = field(default_factory=dict)   # dotted config keys merged into the config


@dataclass(frozen=True)
class Student(Model):
    init_from_teacher: tuple[str, ...] = ()   # top-level parts (neck, bbox_head) that start from the teacher
    #                                 checkpoint's weights of the same name, as MMRazor's MGD config does


@dataclass(frozen=True)
class TeacherRun:
    run: str                        # the directory of a complete teacher run, whose weights are used


@dataclass(frozen=True)
class Expect:
    """What a teacher must score when its run evaluates it (the teacher gate): ``metric`` (as the
    run writes it, ``val/mIoU``) within ``tolerance`` points of ``value``. Not part of any run id:
    it changes no number, only whether the teacher's students run."""

    metric: str
    value: float
    tolerance: float = 1.0


@dataclass(frozen=True)
class Teacher(Model):
    checkpoint: str | TeacherRun | None = None   # a path, a URL, a teacher run, or None (trained first)
    trusted: bool = False           # load the checkpoint with weights_only=False (it may run code)
    mode: str = "eval"              # eval: the whole teacher in eval mode (the paper's code); bn_eval:
    #                                 only its norm layers, dropout stays active (MMRazor's distiller)
    expect: Expect | None = None    # the teacher gate (Expect)
    sha256: str | None = None       # a URL checkpoint's SHA-256 (or its first 8+ hex digits), checked by fetch
    forward: str = "full"           # full: the teacher runs as far as its tapped outputs need; neck: only its
    #                                 backbone and neck (extract_feat, MMRazor's FpnTeacherDistill); its
    #                                 locations must be there. The same numbers either way: not in the id


@dataclass(frozen=True)
class Adapter:
    norm: bool = False              # BatchNorm after the 1x1 conv
    act: bool = False               # ReLU after it


@dataclass(frozen=True)
class Term:
    """One distillation term: a loss between student and teacher outputs at module paths."""

    name: str                       # logged as loss_kd_<name>
    method: str                     # a registered loss (kdbench losses)
    params: dict                    # the loss's parameters as given (loss_weight is ``weight``)
    weight: float
    student_location: tuple[str, ...]
    teacher_location: tuple[str, ...]
    adapter: Adapter | None = None
    resize: bool = False            # resize the student map to the teacher's H x W


@dataclass(frozen=True)
class Holdout:
    """Train on the training set less a held-out share of it, and evaluate on that share: val is
    never read (a study's tune stage). The share is drawn by ``seed``, the same on every machine."""

    fraction: float                 # the share of the training images held out, in (0, 1)
    seed: int = 0


@dataclass(frozen=True)
class Dataset:
    name: str
    root: str | None = None         # where the data is (not part of the run's identity)
    params: dict = field(default_factory=dict)
    pipeline: str = "default"       # training augmentation: PIPELINES
    holdout: Holdout | None = None  # None: train on train, evaluate on val


@dataclass(frozen=True)
class Tracking:
    """Where a run's curves (losses, each KD term apart, lr, evaluations) go besides metrics.jsonl.
    How a run is watched, not what it is: never part of its id."""

    loggers: tuple[str, ...] = ("tensorboard",)   # TensorBoard always; wandb and mlflow when listed
    experiment: str | None = None   # W&B project and MLflow experiment: the study's name (None: the run's)
    tags: dict = field(default_factory=dict)      # the run's axis values and seed (a study sets them)


@dataclass(frozen=True)
class RunSpec:
    task: str
    dataset: Dataset
    schedule: Schedule
    role: str = "student"
    name: str = "run"
    student: Model | None = None    # None for a teacher run
    teacher: Teacher | None = None  # None for a student baseline without a teacher
    distill: tuple[Term, ...] = ()
    seed: int = 0
    device: str = "auto"
    revision: int = 0
    out: str | None = None
    plugins: tuple[str, ...] = ()   # modules that register losses (absolute paths or module names)
    threads: int | None = None      # CPU threads (None: 1); a launch sets the study's resources.cpus
    tracking: Tracking = field(default_factory=Tracking)

    @property
    def trained(self) -> Model:
        """The model this run trains (or evaluates): the teacher's for a teacher run."""
        return self.teacher if self.role == "teacher" else self.student

    def to_dict(self) -> dict:
        """The resolved run as plain JSON data (spec.json; the identity hashes it)."""
        data = {"task": self.task, "role": self.role, "name": self.name,
                "dataset": {"name": self.dataset.name, "root": self.dataset.root, "params": self.dataset.params},
                "schedule": _schedule_dict(self.schedule), "distill": [_term_dict(t) for t in self.distill],
                "seed": self.seed, "device": self.device, "revision": self.revision, "out": self.out}
        if self.student is not None:
            data["student"] = {"config": self.student.config, "overrides": self.student.overrides}
            if getattr(self.student, "init_from_teacher", ()):  # a later field: in the id only when set
                data["student"]["init_from_teacher"] = list(self.student.init_from_teacher)
        if self.teacher is not None:
            checkpoint = self.teacher.checkpoint
            data["teacher"] = {"config": self.teacher.config, "overrides": self.teacher.overrides,
                               "checkpoint": {"run": checkpoint.run} if isinstance(checkpoint, TeacherRun)
                               else checkpoint, "trusted": self.teacher.trusted}
            if self.teacher.mode != "eval":  # a later field: in the id only when not its default
                data["teacher"]["mode"] = self.teacher.mode
            if self.teacher.expect is not None:  # never in the id (kdbench.ids)
                data["teacher"]["expect"] = vars(self.teacher.expect).copy()
            if self.teacher.sha256 is not None:  # only when given: every run recorded before it keeps its id
                data["teacher"]["sha256"] = self.teacher.sha256
            if self.teacher.forward != "full":  # never in the id (kdbench.ids): the same numbers
                data["teacher"]["forward"] = self.teacher.forward
        if self.plugins:
            data["plugins"] = list(self.plugins)
        if self.threads is not None:
            data["threads"] = self.threads
        if self.dataset.pipeline != "default":  # a later field: in the id only when not its default
            data["dataset"]["pipeline"] = self.dataset.pipeline
        if self.dataset.holdout is not None:  # a later field: in the id only when set
            data["dataset"]["holdout"] = vars(self.dataset.holdout).copy()
        if self.tracking != Tracking():  # a later field: in spec.json only when set
            data["tracking"] = {"loggers": list(self.tracking.loggers), "experiment": self.tracking.experiment,
                                "tags": self.tracking.tags}
        return data


def _schedule_dict(schedule: Schedule) -> dict:
    data = {key: getattr(schedule, key) for key in SCHEDULE_KEYS
            if key not in LATER_DEFAULTS or getattr(schedule, key) != LATER_DEFAULTS[key]}
    if schedule.crop is not None:
        data["crop"] = list(schedule.crop)
    return data


def _term_dict(term: Term) -> dict:
    adapter = term.adapter
    return {"name": term.name, "method": term.method, "params": term.params, "weight": term.weight,
            "student_location": list(term.student_location), "teacher_location": list(term.teacher_location),
            "adapter": None if adapter is None else {"norm": adapter.norm, "act": adapter.act},
            "resize": term.resize}


# -- validation -------------------------------------------------------------------------------
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


def _overrides(check: Checker, model: dict, path: str) -> dict:
    overrides = model.get("overrides", {})
    check.mapping(overrides, join(path, "overrides"), overrides)
    _finite_everywhere(check, overrides, join(path, "overrides"))
    return overrides


def parse_student(check: Checker, value: Any, path: str) -> Student:
    model = check.mapping(value, path, ("config", "overrides", "init_from_teacher"), required=("config",))
    parts = model.get("init_from_teacher", [])
    parts = [parts] if isinstance(parts, str) else check.sequence(parts, join(path, "init_from_teacher"))
    where = join(path, "init_from_teacher")
    parts = tuple(check.string(p, join(where, i)) for i, p in enumerate(parts))
    for index, part in enumerate(parts):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            raise check.fail(join(where, index), f"must name a top-level part of the model (neck, bbox_head), "
                                                 f"got {part!r}")
    return Student(check.string(model["config"], join(path, "config")), _overrides(check, model, path),
                   tuple(dict.fromkeys(parts)))


def parse_teacher(check: Checker, value: Any, path: str) -> Teacher:
    model = check.mapping(value, path, ("config", "overrides", "checkpoint", "trusted", "mode", "expect", "sha256",
                                        "forward"), required=("config",))
    checkpoint = model.get("checkpoint")
    if isinstance(checkpoint, dict):
        check.mapping(checkpoint, join(path, "checkpoint"), ("run",), required=("run",))
        checkpoint = TeacherRun(check.string(checkpoint["run"], join(path, "checkpoint.run")))
    elif checkpoint is not None:
        check.string(checkpoint, join(path, "checkpoint"))
    return Teacher(check.string(model["config"], join(path, "config")), _overrides(check, model, path),
                   checkpoint, check.boolean(model.get("trusted", False), join(path, "trusted")),
                   check.string(model.get("mode", "eval"), join(path, "mode"), TEACHER_MODES),
                   _expect(check, model.get("expect"), join(path, "expect")),
                   _sha256(check, model.get("sha256"), checkpoint, join(path, "sha256")),
                   check.string(model.get("forward", "full"), join(path, "forward"), TEACHER_FORWARDS))


def _expect(check: Checker, value: Any, path: str) -> Expect | None:
    if value is None:
        return None
    expect = check.mapping(value, path, ("metric", "value", "tolerance"), required=("metric", "value"))
    return Expect(check.string(expect["metric"], join(path, "metric")),
                  check.number(expect["value"], join(path, "value")),
                  check.number(expect.get("tolerance", 1.0), join(path, "tolerance"), minimum=0))


def _sha256(check: Checker, value: Any, checkpoint: Any, path: str) -> str | None:
    """A downloaded checkpoint's expected SHA-256: hex, the whole digest or its first 8 or more digits."""
    if value is None:
        return None
    text = check.string(value, path).lower().removeprefix("sha256:")
    if not (8 <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text)):
        raise check.fail(path, f"must be a SHA-256 in hex (64 digits, or its first 8 or more), got {value!r}")
    if not (isinstance(checkpoint, str) and checkpoint.startswith(("http://", "https://"))):
        raise check.fail(path, "is checked when a checkpoint is downloaded: give it with a URL checkpoint")
    return text


def _locations(check: Checker, value: Any, path: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else check.sequence(value, path, min_length=1)
    found = tuple(check.string(item, join(path, i)) for i, item in enumerate(items))
    for index, location in enumerate(found):
        try:
            locations.split(location)
        except ValueError as error:
            raise check.fail(join(path, index) if len(found) > 1 or not isinstance(value, str) else path,
                             str(error)) from None
    return found


def _adapter(check: Checker, value: Any, path: str) -> Adapter | None:
    if value is True:
        return Adapter()
    if value is None or value is False:
        return None
    adapter = check.mapping(value, path, ("norm", "act"))
    return Adapter(**{k: check.boolean(adapter.get(k, False), join(path, k)) for k in ("norm", "act")})


ADD_A_METHOD = "; or add one as a plugin (README, Your own loss)"


def parse_term(check: Checker, value: Any, path: str) -> Term:
    """One distillation term: its method and parameters checked by the loss's declaration; every
    problem of the term reported at once."""
    term = check.mapping(value, path, TERM_KEYS, required=("method", "student_location"))
    problems = Problems()
    # A plugin's loss where plugins are not imported (status, collect, report): taken as written.
    unchecked = plugins.unimported() and isinstance(term["method"], str) and term["method"] not in losses.available()
    method = problems.get(check.string, term["method"], join(path, "method"),
                          choices=None if unchecked else losses.available(), more=ADD_A_METHOD)
    given = term.get("params", {})
    params = (problems.get(check.mapping, given, join(path, "params"), given if isinstance(given, dict) else (),
                           default={}) if unchecked
              else problems.get(_params, check, term, method, path, default={}) if method else {})
    weight = problems.get(check.number, term.get("weight", 1.0), join(path, "weight"), minimum=0, default=1.0)
    if method and not problems and not unchecked:
        try:  # the declaration checks the values (a temperature <= 0, an unknown norm, ...)
            losses.check_params(method, {**params, "loss_weight": weight})
        except UserError as error:
            problems.add(check.fail(join(path, "params"), str(error)))
    student = problems.get(_locations, check, term["student_location"], join(path, "student_location"), default=())
    teacher = problems.get(_locations, check, term.get("teacher_location", student), join(path, "teacher_location"),
                           default=())
    if student and teacher and len(teacher) != len(student):
        problems.add(check.fail(join(path, "teacher_location"), "must list as many locations as student_location"))
    name = term.get("name", f"{method}_{re.sub(r'[^A-Za-z0-9_]', '', student[0].split('.')[-1])}"
                    if student else method)
    name = problems.get(lambda: check.printable(check.string(name, join(path, "name")), join(path, "name"),
                                                "a term's name"))
    adapter = problems.get(_adapter, check, term.get("adapter"), join(path, "adapter"))
    resize = problems.get(check.boolean, term.get("resize", False), join(path, "resize"))
    problems.raise_any()
    return Term(name, method, copy_data(params), weight, student, teacher, adapter, resize)


def _params(check: Checker, term: dict, method: str, path: str) -> dict:
    return check.mapping(term.get("params", {}), join(path, "params"),
                         [p for p in losses.parameters(method) if p != "loss_weight"])


def parse_schedule(check: Checker, value: Any, path: str, trains: bool = True) -> Schedule:
    """The schedule, defaults filled in. ``trains``: the run trains (every run but a teacher run
    that evaluates its checkpoint), so it needs an iteration, and an interval given beyond its
    iterations would never be reached."""
    given = check.mapping(value, path, SCHEDULE_KEYS)
    schedule = {**{f.name: f.default for f in fields(Schedule)}, **given}
    problems = Problems()
    iterations = problems.get(check.integer, schedule["iterations"], join(path, "iterations"), minimum=0)
    if trains and iterations is not None and iterations < 1:
        problems.add(check.fail(join(path, "iterations"), "must be >= 1 on a training run (0 only evaluates a "
                                                          f"teacher's checkpoint), got {iterations}"))
    problems.get(check.integer, schedule["batch_size"], join(path, "batch_size"), minimum=1)
    if schedule["crop"] is not None:
        schedule["crop"] = problems.get(_crop, check, schedule["crop"], join(path, "crop"))
    problems.get(check.string, schedule["optimizer"], join(path, "optimizer"), OPTIMIZERS)
    problems.get(check.string, schedule["lr_schedule"], join(path, "lr_schedule"), LR_SCHEDULES)
    problems.get(check.number, schedule["lr"], join(path, "lr"), positive=True)
    for key in ("momentum", "weight_decay", "min_lr"):
        problems.get(check.number, schedule[key], join(path, key), minimum=0)
    for key in ("warmup_iters", "num_workers"):
        problems.get(check.integer, schedule[key], join(path, key), minimum=0)
    for key in ("val_interval", "checkpoint_interval"):
        if schedule[key] is None or problems.get(check.integer, schedule[key], join(path, key), minimum=1) is None:
            continue
        # The default checkpoint interval beyond a short run is derived, not refused: the run
        # checkpoints at its last iteration (runners.train). A run file a launch writes lists it.
        derived = key == "checkpoint_interval" and schedule[key] == DEFAULT_CHECKPOINT_INTERVAL
        if trains and key in given and not derived and isinstance(iterations, int) and schedule[key] > iterations:
            problems.add(check.fail(join(path, key), f"{schedule[key]} is more than the run's {iterations} "
                                                     "iterations: it would never be reached"))
    problems.get(check.boolean, schedule["deterministic"], join(path, "deterministic"))
    problems.get(check.string, schedule["precision"], join(path, "precision"), PRECISIONS)
    if schedule["grad_clip"] is not None:
        problems.get(check.number, schedule["grad_clip"], join(path, "grad_clip"), positive=True)
    problems.get(_select, check, schedule, join(path, "select"), trains)
    problems.raise_any()
    return Schedule(**schedule)


def _select(check: Checker, schedule: dict, path: str, trains: bool) -> str:
    """``best`` chooses among the evaluations made during training: a run needs one before its end."""
    select = check.string(schedule["select"], path, SELECTIONS)
    interval, iterations = schedule["val_interval"], schedule["iterations"]
    if select == "best" and trains and not (isinstance(interval, int) and isinstance(iterations, int)
                                            and interval < iterations):
        raise check.fail(path, f"best chooses among the evaluations during training, but val_interval is "
                               f"{interval} for {iterations} iterations (one evaluation, at the end): set a "
                               "val_interval below iterations, or select: last")
    return select


def _crop(check: Checker, crop: Any, path: str) -> tuple[int, int]:
    crop = [crop, crop] if isinstance(crop, int) and not isinstance(crop, bool) else crop
    crop = check.sequence(crop, path, min_length=2)
    if len(crop) != 2:
        raise check.fail(path, "must be [height, width] or one integer")
    return tuple(check.integer(c, f"{path}[{i}]", minimum=1) for i, c in enumerate(crop))


def parse_dataset(check: Checker, value: Any, path: str) -> Dataset:
    dataset = check.mapping(value, path, ("name", "root", "params", "pipeline", "holdout"), required=("name",))
    name = check.string(dataset["name"], join(path, "name"), DATASETS)
    root = dataset.get("root")
    if root is not None:
        check.string(root, join(path, "root"))
    elif name != "fashion_scenes":
        raise check.fail(join(path, "root"), f"{name} needs the path of its data")
    params = dataset.get("params", {})
    check.mapping(params, join(path, "params"), params)
    _finite_everywhere(check, params, join(path, "params"))
    pipeline = check.string(dataset.get("pipeline", "default"), join(path, "pipeline"), PIPELINES)
    if pipeline == "crop_only" and name != "cityscapes":
        raise check.fail(join(path, "pipeline"), f"crop_only is a Cityscapes pipeline; {name} takes default")
    holdout = parse_holdout(check, dataset["holdout"], join(path, "holdout")) \
        if dataset.get("holdout") is not None else None
    return Dataset(name, root, copy_data(params), pipeline, holdout)


def parse_holdout(check: Checker, value: Any, path: str) -> Holdout:
    """``{fraction: 0.2, seed: 0}``: the share of the training set held out, and the seed that draws it."""
    holdout = check.mapping(value, path, ("fraction", "seed"), required=("fraction",))
    fraction = check.number(holdout["fraction"], join(path, "fraction"), positive=True)
    if not fraction < 1:
        raise check.fail(join(path, "fraction"), f"must be between 0 and 1 (a share of the training set), "
                                                 f"got {fraction!r}")
    return Holdout(fraction, check.integer(holdout.get("seed", 0), join(path, "seed"), minimum=0, maximum=MAX_SEED))


def parse_tracking(check: Checker, value: Any, path: str) -> Tracking:
    """``{loggers: [...], experiment: NAME, tags: {...}}``; TensorBoard is always among the loggers."""
    given = check.mapping(value, path, ("loggers", "experiment", "tags"))
    loggers = [check.string(item, join(path, f"loggers[{i}]"), LOGGERS)
               for i, item in enumerate(check.sequence(given.get("loggers", []), join(path, "loggers")))]
    experiment = given.get("experiment")
    if experiment is not None:
        check.printable(check.string(experiment, join(path, "experiment")), join(path, "experiment"), "an experiment")
    tags = check.mapping(given.get("tags", {}), join(path, "tags"), given.get("tags") or {})
    _finite_everywhere(check, tags, join(path, "tags"))
    return Tracking(tuple(dict.fromkeys(["tensorboard", *loggers])), experiment, copy_data(tags))


def _parse_models(check: Checker, run: dict, role: str) -> tuple[Model | None, Teacher | None, tuple[Term, ...]]:
    """(student, teacher, distill terms), in the order a reader checks them."""
    if role == "teacher":
        teacher = parse_teacher(check, run.get("teacher"), "teacher")
        if "student" in run or run.get("distill"):
            raise check.fail("role", "a teacher run has no student and no distill terms")
        return None, teacher, ()
    problems = Problems()
    student = problems.get(parse_student, check, run.get("student"), "student")
    terms = problems.get(check.sequence, run.get("distill", []), "distill", default=[])
    distill = tuple(problems.get(parse_term, check, t, f"distill[{i}]") for i, t in enumerate(terms))
    teacher = problems.get(parse_teacher, check, run.get("teacher"), "teacher") if terms or "teacher" in run else None
    names = [t.name for t in distill if t is not None]
    if len(set(names)) != len(names):
        problems.add(check.fail("distill", f"term names must be unique, got {names}"))
    if terms and teacher is not None and teacher.checkpoint is None:
        problems.add(check.fail("teacher.checkpoint",
                                "a distillation run needs the teacher's weights: a path, a URL or {run: DIR}"))
    if student is not None and student.init_from_teacher and (not terms or teacher is None):
        problems.add(check.fail("student.init_from_teacher", "starts parts of the student from the teacher's "
                                "checkpoint: the run needs distill terms and a teacher with a checkpoint"))
    if teacher is not None and teacher.forward == "neck":
        for index, term in enumerate(t for t in distill if t is not None):
            outside = [p for p in term.teacher_location if locations.module_of(p).split(".")[0] not in FEATURE_PARTS]
            if outside:
                problems.add(check.fail(f"distill[{index}].teacher_location", f"{outside[0]!r} is outside the "
                                        "backbone and neck, which are all a teacher with forward: neck runs"))
    problems.raise_any()
    return student, teacher, distill


def _declared(method: str):
    """A term's loss declaration; None for a plugin's loss left unimported (status, collect, report
    take such a term as written: kdbench.plugins.not_imported)."""
    return losses.declaration(method) if method in losses.available() else None


def _check_inputs(check: Checker, term: Term, task: str, path: str) -> None:
    """A term's loss may need an input only runs of one task have (``losses.params.INPUTS``: the
    segmentation labels, the ground-truth boxes)."""
    declared = _declared(term.method)
    for needed, (needed_task, what) in INPUTS.items():
        if getattr(declared, needed, False) and task != needed_task:
            raise check.fail(path, f"{term.method!r} needs {what}, which a {task} run does not have; "
                                   f"use it in a {needed_task} run")


def parse_run(data: Any, source: str = "<run>", plugin_entries: tuple[str, ...] | None = None) -> RunSpec:
    """Check a run dict and return the resolved, typed run with every default filled in.

    ``plugin_entries``: the run's plugins, already loaded (a study loads its own once); else the
    run's ``plugins`` key is read (paths relative to ``source``'s folder) and loaded here.
    """
    check = Checker(source)
    run = check.mapping(data, "", TOP_KEYS, required=("task", "dataset"))
    if plugin_entries is None:  # before the terms name their losses
        plugin_entries = plugins.load(check, run.get("plugins", []), "plugins",
                                      Path(source).parent if source != "<run>" else Path.cwd())
    problems = Problems()   # each section checked, whatever the others hold
    task = problems.get(check.string, run["task"], "task", TASKS)
    role = problems.get(check.string, run.get("role", "student"), "role", ROLES)
    student, teacher, distill = problems.get(_parse_models, check, run, role, default=(None, None, ()))
    for index, term in enumerate(distill if task is not None else ()):
        problems.get(_check_inputs, check, term, task, join(f"distill[{index}]", "method"))
    for index, term in enumerate(distill if task not in (None, "det") else ()):
        if getattr(_declared(term.method), "needs_heads", False):
            problems.add(check.fail(join(f"distill[{index}]", "method"), f"{term.method!r} needs the detection "
                                    f"heads, which a {task} run does not have; use it in a det run"))
    for index, term in enumerate(distill):
        if getattr(_declared(term.method), "needs_heads", False) and (term.adapter or term.resize):
            key = "adapter" if term.adapter else "resize"
            problems.add(check.fail(join(f"distill[{index}]", key), f"{term.method!r} is given the heads, not "
                                    "two maps: an adapter or resize does not apply; drop it"))
    dataset = problems.get(parse_dataset, check, run["dataset"], "dataset")
    trains = role != "teacher" or teacher is None or teacher.checkpoint is None
    schedule = problems.get(parse_schedule, check, run.get("schedule", {}), "schedule", trains)
    seed = problems.get(check.integer, run.get("seed", 0), "seed", minimum=0, maximum=MAX_SEED)
    device = problems.get(check.string, run.get("device", "auto"), "device", DEVICES)
    threads = run.get("threads")
    if threads is not None:
        problems.get(check.integer, threads, "threads", minimum=1)
    name = run["name"] if "name" in run else Path(source).stem if source != "<run>" else "run"
    problems.get(lambda: check.printable(check.string(name, "name"), "name", "the run's name"))
    revision = problems.get(check.integer, run.get("revision", 0), "revision", minimum=0)
    out = run.get("out")
    if out is not None:
        problems.get(check.string, out, "out")
    tracking = problems.get(parse_tracking, check, run["tracking"], "tracking") if "tracking" in run else Tracking()
    problems.raise_any()
    return RunSpec(task, dataset, schedule, role, name, student, teacher, distill, seed, device, revision, out,
                   tuple(plugin_entries), threads, tracking)


def load_run(path: str | Path) -> RunSpec:
    """Read and validate a run file (JSON)."""
    path = Path(path)
    return parse_run(read_json(read_spec_text(path, "the run file"), str(path)), str(path))
