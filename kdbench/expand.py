"""A study's grid of runs: ``expand(spec)`` turns a StudySpec into its planned runs, with no I/O.

Every combination of the axis groups (each grid axis, each zip block), less the exclusions, is a
cell; each cell runs once per seed. A cell's teacher without a checkpoint becomes one teacher run
per distinct teacher setting (stage ``teacher``), which the cell's run depends on and points at
(``checkpoint: {run: <results>/<study>/<teacher id>}``); with a checkpoint, the teacher run only
evaluates it. The student baseline is each cell without its distill terms and teacher; equal
baselines collapse into one. Run names come from the axes that vary (``cwd_logits_tau4_s0``).
Teachers come first, then baselines, then cells. A grid of more than ``MAX_RUNS`` cell runs is
refused before any is built (``count_runs``). A tuned study (``tune:``) plans its tune stage here
(``plan_tune``); the runs its results decide are planned by kdbench.stages.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench import tuning
from kdbench.errors import UserError, UserErrors
from kdbench.ids import run_id, run_ids_by_seed
from kdbench.schema import Checker, copy_data
from kdbench.spec import RunSpec, Tracking, parse_run
from kdbench.study import STUDENT, TERM_PREFIX, Resources, StudySpec, is_baseline_axis, merge
from kdbench.vocab import Kind, Stage
from kdbench.waiting import Waiting

MAX_RUNS = 100_000          # far above any real study (the shipped ones plan 7 to 43 runs); --max-runs raises it


@dataclass(frozen=True)
class PlannedRun:
    run: RunSpec
    run_id: str
    name: str
    stage: Stage
    params: dict                    # the axis values that made this run, and its seed
    depends_on: tuple[str, ...] = ()
    kind: Kind = Kind.CELL


@dataclass(frozen=True)
class Study:
    """A spec with its runs, planned for one results root: ``expand``'s grid, then what the later
    stages (kdbench.stages) planned from the results, with what they still wait for and what they
    decided (``records``: stage name -> its record, as written to ``results/<study>/stages/``)."""

    spec: StudySpec
    runs: tuple[PlannedRun, ...]
    results: Path                   # the results root; this study's runs live in results/<name>/
    waiting: tuple[Waiting, ...] = ()   # later stages, planned once the runs they need are complete
    max_runs: int = MAX_RUNS
    grid: tuple[PlannedRun, ...] = ()   # expand's runs (the later stages plan from these again)
    records: dict = dataclasses.field(default_factory=dict)
    root_source: str = "--results"  # why ``results`` is the root (kdbench.roots.resolve)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def path(self) -> Path:
        return self.spec.path

    @property
    def resources(self) -> Resources:
        return self.spec.resources

    @property
    def directory(self) -> Path:
        return self.results / self.spec.name

    def by_id(self) -> dict[str, PlannedRun]:
        return {r.run_id: r for r in self.runs}


# -- the grid ---------------------------------------------------------------------------------
def count_runs(spec: StudySpec, max_runs: int = MAX_RUNS) -> int:
    """The number of cell runs before exclusions (the product of the axis groups' lengths and the
    seeds: an upper bound), counted without building any; past ``max_runs``, an error naming the
    count and the axes that multiply to it. Teacher runs and baselines add at most two per cell run."""
    factors = [(group[0].where if len(group) == 1 else group[0].where.split(".")[0], _length(spec, group))
               for group in spec.axes]     # a zip block by its name: zip[0]
    factors.append(("seeds", len(spec.seeds)))
    count = math.prod(length for _, length in factors)
    tuned = spec.tune and sum(spec.tune.budget(method) for method in tuning.tuned(spec))
    if tuned and tuned > max_runs:   # every setting of every method is a tune run
        raise Checker(str(spec.path)).fail("tune.axes", f"{tuned:,} tune runs (each method's settings), over the "
                                                        f"limit of {max_runs:,} (--max-runs N raises it)")
    if count > max_runs:
        product = " x ".join(f"{where} ({length:,})" for where, length in factors)
        raise Checker(str(spec.path)).fail(
            "grid" if spec.raw.get("grid") or not spec.raw.get("zip") else "zip",
            f"{product} = {count:,} runs before exclusions, over the limit of {max_runs:,} "
            f"(--max-runs N raises it)")
    return count


def _length(spec: StudySpec, group: tuple) -> int:
    """How many cells an axis group makes: its values, each method counted with its own axes'
    settings (``methods.<name>.grid``)."""
    methods = next((axis.values for axis in group if axis.path == "method"), None)
    if methods is None or not spec.method_axes:
        return len(group[0].values)
    return sum(math.prod(len(axis.values) for axis in spec.method_axes.get(method, ())) for method in methods)


def _own_settings(spec: StudySpec, combo: dict) -> list[dict]:
    """``combo`` once per setting of its method's own axes (itself alone for a method without any)."""
    own = spec.method_axes.get(combo.get("method"), ())
    return [{**combo, **dict(zip([axis.path for axis in own], values))}
            for values in itertools.product(*[axis.values for axis in own])]


