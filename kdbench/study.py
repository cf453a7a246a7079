"""Study specs: YAML files that describe a grid of runs.

``load_spec(path)`` reads a spec (kdbench.reading: the safe loader, without aliases or repeated
keys), merges at most one level of ``defaults:``, loads its plugins and validates every section
(one-line errors naming the file and key path), and returns a frozen ``StudySpec``.
``kdbench.expand.expand`` turns it into runs; ``load_study`` does both. The schema is in studies/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench import plugins
from kdbench.errors import UserError
from kdbench.reading import read_yaml
from kdbench.schema import Checker, copy_data, join, safe_name
from kdbench.spec import TOP_KEYS, parse_term, parse_tracking

STUDY_KEYS = ("name", "description", "revision", "defaults", "base", "teacher_run", "methods", "grid",
              "zip", "exclude", "seeds", "baselines", "resources", "references", "plugins", "provenance",
              "loggers")
BASE_KEYS = tuple(k for k in TOP_KEYS if k not in ("name", "out", "seed", "plugins", "threads", "tracking"))
SPECIAL_AXES = ("method",)          # picks an entry of `methods`
TERM_PREFIX = "term."               # term.params.tau: set on every distill term of the run
NOT_AXES = ("name", "out", "device", "plugins", "threads", "tracking")


@dataclass(frozen=True)
class Resources:
    """What one run asks of a node; not part of any run's identity."""

    gpus: int = 1                   # GPUs per node of a run (several: one task per GPU, mmengine's launcher)
    nodes: int = 1                  # nodes per run: one job of nodes x gpus tasks, one process group
    cpus: int = 4                   # CPUs per task
    mem_gb: int = 16
    time_min: int = 240             # the scheduler's time limit; a run past it is checkpointed and requeued
    partition: str | None = None    # None = the cluster's default

    def text(self) -> str:
        gpus = f"{self.gpus} gpu" if self.nodes == 1 else f"{self.nodes} nodes x {self.gpus} gpu"
        parts = [gpus, f"{self.cpus} cpu", f"{self.mem_gb}G", f"{self.time_min}m"]
        return " ".join(parts + ([self.partition] if self.partition else []))


@dataclass(frozen=True)
class Axis:
    path: str                       # "method", "term.params.tau", or a run field ("schedule.lr")
    values: tuple
    where: str                      # its key path in the spec, for errors: "grid.schedule.lr"


@dataclass(frozen=True)
class StudySpec:
    path: Path
    name: str
    revision: int                   # part of every run's id: bump it to rerun a study from scratch
    base: dict                      # the partial run every run starts from (validated per run)
    methods: dict                   # method name -> tuple of term dicts (each validated)
    axes: tuple[tuple[Axis, ...], ...]   # one group per grid axis and one per zip block
    exclude: tuple[dict, ...]       # cells to leave out: every listed axis must match
    seeds: tuple[int, ...]
    teacher_schedule: dict          # teacher_run.schedule: merged over base.schedule for teacher runs
    teacher_seed: int
    train_teacher_baseline: bool    # baselines.teacher
    student_baseline: bool          # baselines.student
    resources: Resources
    references: tuple[str, ...]     # files in studies/references/
    plugins: tuple[str, ...]        # resolved plugin entries (kdbench.plugins)
    loggers: tuple[str, ...]        # where every run's curves go: tensorboard, and wandb / mlflow when listed
    raw: dict                       # the spec as read, defaults merged: provenance and error key paths
    teacher_expect: dict | None = None  # the teacher gate a teacher without teacher.expect gets (reference_expect)


def _read_yaml(path: Path, check: Checker) -> dict:
    try:
        text = path.read_text()
    except OSError as error:
        raise UserError(f"{path}: cannot read the study ({error.strerror})") from None
    data = read_yaml(text, str(path))
    if data is None:
        raise UserError(f"{path}: the study is empty")
    return check.mapping(data, "", STUDY_KEYS)


