"""Study specs: YAML files that describe a grid of runs.

``load_spec(path)`` reads a spec (kdbench.reading: the safe loader, without aliases or repeated
keys), merges at most one level of ``defaults:``, loads its plugins and validates every section
(one-line errors naming the file and key path), and returns a frozen ``StudySpec``.
``kdbench.expand.expand`` turns it into runs; ``load_study`` does both. The schema is in studies/README.md.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench import plugins
from kdbench.compare import parse_compare
from kdbench.errors import Problems, UserError
from kdbench.reading import read_spec_text, read_yaml
from kdbench.safeio import REFERENCE_CAP, read_capped
from kdbench.sbatch import SITE_KEYS, as_parameters, check_extra, check_site_value
from kdbench.schema import Checker, copy_data, did_you_mean, join, safe_name
from kdbench.spec import (
    MAX_SEED,
    SCHEDULE_KEYS,
    TOP_KEYS,
    parse_dataset,
    parse_schedule,
    parse_student,
    parse_teacher,
    parse_term,
    parse_tracking,
)
from kdbench.vocab import PRIMARY_METRIC, REFERENCE_RECIPE_FIELDS, REFERENCE_RECIPE_PREFIXES

STUDY_KEYS = ("name", "description", "revision", "defaults", "base", "teacher_run", "methods", "grid",
              "zip", "exclude", "seeds", "baselines", "resources", "references", "plugins", "provenance",
              "loggers", "equal_budget", "tune", "compare", "results")
BASE_KEYS = tuple(k for k in TOP_KEYS if k not in ("name", "out", "seed", "plugins", "threads", "tracking"))
SPECIAL_AXES = ("method",)          # picks an entry of `methods`
TERM_PREFIX = "term."               # term.params.tau: set on every distill term of the run
METHOD_GRID = "grid"                # methods.<name>.grid: axes of that method's own (kdbench.expand)


def is_baseline_axis(key: str) -> bool:
    """Whether a run's axis value (``PlannedRun.params``) picks its student baseline: every axis but
    the method, its terms, the teacher's, the parts of the student started from the teacher (a
    baseline has no teacher: ``expand.without_teacher``) and the seed (kdbench.expand plans one
    baseline per such setting and seed)."""
    return key not in ("method", "seed", "student.init_from_teacher") and not key.startswith((TERM_PREFIX, "teacher"))
NOT_AXES = ("name", "out", "device", "plugins", "threads", "tracking")
BUDGETS = ("wall_clock", "iterations")  # equal_budget: what an equal-budget baseline matches (kdbench.budget)


@dataclass(frozen=True)
class Resources:
    """What one run asks of a node; not part of any run's identity."""

    gpus: int = 1                   # GPUs per node of a run (several: one task per GPU, mmengine's launcher)
    nodes: int = 1                  # nodes per run: one job of nodes x gpus tasks, one process group
    cpus: int = 4                   # CPUs per task
    mem_gb: int = 16
    time_min: int = 240             # the scheduler's time limit; a run past it is checkpointed and requeued
    partition: str | None = None    # None = the cluster's default
    # What SLURM sites require (kdbench.sbatch checks each; None = not asked):
    account: str | None = None      # sbatch --account: whom the site charges
    qos: str | None = None          # --qos: the quality of service (limits, priority)
    constraint: str | None = None   # --constraint: node features, e.g. "a100|h100"
    exclude: str | None = None      # --exclude: nodes never to use, e.g. "node[01-04],gpu7"
    reservation: str | None = None  # --reservation
    sbatch: tuple[str, ...] = ()    # further sbatch options, each "--name=value" or "--name"

    def text(self) -> str:
        gpus = f"{self.gpus} gpu" if self.nodes == 1 else f"{self.nodes} nodes x {self.gpus} gpu"
        parts = [gpus, f"{self.cpus} cpu", f"{self.mem_gb}G", f"{self.time_min}m"]
        return " ".join(parts + ([self.partition] if self.partition else []))

    def site(self) -> dict[str, str | bool]:
        """The SLURM site settings asked for, {sbatch option: value (True: a flag)}, extra options
        included."""
        given = {key: getattr(self, key) for key in SITE_KEYS if getattr(self, key) is not None}
        return {**given, **as_parameters(self.sbatch)}