def cells(spec: StudySpec) -> list[dict]:
    """The axis assignments of every cell, each method's own axes applied, exclusions removed."""
    groups = [[{axis.path: axis.values[i] for axis in group} for i in range(len(group[0].values))]
              for group in spec.axes]
    combos = [dict(itertools.chain.from_iterable(a.items() for a in combo))
              for combo in itertools.product(*groups)] if groups else [{}]
    if spec.method_axes:
        combos = [setting for combo in combos for setting in _own_settings(spec, combo)]
    kept = [c for c in combos if not any(_matches(c, rule) for rule in spec.exclude)]
    if not kept or (groups and not any(kept)):
        raise Checker(str(spec.path)).fail("exclude" if spec.exclude else "grid",
                                           "the grid is empty: no run is left to plan")
    return kept


def _matches(assignment: dict, rule: dict) -> bool:
    return all(path in assignment and assignment[path] == value for path, value in rule.items())


def _follows(path: str) -> bool:
    """An axis that restates its zip block rather than naming a run: a teacher's checkpoint or
    expected score, zipped with the teacher's config (a URL in every run name helps nobody)."""
    return path == "teacher.checkpoint" or path.startswith("teacher.expect")


def varying_axes(spec: StudySpec, cells: list[dict]) -> list[str]:
    """The axes whose value differs between cells (and the method axis): they name the runs. In a
    zip block, a checkpoint or expected score is left out when another axis of the block varies."""
    found = []
    for group in spec.axes:
        varying = [axis.path for axis in group
                   if axis.path == "method" or len({repr(c.get(axis.path)) for c in cells}) > 1]
        named = [path for path in varying if not _follows(path)]
        found += named if named else varying
    for axes in spec.method_axes.values():   # a method's own axis: among the cells that have it
        found += [axis.path for axis in axes if axis.path not in found
                  and len({repr(c[axis.path]) for c in cells if axis.path in c}) > 1]
    return found


def short(path: str, value: Any) -> str:
    """A short, readable token for one axis value: ``tau4``, ``w3``, ``lr0.02``, ``kl``, a config's
    file stem."""
    key = path.split(".")[-1]
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if key == "config":
        return Path(text.split("::")[-1]).stem
    label = {"tau": "tau", "weight": "w", "lr": "lr", "norm": "", "divergence": ""}.get(key, key)
    if label in ("tau", "w", "lr"):
        return f"{label}{text}"
    return text if not label else f"{label}-{text}"


def run_name(assignment: dict, varying: list[str], seed: int) -> str:
    parts = [short(path, assignment[path]) if path != "method" else str(assignment[path])
             for path in varying if path in assignment]
    return "_".join([*parts, f"s{seed}"])


def _set_path(target: dict, path: str, value: Any, check: Checker, where: str) -> None:
    """Set a dotted path (``schedule.lr``, ``distill.0.weight``) inside a run dict."""
    parts = path.split(".")
    node: Any = target
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise check.fail(where, f"{path!r}: no item {part} in {'.'.join(parts[:depth]) or 'the run'}")
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise check.fail(where, f"{path!r}: {'.'.join(parts[:depth + 1])} is not a mapping")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise check.fail(where, f"{path!r}: no item {last}")
        node[int(last)] = copy_data(value)
    else:
        node[last] = copy_data(value)