def merge(base: Any, override: Any) -> Any:
    """``override`` merged over ``base``, mappings key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base.get(key), value) if key in base else copy_data(value)
        return merged
    return copy_data(override)


def _with_defaults(path: Path, check: Checker, data: dict) -> dict:
    if "defaults" not in data:
        return data
    parent_path = path.parent / check.string(data["defaults"], "defaults")
    if not parent_path.is_file():
        raise check.fail("defaults", f"{parent_path} does not exist")
    parent = _read_yaml(parent_path, Checker(str(parent_path)))
    if "defaults" in parent:
        raise check.fail("defaults", f"{parent_path} has defaults of its own; only one level is allowed")
    return merge(parent, {k: v for k, v in data.items() if k != "defaults"})


def _methods(check: Checker, data: dict) -> dict[str, tuple[dict, ...]]:
    methods = check.mapping(data.get("methods") or {}, "methods", (data.get("methods") or {}).keys())
    for key, value in methods.items():
        check.printable(str(key), "methods", "a method's name")   # it names runs
        terms = value if isinstance(value, list) else [value]
        if not terms:
            raise check.fail(join("methods", key), "must be a term or a non-empty list of terms")
        for index, term in enumerate(terms):
            where = join(join("methods", key), index) if isinstance(value, list) else join("methods", key)
            parse_term(check, term, where)
        methods[key] = tuple(terms)
    return methods


def _axis_path(check: Checker, path: str, where: str, seen: set[str]) -> None:
    if path in seen:
        raise check.fail(where, f"axis {path!r} appears twice")
    seen.add(path)
    root = path.split(".")[0]
    if path == "seed" or root in NOT_AXES:
        raise check.fail(where, f"axis {path!r} cannot vary here (seeds go in `seeds:`)")
    if path in SPECIAL_AXES or path.startswith(TERM_PREFIX) or root in BASE_KEYS:
        return
    raise check.fail(where, f"unknown axis {path!r}; valid: method, term.<key>, or a run field "
                            f"({', '.join(k for k in BASE_KEYS if k != 'device')})")


def _axes(check: Checker, data: dict, methods: dict) -> tuple[tuple[Axis, ...], ...]:
    """One group per grid axis and one per zip block; without a method axis anywhere, every
    method is a cell (a method axis over all of them comes first)."""
    grid = data.get("grid") or {}
    zipped = data.get("zip") or []
    if methods and "method" not in grid and not any("method" in (z or {}) for z in zipped):
        grid = {"method": list(methods), **grid}
    seen: set[str] = set()
    groups = []
    for path, value in check.mapping(grid, "grid", grid.keys()).items():
        where = join("grid", str(path))
        _axis_path(check, str(path), where, seen)
        values = _axis_values(check, value, where)
        if path == "method":
            for i, item in enumerate(values):
                if item not in methods:
                    raise check.fail(join(where, i), f"{item!r} is not in methods; valid: {', '.join(methods)}")
        groups.append((Axis(str(path), tuple(values), where),))
    for index, block in enumerate(check.sequence(zipped, "zip")):
        where = join("zip", index)
        block = check.mapping(block, where, block.keys() if isinstance(block, dict) else ())
        axes = []
        for path, value in block.items():
            _axis_path(check, str(path), join(where, str(path)), seen)
            axes.append(Axis(str(path), tuple(_axis_values(check, value, join(where, str(path)))),
                             join(where, str(path))))
        lengths = sorted({len(axis.values) for axis in axes})
        if len(lengths) > 1:
            raise check.fail(where, f"zipped axes must have equal lengths, got {lengths}")
        if axes:
            groups.append(tuple(axes))
    return tuple(groups)


def _axis_values(check: Checker, value: Any, where: str) -> list:
    """An axis's values; text among them names runs, so it must be printable."""
    values = check.sequence(value, where, min_length=1)
    for index, item in enumerate(values):
        if isinstance(item, str):
            check.printable(item, join(where, index), "an axis value (it names runs)")
    return values


def _resources(check: Checker, data: dict) -> Resources:
    given = check.mapping(data.get("resources", {}), "resources", Resources.__dataclass_fields__)
    resources = Resources(**given)
    for key in ("gpus", "nodes", "cpus", "mem_gb", "time_min"):
        check.integer(getattr(resources, key), join("resources", key), minimum=0 if key == "gpus" else 1)
    if resources.partition is not None:
        check.string(resources.partition, "resources.partition")
        if not safe_name(resources.partition):  # it goes into a batch script
            raise check.fail("resources.partition",
                             f"{resources.partition!r} must be letters, digits, '_', '-' or '.'")
    return resources


def _seeds(check: Checker, data: dict) -> tuple[int, ...]:
    seeds = tuple(check.integer(s, join("seeds", i), minimum=0)
                  for i, s in enumerate(check.sequence(data.get("seeds", [0]), "seeds", min_length=1)))
    if len(set(seeds)) != len(seeds):
        raise check.fail("seeds", f"seeds repeat: {list(seeds)}")
    return seeds


def _references(check: Checker, data: dict, path: Path) -> tuple[str, ...]:
    references = tuple(check.string(r, join("references", i))
                       for i, r in enumerate(check.sequence(data.get("references", []), "references")))
    for index, reference in enumerate(references):
        if not (path.parent / "references" / reference).is_file():
            raise check.fail(join("references", index), f"{reference!r} is not a file in {path.parent / 'references'}")
    return references