@dataclass(frozen=True)
class Axis:
    path: str                       # "method", "term.params.tau", or a run field ("schedule.lr")
    values: tuple
    where: str                      # its key path in the spec, for errors: "grid.schedule.lr"


@dataclass(frozen=True)
class Tune:
    """``tune:``: every method, the student baseline's own settings included (``student``), tried at
    each of its settings on a held-out share of the training set; the final runs use each one's best."""

    axes: dict                      # method name or "student" -> tuple of Axis (their product: its settings)
    holdout: float = 0.2            # the share of the training set held out
    seed: int = 0                   # the seed that draws it
    metric: str | None = None       # as the runs write it (val/mIoU); None: the task's primary metric

    def budget(self, method: str) -> int:
        """A method's number of tune runs (its settings), counted without listing them."""
        return math.prod(len(axis.values) for axis in self.axes.get(method, ()))

    def settings(self, method: str) -> list[dict]:
        """A method's settings, in the order written (the first listed wins a tie); one, the study's
        own, for a method with no axes."""
        axes = self.axes.get(method, ())
        return [dict(zip([a.path for a in axes], values)) for values in itertools.product(*[a.values for a in axes])]


TUNE_KEYS = ("axes", "holdout", "seed", "metric")
# What a run's evaluation records, per task (runners.metrics; higher is better): a tune metric is one of them.
TUNE_METRICS = {"seg": ("mIoU", "mAcc", "aAcc"),
                "det": ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l")}
STUDENT = "student"                 # the student baseline, in tune.axes


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
    equal_budget: str | None = None     # wall_clock | iterations: equal-budget baselines (kdbench.budget); None: none
    tune: Tune | None = None        # tuned baselines: a tune stage, then the final runs at each one's best
    compare: tuple[tuple[str, str], ...] = ()  # method pairs the report tests (kdbench.compare); no run's part
    method_axes: dict = dataclasses.field(default_factory=dict)  # method -> its own axes (methods.<name>.grid)
    results: str | None = None      # results: where its results live, relative to its folder (kdbench.roots)

    def axes_of(self, method: Any) -> tuple[tuple[Axis, ...], ...]:
        """The axis groups a run of ``method`` was made by: the study's, then the method's own."""
        return self.axes + tuple((axis,) for axis in self.method_axes.get(method, ()))


def _read_yaml(path: Path, check: Checker, root: Path | None = None) -> dict:
    data = read_yaml(read_spec_text(path, "the study", root), str(path))
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
    parent_path = path.parent / _in_folder(check, check.string(data["defaults"], "defaults"), "defaults")
    if not parent_path.is_file():
        raise check.fail("defaults", f"{parent_path} does not exist")
    parent = _read_yaml(parent_path, Checker(str(parent_path)), path.parent)
    if "defaults" in parent:
        raise check.fail("defaults", f"{parent_path} has defaults of its own; only one level is allowed")
    return merge(parent, {k: v for k, v in data.items() if k != "defaults"})


def _methods(check: Checker, data: dict) -> dict[str, tuple[dict, ...]]:
    """Every method's terms, each checked (every problem of every method reported at once)."""
    methods = check.mapping(data.get("methods") or {}, "methods", (data.get("methods") or {}).keys())
    problems = Problems()
    for key, value in methods.items():
        if problems.get(check.printable, str(key), "methods", "a method's name") is None:   # it names runs
            continue
        terms = value if isinstance(value, list) else [_without_grid(value)]
        if not terms:
            problems.add(check.fail(join("methods", key), "must be a term or a non-empty list of terms"))
        for index, term in enumerate(terms):
            where = join(join("methods", key), index) if isinstance(value, list) else join("methods", key)
            problems.get(parse_term, check, term, where)
        methods[key] = tuple(terms)
    problems.raise_any()
    return methods


def _without_grid(method: Any) -> Any:
    """A method's term as written, less its own axes (``grid:``), which kdbench.expand applies."""
    return {k: v for k, v in method.items() if k != METHOD_GRID} if isinstance(method, dict) else method


def _method_axes(check: Checker, data: dict, study: tuple[tuple[Axis, ...], ...]) -> dict[str, tuple[Axis, ...]]:
    """Each method's own axes (``methods.<name>.grid``): term axes that expand only that method's
    cells; an axis the study's grid or zip already varies is refused."""
    written = data.get("methods") if isinstance(data.get("methods"), dict) else {}
    taken = {axis.path for group in study for axis in group}
    found, problems = {}, Problems()
    for method, value in written.items():
        if not isinstance(value, dict) or value.get(METHOD_GRID) is None:
            continue
        where = join(join("methods", str(method)), METHOD_GRID)
        grid = problems.get(check.mapping, value[METHOD_GRID], where,
                            value[METHOD_GRID].keys() if isinstance(value[METHOD_GRID], dict) else (), default={})
        axes = []
        for path, values in grid.items():
            at = join(where, str(path))
            if not str(path).startswith(TERM_PREFIX) or path in taken:
                why = ("is an axis of the study's grid or zip already" if path in taken else
                       "a method's own axis sets its terms: term.<key> (term.params.tau, term.weight, "
                       "term.student_location); a run field varies every method, in the study's grid")
                problems.add(check.fail(at, f"axis {path!r}: {why}"))
                continue
            checked = problems.get(_axis_values, check, values, at)
            if checked is not None:
                axes.append(Axis(str(path), tuple(checked), at))
        found[str(method)] = tuple(axes)
    problems.raise_any()
    if found and data.get("tune") is not None:
        raise check.fail(join(join("methods", next(iter(found))), METHOD_GRID),
                         "a tuned study's methods have no axes of their own: tune.axes sets each one's settings")
    return found


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
    problems = Problems()
    for path, value in check.mapping(grid, "grid", grid.keys()).items():
        where = join("grid", str(path))
        values = problems.get(_axis, check, str(path), value, where, seen, methods)
        if values is not None:
            groups.append((Axis(str(path), tuple(values), where),))
    for index, block in enumerate(problems.get(check.sequence, zipped, "zip", default=[])):
        where = join("zip", index)
        block = problems.get(check.mapping, block, where, block.keys() if isinstance(block, dict) else (), default={})
        axes = []
        for path, value in block.items():
            values = problems.get(_axis, check, str(path), value, join(where, str(path)), seen, methods)
            if values is not None:
                axes.append(Axis(str(path), tuple(values), join(where, str(path))))
        lengths = sorted({len(axis.values) for axis in axes})
        if len(lengths) > 1:
            problems.add(check.fail(where, f"zipped axes must have equal lengths, got {lengths}"))
        if axes:
            groups.append(tuple(axes))
    problems.raise_any()
    return tuple(groups)


def _axis(check: Checker, path: str, value: Any, where: str, seen: set[str], methods: dict) -> list:
    """One axis's values; a method axis names entries of ``methods`` (each unknown one reported)."""
    _axis_path(check, path, where, seen)
    if path != "method":
        return _axis_values(check, value, where)
    values = check.sequence(value, where, min_length=1)   # names checked in `methods`, or not there
    problems = Problems()
    for i, item in enumerate(values):
        if item not in methods:
            hint, valid = did_you_mean(str(item), methods), ", ".join(methods)
            problems.add(check.fail(join(where, i), f"{item!r} is not in methods{hint}; valid: {valid}"))
    problems.raise_any()
    return values


def _axis_values(check: Checker, value: Any, where: str) -> list:
    """An axis's values; text among them names runs, so it must be printable."""
    values = check.sequence(value, where, min_length=1)
    problems = Problems()
    for index, item in enumerate(values):
        if isinstance(item, str):
            problems.get(check.printable, item, join(where, index), "an axis value (it names runs)")
    problems.raise_any()
    return values


def _resources(check: Checker, data: dict) -> Resources:
    """The resources of one run: every key checked, every problem reported at once."""
    given = check.mapping(data.get("resources", {}), "resources", Resources.__dataclass_fields__)
    problems = Problems()
    for key in ("gpus", "nodes", "cpus", "mem_gb", "time_min"):
        if key in given:
            problems.get(check.integer, given[key], join("resources", key), minimum=0 if key == "gpus" else 1)
    if given.get("partition") is not None:
        problems.get(_partition, check, given["partition"])
    for key in SITE_KEYS:
        if given.get(key) is not None:
            problems.get(check_site_value, check, key, given[key], join("resources", key))
    if "sbatch" in given:
        given["sbatch"] = problems.get(check_extra, check, given["sbatch"], "resources.sbatch", default=())
    problems.raise_any()
    return Resources(**given)


def _partition(check: Checker, value: Any) -> None:
    check.string(value, "resources.partition")
    if not safe_name(value):  # it goes into a batch script
        raise check.fail("resources.partition", f"{value!r} must be letters, digits, '_', '-' or '.'")


def _seeds(check: Checker, data: dict) -> tuple[int, ...]:
    problems = Problems()
    seeds = tuple(problems.get(check.integer, s, join("seeds", i), minimum=0, maximum=MAX_SEED)
                  for i, s in enumerate(check.sequence(data.get("seeds", [0]), "seeds", min_length=1)))
    problems.raise_any()
    if len(set(seeds)) != len(seeds):
        raise check.fail("seeds", f"seeds repeat: {list(seeds)}")
    return seeds


REFERENCE_COLUMNS = ("method", "metric", "value")   # what every reference table's header names
NUMERIC_COLUMNS = ("value", "teacher_value", "student_value")


def _in_folder(check: Checker, name: str, key: str) -> str:
    """``name``, a path relative to the study's folder tree: an absolute path is refused like a
    ``../`` that leaves it (the file it names would be read from anywhere)."""
    if Path(name).is_absolute() or name.startswith("~"):
        raise check.fail(key, f"{name!r} is an absolute path; give a path inside the study's folder")
    return name


def _references(check: Checker, data: dict, path: Path) -> tuple[str, ...]:
    references = tuple(check.string(r, join("references", i))
                       for i, r in enumerate(check.sequence(data.get("references", []), "references")))
    problems = Problems()
    for index, reference in enumerate(references):
        problems.get(_reference_table, check, path, reference, join("references", index))
    problems.raise_any()
    return references


def _reference_table(check: Checker, path: Path, reference: str, key: str) -> None:
    """A reference file: inside the study's folder tree (links followed), a regular file of at most
    REFERENCE_CAP bytes, a CSV table whose header names REFERENCE_COLUMNS and whose numbers are numbers."""
    import csv

    file = path.parent / "references" / _in_folder(check, reference, key)
    if not file.is_file():
        raise check.fail(key, f"{reference!r} is not a file in {path.parent / 'references'}")
    text = read_reference(path, reference)
    if text is None or not (rows := list(csv.reader(io.StringIO(text, newline="")))) or not rows[0]:
        why = ("outside the study's folder, not a regular file, over 1 MiB or not UTF-8 text" if text is None
               else "empty")
        raise check.fail(key, f"{reference!r} is not a reference table: {why}")
    header = [column.strip() for column in rows[0]]
    absent = [column for column in REFERENCE_COLUMNS if column not in header]
    if absent:
        raise check.fail(key, f"{reference!r} is not a reference table (CSV with the columns "
                              f"{', '.join(REFERENCE_COLUMNS)}, ...): its header lacks {', '.join(absent)}")
    _recipe_columns(check, reference, header, key)
    for line, row in enumerate(rows[1:], start=2):
        cells = dict(zip(header, row))
        for column in NUMERIC_COLUMNS:
            if not _number_or_empty(cells.get(column, "")) or (column == "value" and not cells.get(column, "").strip()):
                raise check.fail(key, f"{reference!r} line {line}: {column} {cells.get(column, '')[:40]!r} "
                                      "is not a number")


def _recipe_columns(check: Checker, reference: str, header: list[str], key: str) -> None:
    """Every ``recipe_<field>`` and ``baseline_recipe_<field>`` column names a field the report reads."""
    for column in header:
        prefix = next((p for p in sorted(REFERENCE_RECIPE_PREFIXES, key=len, reverse=True) if column.startswith(p)),
                      None)
        if prefix is not None and column[len(prefix):] not in REFERENCE_RECIPE_FIELDS:
            raise check.fail(key, f"{reference!r}: column {column!r} is a recipe field the report does not know "
                                  f"(valid: {prefix}<field>, field one of {', '.join(REFERENCE_RECIPE_FIELDS)})")


def _number_or_empty(text: str) -> bool:
    if not text.strip():
        return True
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def read_reference(study_path: Path, name: str) -> str | None:
    """A reference table's text, read bounded (kdbench.safeio.REFERENCE_CAP) from inside the study's
    folder tree; None when it cannot be read so."""
    try:
        return read_capped(Path(study_path).parent / "references" / name, REFERENCE_CAP,
                           Path(study_path).parent).decode()
    except (OSError, ValueError):
        return None


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


REFERENCE_METRICS = {"seg": "miou", "det": "ap"}  # a published row's metric, per task (the runs' PRIMARY_METRIC)


def reference_expect(path: Path, references: tuple[str, ...], task: str) -> dict | None:
    """The teacher gate implied by the study's published rows: when every row of the task's metric
    that states a ``teacher_value`` states the same one, a teacher without ``teacher.expect`` is
    expected to score it within 1 point (the rows' teacher is the study's). Rows that disagree (other
    teachers, as CIRKD's) imply nothing."""
    import csv

    wanted, metric = REFERENCE_METRICS.get(task, ""), PRIMARY_METRIC.get(task, "")
    values = set()
    for name in references:
        for row in csv.DictReader(io.StringIO(read_reference(path, name) or "", newline="")):
            shown = "".join(ch for ch in (row.get("metric") or "").lower() if ch.isalnum())
            if shown.endswith(wanted) and (row.get("teacher_value") or "").strip():
                values.add(float(row["teacher_value"]))
    return {"metric": metric, "value": values.pop(), "tolerance": 1.0} if len(values) == 1 else None


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study spec: every section checked, every problem reported at once (a
    ``UserErrors``); the plugins, which the methods may name, are loaded first."""
    path = Path(path)
    check = Checker(str(path))
    data = _with_defaults(path, check, _read_yaml(path, check))
    loaded = plugins.load(check, data.get("plugins", []), "plugins", path.parent)  # before methods name them
    problems = Problems()   # each section checked, whatever the others hold: every problem at once
    name = problems.get(_name, check, data, path, default=path.stem)
    revision = problems.get(check.integer, data.get("revision", 0), "revision", minimum=0, default=0)
    if "description" in data:  # report text: lines of printable characters
        problems.get(_description, check, data["description"])
    base = problems.get(check.mapping, data.get("base", {}), "base", BASE_KEYS, required=("task", "dataset"))
    if base is not None:  # with the spec's other problems, not after them (each run checks it again)
        _base_sections(check, base, data, problems)
    written = data.get("methods")   # the method axis is checked against the names even when a method is bad
    methods = problems.get(_methods, check, data, default=dict.fromkeys(written if isinstance(written, dict) else ()))
    seeds = problems.get(_seeds, check, data)
    baselines = problems.get(check.mapping, data.get("baselines", {}), "baselines", ("teacher", "student"),
                             default={})
    resources = problems.get(_resources, check, data)
    references = problems.get(_references, check, data, path)
    teacher_run = problems.get(check.mapping, data.get("teacher_run", {}), "teacher_run", ("schedule", "seed"),
                               default={})
    axes = problems.get(_axes, check, data, methods)
    method_axes = problems.get(_method_axes, check, data, axes or (), default={})
    rules = problems.get(check.sequence, data.get("exclude", []), "exclude", default=[])
    exclude = tuple(problems.get(check.mapping, rule, join("exclude", i), rule.keys() if isinstance(rule, dict) else ())
                    for i, rule in enumerate(rules))
    train_teacher = problems.get(check.boolean, baselines.get("teacher", True), "baselines.teacher")
    student_baseline = problems.get(check.boolean, baselines.get("student", True), "baselines.student")
    problems.get(_provenance, check, data)
    loggers = problems.get(lambda: parse_tracking(check, {"loggers": data.get("loggers", [])}, "").loggers)
    equal_budget = problems.get(_equal_budget, check, data, student_baseline)
    tune = problems.get(_tune, check, data, methods, student_baseline) if data.get("tune") is not None else None
    compare = problems.get(parse_compare, check, data, methods, default=())
    results = problems.get(_results, check, data) if data.get("results") is not None else None
    problems.raise_any()
    return StudySpec(
        path=path, name=name, revision=revision, base=base, methods=methods, axes=axes, exclude=exclude,
        seeds=seeds, teacher_schedule=teacher_run.get("schedule", {}), teacher_seed=teacher_run.get("seed", 0),
        train_teacher_baseline=train_teacher, student_baseline=student_baseline,
        resources=resources, references=references, plugins=loaded,
        loggers=loggers, raw={**data, "name": name, "revision": revision},
        teacher_expect=reference_expect(path, references, str(base.get("task"))), equal_budget=equal_budget,
        tune=tune, compare=compare, method_axes=method_axes, results=results)


def _results(check: Checker, data: dict) -> str:
    """``results:``: the study's results root (a folder path; relative to the study's folder)."""
    root = check.printable(check.string(data["results"], "results"), "results", "a results root")
    if not root.strip():
        raise check.fail("results", "must be a folder path, got an empty string")
    return root


def _equal_budget(check: Checker, data: dict, student_baseline: bool | None) -> str | None:
    """``equal_budget: wall_clock | iterations``, or ``{by: ...}``: what the equal-budget student
    baselines match (kdbench.budget); they are twins of the student baselines, so those must run."""
    value = data.get("equal_budget")
    if value is None:
        return None
    where = "equal_budget"
    if isinstance(value, dict):
        value = check.mapping(value, where, ("by",), required=("by",))["by"]
        where = "equal_budget.by"
    check.string(value, where, BUDGETS)
    if student_baseline is False:
        raise check.fail(where, "needs the student baselines (baselines.student: false turns them off)")
    if not data.get("methods"):
        raise check.fail(where, "needs distilled cells (methods:) to measure a budget from")
    return value


def _tune(check: Checker, data: dict, methods: dict, student_baseline: bool) -> Tune:
    """``tune:``, checked: its axes set run fields per method (``student``: the baseline), and every
    method gets the same number of tune runs (a method not listed: one, at the study's settings)."""
    tune = check.mapping(data["tune"], "tune", TUNE_KEYS, required=("axes",))
    grid, zipped = data.get("grid") or {}, data.get("zip") or []
    if zipped or any(key != "method" for key in (grid if isinstance(grid, dict) else {})):
        raise check.fail("tune", "a tuned study's grid varies only the method; tune.axes sets the rest per method")
    holdout = check.number(tune.get("holdout", 0.2), "tune.holdout", positive=True)
    if holdout >= 1:
        raise check.fail("tune.holdout", f"must be between 0 and 1 (a share of the training set), got {holdout!r}")
    seed = check.integer(tune.get("seed", 0), "tune.seed", minimum=0, maximum=MAX_SEED)
    metric = tune.get("metric")
    if metric is not None:
        known = TUNE_METRICS.get(str((data.get("base") or {}).get("task")), ())
        metric = check.string(metric, "tune.metric", (*known, *(f"val/{m}" for m in known)) if known else None)
        metric = metric if "/" in metric else f"val/{metric}"   # mIoU -> val/mIoU, as the runs write it
    tuned = [*((grid.get("method") if isinstance(grid, dict) else None) or methods),
             *([STUDENT] if student_baseline else [])]
    given = check.mapping(tune["axes"], "tune.axes", tuned)
    axes, problems = {}, Problems()
    for method, written in given.items():
        axes[method] = problems.get(_tune_axes, check, method, written, default=())
    problems.raise_any()
    budgets = {m: Tune(axes).budget(m) for m in tuned}
    if len(set(budgets.values())) > 1:
        counts = ", ".join(f"{m} {n}" + ("" if m in axes else " (not listed)") for m, n in budgets.items())
        raise check.fail("tune.axes", f"every method must get the same number of tune runs (the product of its "
                                      f"axes' lengths), got {counts}")
    return Tune(axes, holdout, seed, metric)


def _tune_axes(check: Checker, method: str, written: Any) -> tuple[Axis, ...]:
    """One method's tune axes: ``schedule.<key>`` or (a distilled method) ``term.<key>``."""
    where = join("tune.axes", method)
    axes, problems = [], Problems()
    for path, value in check.mapping(written, where, written if isinstance(written, dict) else ()).items():
        path, at = str(path), join(where, str(path))
        allowed = ("schedule.",) if method == STUDENT else ("schedule.", TERM_PREFIX)
        if not path.startswith(allowed) or path.endswith("."):
            problems.add(check.fail(at, f"unknown tune axis {path!r}; valid: "
                                        + ("schedule.<key>" if method == STUDENT else "schedule.<key>, term.<key>")))
            continue
        if path.startswith("schedule.") and path.split(".", 1)[1] not in SCHEDULE_KEYS:
            problems.add(check.fail(at, f"unknown schedule key {path.split('.', 1)[1]!r}"
                                        f"{did_you_mean(path.split('.', 1)[1], SCHEDULE_KEYS)}; "
                                        f"valid: {', '.join(SCHEDULE_KEYS)}"))
            continue
        values = problems.get(_axis_values, check, value, at)
        if values is not None:
            axes.append(Axis(path, tuple(values), at))
    problems.raise_any()
    return tuple(axes)


def _base_sections(check: Checker, base: dict, data: dict, problems: Problems) -> None:
    """The sections of ``base`` that no axis changes, checked as every run will check them."""
    axes = list((data.get("grid") or {}) if isinstance(data.get("grid"), dict) else ())
    for block in data.get("zip") or [] if isinstance(data.get("zip"), list) else []:
        axes += list(block) if isinstance(block, dict) else []
    touched = {str(axis).split(".")[0] for axis in axes}
    parsers = {"student": parse_student, "teacher": parse_teacher, "dataset": parse_dataset}
    for section, parse in parsers.items():
        if section in base and section not in touched:
            problems.get(parse, check, base[section], f"base.{section}")
    if "student" in base and "schedule" not in touched:   # student runs train: iterations >= 1
        problems.get(parse_schedule, check, base.get("schedule", {}), "base.schedule")


def _name(check: Checker, data: dict, path: Path) -> str:
    name = check.printable(check.string(data.get("name", path.stem), "name"), "name", "the study's name")
    if not safe_name(name) or name.startswith("."):
        raise check.fail("name", f"{name!r} must be letters, digits, '_', '-' or '.' (it names a directory)")
    return name


def _description(check: Checker, description: Any) -> None:
    for line in check.string(description, "description").splitlines():
        check.printable(line.replace("\t", " "), "description", "a line of the description")