def apply_cell(spec: StudySpec, cell: dict, check: Checker, label: str) -> dict:
    """The base run with a cell's axis values set: ``method`` picks the distill terms,
    ``term.<key>`` sets a key on every term, any other axis a run field."""
    run = copy_data(spec.base)
    if "method" in cell:
        run["distill"] = [copy_data(term) for term in spec.methods[cell["method"]]]
    for path, value in cell.items():
        if path == "method":
            continue
        if path.startswith(TERM_PREFIX):
            for index in range(len(run.get("distill") or [])):  # nothing to set on a run without terms
                _set_path(run, f"distill.{index}.{path[len(TERM_PREFIX):]}", value, check, label)
        else:
            _set_path(run, path, value, check, label)
    return run


# -- planning ---------------------------------------------------------------------------------
class _Skipped(Exception):
    """A run that did not parse: its problems are recorded; the next cell is planned."""


class _Planner:
    """Collects the planned runs of one study: each distinct run once, under a unique name."""

    def __init__(self, spec: StudySpec, results: str | Path):
        self.spec = spec
        self.check = Checker(str(spec.path))
        self.store = Path(results) / spec.name
        self.planned: dict[str, PlannedRun] = {}
        self.names: set[str] = set()
        self.once: dict[str, str] = {}          # what a teacher or baseline is made of -> its id
        self.current: dict = {}                 # the cell being planned
        self.labels: set[str] = set()           # every run parsed, as the user would name it
        self.found: dict[str, list[str] | None] = {}   # each problem -> the runs it was found in

    def parse(self, run: dict, label: str) -> RunSpec:
        """The typed run; each error names where the user wrote the culprit (``written_at``)
        and, in ``label``, the run it was found in."""
        run["revision"] = self.spec.revision  # a new revision of a study gives every run a new id
        self.labels.add(label)
        try:
            return parse_run(run, self.check.source, plugin_entries=self.spec.plugins)
        except UserError as error:
            for each in error.errors:
                if each.detail is None:
                    self.found.setdefault(str(each).removeprefix(f"{self.check.source}: "), []).append(label)
                    continue
                place, axis = self.written_at(each.path, self.current, each.detail.startswith("unknown key"))
                if axis is None:   # in base or a method: the runs it was found in say which
                    self.found.setdefault(f"{place}: {each.detail}", []).append(label)
                else:              # an axis value: the value says it all, the method what it was set on
                    on = f" (on method {self.current['method']})" if axis.startswith(TERM_PREFIX) and \
                        "method" in self.current else ""
                    self.found[f"{place}: {each.detail}{on}"] = None
            raise _Skipped from None

    def attempt(self, plan, *args) -> str | None:
        """``plan(*args)``, or None when its run did not parse (its problems are recorded)."""
        try:
            return plan(*args)
        except _Skipped:
            return None

    def problems(self) -> UserErrors | None:
        """Every problem found, once each, with the runs it was found in unless it is in all of them."""
        if not self.found:
            return None
        lines = []
        for text, labels in self.found.items():
            if labels is None:
                lines.append(UserError(f"{self.check.source}: {text}"))
                continue
            labels = list(dict.fromkeys(labels))
            more = f" and {len(labels) - 3} more" if len(labels) > 3 else ""
            where = "" if set(labels) == self.labels else f" (in {'; '.join(labels[:3])}{more})"
            lines.append(UserError(f"{self.check.source}: {text}{where}"))
        return UserErrors(lines)

    def written_at(self, path: str | None, cell: dict, key: bool = False) -> tuple[str, str | None]:
        """Where in the spec the value at a run's key ``path`` was written, and the axis it is a
        value of (None for ``base`` or a method's terms): a grid or zip value
        (``grid.term.params.tau[1]``; the axis alone for a ``key`` problem), a method's term
        (``methods.cwd.params``), else ``base``."""
        path = path or ""
        term = re.match(r"distill\[(\d+)\]\.?(.*)", path)
        for axis in (axis for group in self.spec.axes_of(cell.get("method")) for axis in group if axis.path in cell):
            target = f"distill[{term[1]}].{axis.path[len(TERM_PREFIX):]}" if term and axis.path.startswith(
                TERM_PREFIX) else axis.path
            if path == target or path.startswith((target + ".", target + "[")) or target.startswith(path + "."):
                index = next(i for i, v in enumerate(axis.values) if repr(v) == repr(cell[axis.path]))
                return (axis.where if key else f"{axis.where}[{index}]"), axis.path
        if term and "method" in cell:
            method = cell["method"]
            listed = isinstance((self.spec.raw.get("methods") or {}).get(method), list)
            where = f"methods.{method}" + (f"[{term[1]}]" if listed else "")
            return (f"{where}.{term[2]}" if term[2] else where), None
        return (f"base.{path}" if path else "base"), None

    def keep(self, run: RunSpec, identity: str, stage: Stage, params: dict, kind: Kind,
             depends: tuple[str, ...]) -> str:
        """Plan ``run`` under ``identity`` unless it is planned already; its name made unique."""
        if identity not in self.planned:
            if run.name in self.names:  # a name two different runs would share: the id tells them apart
                run = dataclasses.replace(run, name=f"{run.name}_{identity[:6]}")
            self.names.add(run.name)
            # Curves: one experiment per study, one run per run id, tagged with its axis values.
            run = dataclasses.replace(run, tracking=Tracking(self.spec.loggers, self.spec.name, copy_data(params)))
            self.planned[identity] = PlannedRun(run, identity, run.name, stage, params, depends, kind)
        return identity

    def once_per(self, key: str, make, name: str, stage: Stage, params: dict, kind: Kind, label: str) -> str:
        """Plan ``make()`` once per distinct ``key`` (what the run is made of); its id."""
        if key not in self.once:
            run = self.parse({**make(), "name": name}, label)
            self.once[key] = self.keep(run, run_id(run), stage, params, kind, ())
        return self.once[key]

    def teacher(self, run: dict, cell: dict, label: str) -> str:
        """The id of the teacher run a cell needs (trained, or its checkpoint evaluated).

        A teacher run shares the cell's teacher, dataset and task; a teacher it trains also shares
        the cell's schedule, axis values included (a zip that sets ``schedule.lr`` per detector
        trains each teacher at its own rate), under ``teacher_run.schedule``, which wins where it
        sets a key. A checkpoint is evaluated under the base schedule: training settings do not
        change an evaluation, so one evaluation serves every cell."""
        teacher = run["teacher"]
        trained = teacher.get("checkpoint") is None
        overridden = set(self.spec.teacher_schedule)
        shared = {k: v for k, v in cell.items() if k.startswith(("teacher", "dataset")) or (
            trained and k.startswith("schedule.") and k.split(".")[1] not in overridden)}
        schedule = merge(run.get("schedule", {}) if trained else self.spec.base.get("schedule", {}),
                         self.spec.teacher_schedule)
        if not trained:
            schedule = {**schedule, "iterations": 0}  # evaluate only

        def make() -> dict:
            expected = copy_data(teacher)
            if "expect" not in expected and self.spec.teacher_expect is not None:  # the published rows' teacher
                expected["expect"] = dict(self.spec.teacher_expect)
            return {"task": run["task"], "role": "teacher", "teacher": expected,
                    "dataset": copy_data(run["dataset"]), "schedule": copy_data(schedule),
                    "seed": self.spec.teacher_seed}

        named = {k: v for k, v in shared.items() if not _follows(k)} or shared
        name = "teacher" + "".join(f"_{short(k, v)}" for k, v in named.items())
        params = {k: v for k, v in shared.items() if not k.startswith("dataset")}
        return self.once_per(repr([name, run["task"], teacher, run["dataset"], schedule]), make, name, Stage.TEACHER,
                             params, Kind.TEACHER, f"the teacher run of {label}")

    def baseline(self, run: dict, cell: dict, varying: list[str], seed: int, label: str) -> str:
        """The id of a cell's student baseline for one seed: the cell without terms and teacher.
        Its content is the base with the cell's other axes applied, so those axes and the seed
        say which one it is."""
        own = {k: v for k, v in cell.items() if is_baseline_axis(k)}
        name = run_name({"method": "student", **own}, ["method", *[v for v in varying if v in own]], seed)

        def make() -> dict:
            return {**without_teacher(run), "seed": seed}

        return self.once_per(repr([name, own]), make, name, Stage.STUDENT, {**own, "seed": seed},
                             Kind.STUDENT_BASELINE,
                             "the student baseline" + "".join(f", {k} {v}" for k, v in own.items()))

    def cell(self, run: dict, cell: dict, varying: list[str], depends: tuple[str, ...], label: str) -> list[str]:
        """The ids of a cell's runs, one per seed: parsed once, the seed set on each."""
        seeds = self.spec.seeds
        parsed = self.parse({**run, "seed": seeds[0], "name": run_name(cell, varying, seeds[0])}, label)
        runs = [dataclasses.replace(parsed, seed=seed, name=run_name(cell, varying, seed)) for seed in seeds]
        return [self.keep(each, identity, Stage.STUDENT, {**cell, "seed": each.seed}, Kind.CELL, depends)
                for each, identity in zip(runs, run_ids_by_seed(parsed, seeds))]