def spec_value(data: Any, path: str) -> tuple[bool, Any]:
    """(found, value) of a key path in a study as written: ``base.schedule.lr``, ``zip[0].schedule.lr``
    (an axis key holds dots of its own: the longest key that matches is taken first)."""
    tokens = path.replace("[", ".[").split(".")
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.startswith("[") and token.endswith("]") and token[1:-1].isdigit():
            position = int(token[1:-1])
            if not isinstance(data, list) or position >= len(data):
                return False, None
            data, index = data[position], index + 1
            continue
        if not isinstance(data, dict):
            return False, None
        for end in range(len(tokens), index, -1):
            key = ".".join(tokens[index:end])
            if key in data:
                data, index = data[key], end
                break
        else:
            return False, None
    return True, data


def _provenance(check: Checker, data: dict) -> None:
    """``provenance:``: where each protocol value comes from (a key path of this study, or of its
    defaults file, -> the upstream file or paper section it was checked against). A path that names
    nothing in the study is refused, so a citation cannot outlive the value it cites."""
    provenance = check.mapping(data.get("provenance", {}), "provenance", data.get("provenance", {}) or ())
    for key, source in provenance.items():
        check.printable(check.string(source, join("provenance", key)), join("provenance", key), "a source")
        if key.startswith("provenance") or not spec_value(data, key)[0]:
            raise check.fail(join("provenance", key), "names no value of this study; cite a key path such as "
                                                      "base.schedule.lr or methods.<name>.weight")


REFERENCE_METRICS = {"seg": ("miou", "val/mIoU"), "det": ("ap", "val/bbox_mAP")}  # a row's metric -> the run's


def reference_expect(path: Path, references: tuple[str, ...], task: str) -> dict | None:
    """The teacher gate implied by the study's published rows: when every row of the task's metric
    that states a ``teacher_value`` states the same one, a teacher without ``teacher.expect`` is
    expected to score it within 1 point (the rows' teacher is the study's). Rows that disagree (other
    teachers, as CIRKD's) imply nothing."""
    import csv

    wanted, metric = REFERENCE_METRICS.get(task, ("", ""))
    values = set()
    for name in references:
        with open(path.parent / "references" / name, newline="") as handle:
            for row in csv.DictReader(handle):
                shown = "".join(ch for ch in (row.get("metric") or "").lower() if ch.isalnum())
                if shown.endswith(wanted) and (row.get("teacher_value") or "").strip():
                    values.add(float(row["teacher_value"]))
    return {"metric": metric, "value": values.pop(), "tolerance": 1.0} if len(values) == 1 else None


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study spec (each section in turn; the first problem raises)."""
    path = Path(path)
    check = Checker(str(path))
    data = _with_defaults(path, check, _read_yaml(path, check))
    name = check.printable(check.string(data.get("name", path.stem), "name"), "name", "the study's name")
    if not safe_name(name) or name.startswith("."):
        raise check.fail("name", f"{name!r} must be letters, digits, '_', '-' or '.' (it names a directory)")
    revision = check.integer(data.get("revision", 0), "revision", minimum=0)
    if "description" in data:  # report text: lines of printable characters
        for line in check.string(data["description"], "description").splitlines():
            check.printable(line.replace("\t", " "), "description", "a line of the description")
    base = check.mapping(data.get("base", {}), "base", BASE_KEYS, required=("task", "dataset"))
    loaded = plugins.load(check, data.get("plugins", []), "plugins", path.parent)  # before methods name them
    methods = _methods(check, data)
    seeds = _seeds(check, data)
    baselines = check.mapping(data.get("baselines", {}), "baselines", ("teacher", "student"))
    resources = _resources(check, data)
    references = _references(check, data, path)
    teacher_run = check.mapping(data.get("teacher_run", {}), "teacher_run", ("schedule", "seed"))
    axes = _axes(check, data, methods)
    exclude = tuple(check.mapping(rule, join("exclude", i), rule.keys() if isinstance(rule, dict) else ())
                    for i, rule in enumerate(check.sequence(data.get("exclude", []), "exclude")))
    _provenance(check, data)
    return StudySpec(
        path=path, name=name, revision=revision, base=base, methods=methods, axes=axes, exclude=exclude,
        seeds=seeds, teacher_schedule=teacher_run.get("schedule", {}), teacher_seed=teacher_run.get("seed", 0),
        train_teacher_baseline=check.boolean(baselines.get("teacher", True), "baselines.teacher"),
        student_baseline=check.boolean(baselines.get("student", True), "baselines.student"),
        resources=resources, references=references, plugins=loaded,
        loggers=parse_tracking(check, {"loggers": data.get("loggers", [])}, "").loggers,
        raw={**data, "name": name, "revision": revision},
        teacher_expect=reference_expect(path, references, str(base.get("task"))))