def expand(spec: StudySpec, results: str | Path = "results", max_runs: int = MAX_RUNS) -> list[PlannedRun]:
    """The study's runs, teachers first, then student baselines, then cells; a grid of more than
    ``max_runs`` cell runs is refused before any is built."""
    count_runs(spec, max_runs)
    if spec.tune is not None:   # tuned baselines: the tune stage first (kdbench.tuning)
        return plan_tune(spec, results)
    grid = cells(spec)
    varying = varying_axes(spec, grid)
    planner = _Planner(spec, results)
    teachers, baselines, cell_runs = [], [], []
    for cell in grid:
        planner.current = cell
        label = ", ".join(f"{k} {v}" for k, v in cell.items()) or "the base run"
        try:
            teachers, baselines, cell_runs = _plan_cell(spec, planner, cell, varying, label,
                                                        (teachers, baselines, cell_runs))
        except _Skipped:
            continue
    problems = planner.problems()
    if problems is not None:
        raise problems
    return [planner.planned[i] for i in dict.fromkeys(teachers + baselines + cell_runs)]


def _plan_cell(spec: StudySpec, planner: _Planner, cell: dict, varying: list[str], label: str,
               lists: tuple[list, list, list]) -> tuple[list, list, list]:
    """A cell's teacher, student baselines and runs, added to ``lists`` (teachers, baselines, cells)."""
    teachers, baselines, cell_runs = lists
    run = apply_cell(spec, cell, planner.check, label)
    depends: tuple[str, ...] = ()
    teacher = run.get("teacher")
    if run.get("distill") or (teacher and spec.train_teacher_baseline):
        if not teacher:
            raise planner.check.fail("base.teacher", "distillation cells need a teacher")
        teacher_id = planner.attempt(planner.teacher, run, cell, label)   # on to the cell's other runs,
        teachers.append(teacher_id)                                      # for their problems too
        if teacher.get("checkpoint") is None:
            run["teacher"] = {**teacher, "checkpoint": {"run": str(planner.store / str(teacher_id))}}
            depends = (str(teacher_id),)
    if spec.student_baseline and run.get("student"):
        baselines += [planner.attempt(planner.baseline, run, cell, varying, seed, label) for seed in spec.seeds]
    if run.get("distill") or not spec.student_baseline:
        cell_runs += planner.cell(run, cell, varying, depends, label)
    return teachers, baselines, cell_runs


# -- tuned baselines (a study's tune: block; kdbench.tuning reads and chooses) -------------------
def _label(method: str, setting: dict) -> str:
    what = "the student baseline" if method == STUDENT else f"method {method}"
    return what + "".join(f", {k} {v}" for k, v in setting.items())


def _teacher(planner: _Planner, run: dict, method: str, label: str) -> tuple[str, tuple[str, ...]]:
    """The teacher run a distilled run of ``method`` needs (planned once), and what it depends on;
    the teacher is the study's, whatever the run's tuned settings."""
    teacher = run.get("teacher")
    if not teacher:
        raise planner.check.fail("base.teacher", "distillation runs need a teacher")
    teacher_id = planner.teacher(apply_cell(planner.spec, {"method": method}, planner.check, label),
                                 {"method": method}, label)
    if teacher.get("checkpoint") is not None:
        return teacher_id, ()
    run["teacher"] = {**teacher, "checkpoint": {"run": str(planner.store / teacher_id)}}
    return teacher_id, (teacher_id,)


def without_teacher(run: dict) -> dict:
    """A run dict as its student baseline: no teacher, no terms, and so no part of the student
    started from the teacher's weights (``student.init_from_teacher``)."""
    made = {k: copy_data(v) for k, v in run.items() if k not in ("teacher", "distill")}
    if isinstance(made.get("student"), dict):
        made["student"].pop("init_from_teacher", None)
    return made


def _setting_run(planner: _Planner, method: str, setting: dict, label: str) -> tuple[dict, str | None, tuple]:
    """The run dict of ``method`` at ``setting`` (the student baseline: without teacher and terms),
    its teacher run's id and its dependencies."""
    cell = {} if method == STUDENT else {"method": method}
    run = apply_cell(planner.spec, {**cell, **setting}, planner.check, label)
    if method == STUDENT:
        return without_teacher(run), None, ()
    teacher_id, depends = _teacher(planner, run, method, label)
    return run, teacher_id, depends


def _with_axes(spec: StudySpec, method: str) -> StudySpec:
    """The spec as the planner's error messages should see it: a method's tune axes among its axes,
    so a bad tune value is reported where it was written (``tune.axes.<method>.schedule.lr[1]``)."""
    return dataclasses.replace(spec, axes=spec.axes + tuple((axis,) for axis in spec.tune.axes.get(method, ())))


def plan_tune(spec: StudySpec, results: str | Path) -> list[PlannedRun]:
    """The tune stage: the teachers, then each method's and the baseline's tune runs."""
    planner = _Planner(spec, results)
    holdout = {"fraction": spec.tune.holdout, "seed": spec.tune.seed}
    seed = spec.seeds[0]
    teachers, runs = [], []
    for method in tuning.tuned(spec):
        planner.spec = _with_axes(spec, method)
        for setting in spec.tune.settings(method):
            label = _label(method, setting)
            planner.current = {**({} if method == STUDENT else {"method": method}), **setting}
            try:
                run, teacher_id, depends = _setting_run(planner, method, setting, label)
                teachers += [teacher_id] if teacher_id else []
                run["dataset"] = {**run["dataset"], "holdout": holdout}
                name = f"{Kind.TUNE}_" + run_name({"method": method, **setting}, ["method", *setting], seed)
                parsed = planner.parse({**run, "seed": seed, "name": name}, label)
            except _Skipped:
                continue
            runs.append(planner.keep(parsed, run_id(parsed), Stage.TUNE, {"method": method, **setting, "seed": seed},
                                     Kind.TUNE, depends))
    planner.spec = spec
    problems = planner.problems()
    if problems is not None:
        raise problems
    return [planner.planned[i] for i in dict.fromkeys(teachers + runs)]


def plan_finals(spec: StudySpec, results: Path, settings: dict[str, dict]) -> list[PlannedRun]:
    """A tuned study's final runs (kdbench.stages.TunedFinals): each method's cells and the student
    baseline's runs over the study's seeds, at the ``settings`` its tune runs chose."""
    planner = _Planner(spec, results)
    seeds = spec.seeds
    baselines, cells = [], []
    for method, setting in settings.items():
        label = f"{_label(method, setting)} (chosen by its tune runs)"
        planner.current = {**({} if method == STUDENT else {"method": method}), **setting}
        planner.spec = _with_axes(spec, method)
        run, _, depends = _setting_run(planner, method, setting, label)
        if method != STUDENT:
            cells += planner.cell(run, {"method": method}, ["method"], depends, label)
            continue
        for seed in seeds:
            name = run_name({"method": STUDENT}, ["method"], seed)
            parsed = planner.parse({**run, "seed": seed, "name": name}, label)
            baselines.append(planner.keep(parsed, run_id(parsed), Stage.STUDENT, {"seed": seed}, Kind.STUDENT_BASELINE,
                                          ()))
    return [planner.planned[i] for i in dict.fromkeys(baselines + cells)
            if planner.planned[i].kind != Kind.TEACHER]

