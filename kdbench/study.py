"""Study specs: YAML files that expand into grids of runs.

``load_study(path)`` reads a spec with a safe loader, merges at most one level of ``defaults:``,
validates every key (one-line errors naming the file and key path) and returns a ``Study`` whose
``runs`` are fully resolved run dicts (kdbench.runspec) with their ids, names, stages and
dependencies. The schema is in studies/README.md.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kdbench import store, study_cache
from kdbench.configs import resolve_config
from kdbench.errors import UserError
from kdbench.ids import run_id
from kdbench.runspec import TOP_KEYS, validate_run, validate_term
from kdbench.schema import Checker, copy_data, join, safe_name

STUDY_KEYS = ("name", "description", "revision", "defaults", "base", "teacher_run", "methods", "grid",
              "zip", "exclude", "seeds", "baselines", "resources", "references")
RESOURCE_DEFAULTS = {
    "gpus": 1,          # GPUs per run (a run with several uses mmengine's distributed launcher)
    "cpus": 4,          # CPUs per task
    "mem_gb": 16,
    "time_min": 240,    # the scheduler's time limit; a run past it is checkpointed and requeued
    "partition": None,  # None = the cluster's default
}
SPECIAL_AXES = ("method",)          # picks an entry of `methods`
TERM_PREFIX = "term."               # term.params.tau: set on every distill term of the run


@dataclass
class PlannedRun:
    run: dict                        # resolved run (kdbench.runspec)
    run_id: str
    name: str
    stage: str                       # teacher | student
    params: dict                     # the axis values that made this run
    depends_on: list[str] = field(default_factory=list)
    kind: str = "cell"               # cell | student_baseline | teacher


@dataclass
class Study:
    name: str
    path: Path
    spec: dict
    runs: list[PlannedRun]
    resources: dict

    def by_id(self) -> dict[str, PlannedRun]:
        return {r.run_id: r for r in self.runs}


def _read_yaml(path: Path, check: Checker) -> dict:
    try:
        text = path.read_text()
    except OSError as error:
        raise UserError(f"{path}: cannot read the study ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        raise UserError(f"{path}: the study is empty")
    return check.mapping(data, "", STUDY_KEYS)


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base.get(key), value) if key in base else copy_data(value)
        return merged
    return copy_data(override)


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


def _axes(check: Checker, grid: Any, zipped: Any, methods: dict) -> list[list[dict]]:
    """A list of axis groups; each group is a list of {path: value} assignments."""
    groups: list[list[dict]] = []
    seen: set[str] = set()

    def axis_path(path: str, where: str) -> str:
        if path in seen:
            raise check.fail(where, f"axis {path!r} appears twice")
        seen.add(path)
        root = path.split(".")[0]
        if path in SPECIAL_AXES or path.startswith(TERM_PREFIX) or root in TOP_KEYS:
            if path == "seed" or root in ("name", "out", "device"):
                raise check.fail(where, f"axis {path!r} cannot vary here (seeds go in `seeds:`)")
            return path
        raise check.fail(where, f"unknown axis {path!r}; valid: method, term.<key>, or a run field "
                                f"({', '.join(k for k in TOP_KEYS if k not in ('name', 'out', 'device', 'seed'))})")

    def values(value: Any, where: str) -> list:
        items = check.sequence(value, where, min_length=1)
        return items

    for path, value in check.mapping(grid or {}, "grid", (grid or {}).keys()).items():
        where = join("grid", str(path))
        axis_path(str(path), where)
        items = values(value, where)
        if path == "method":
            for i, item in enumerate(items):
                if item not in methods:
                    raise check.fail(join(where, i), f"{item!r} is not in methods; valid: {', '.join(methods)}")
        groups.append([{path: item} for item in items])
    for index, block in enumerate(check.sequence(zipped or [], "zip")):
        where = join("zip", index)
        block = check.mapping(block, where, block.keys() if isinstance(block, dict) else ())
        lengths = set()
        columns = {}
        for path, value in block.items():
            axis_path(str(path), join(where, str(path)))
            columns[path] = values(value, join(where, str(path)))
            lengths.add(len(columns[path]))
        if len(lengths) > 1:
            raise check.fail(where, f"zipped axes must have equal lengths, got {sorted(lengths)}")
        if columns:
            groups.append([dict(zip(columns, row)) for row in zip(*columns.values())])
    return groups


def _short(path: str, value: Any) -> str:
    """A short, readable token for one axis value: ``tau4``, ``w3``, ``lr0.02``, ``kl``,
    a config's file stem."""
    key = path.split(".")[-1]
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if key == "config":
        return Path(text.split("::")[-1]).stem
    label = {"tau": "tau", "weight": "w", "lr": "lr", "norm": "", "divergence": ""}.get(key, key)
    if label in ("tau", "w", "lr"):
        return f"{label}{text}"
    return text if not label else f"{label}-{text}"


def _run_name(assignment: dict, varying: list[str], seed: int) -> str:
    parts = [_short(path, assignment[path]) if path != "method" else str(assignment[path])
             for path in varying if path in assignment]
    return "_".join([*parts, f"s{seed}"])


def _matches(assignment: dict, rule: dict) -> bool:
    return all(path in assignment and assignment[path] == value for path, value in rule.items())


def _apply(base: dict, assignment: dict, methods: dict, check: Checker, source: str) -> dict:
    run = copy_data(base)
    if "method" in assignment:
        terms = methods[assignment["method"]]
        run["distill"] = copy_data(terms if isinstance(terms, list) else [terms])
    for path, value in assignment.items():
        if path == "method":
            continue
        if path.startswith(TERM_PREFIX):
            if not run.get("distill"):
                continue  # a term axis has nothing to set on a run without terms
            for index in range(len(run["distill"])):
                _set_path(run, f"distill.{index}.{path[len(TERM_PREFIX):]}", value, check, source)
        else:
            _set_path(run, path, value, check, source)
    return run


def _validated(run: dict, check: Checker, label: str) -> dict:
    try:
        return validate_run(run, check.source)
    except UserError as error:
        message = str(error).removeprefix(f"{check.source}: ")
        raise UserError(f"{check.source}: {label}: {message}") from None


def load_study(path: str | Path, results_root: str | Path = "results") -> Study:
    """Read, validate and expand a study spec into its runs."""
    with store.gc_paused():  # thousands of plain dicts, no cycles
        return _load_study(path, results_root)


def _load_study(path: str | Path, results_root: str | Path) -> Study:
    path = Path(path)
    check = Checker(str(path))
    data = _read_yaml(path, check)
    if "defaults" in data:
        parent_path = path.parent / check.string(data["defaults"], "defaults")
        if not parent_path.is_file():
            raise check.fail("defaults", f"{parent_path} does not exist")
        parent = _read_yaml(parent_path, Checker(str(parent_path)))
        if "defaults" in parent:
            raise check.fail("defaults", f"{parent_path} has defaults of its own; only one level is allowed")
        data = _merge(parent, {k: v for k, v in data.items() if k != "defaults"})
    name = check.string(data.get("name", path.stem), "name")
    if not safe_name(name) or name.startswith("."):
        raise check.fail("name", f"{name!r} must be letters, digits, '_', '-' or '.' (it names a directory)")
    revision = check.integer(data.get("revision", 0), "revision", minimum=0)
    base_keys = [k for k in TOP_KEYS if k not in ("name", "out", "seed")]
    base = check.mapping(data.get("base", {}), "base", base_keys, required=("task", "dataset"))
    methods = check.mapping(data.get("methods") or {}, "methods", (data.get("methods") or {}).keys())
    for key, value in methods.items():
        terms = value if isinstance(value, list) else [value]
        if not terms:
            raise check.fail(join("methods", key), "must be a term or a non-empty list of terms")
        for index, term in enumerate(terms):
            where = join("methods", key) if not isinstance(value, list) else join(join("methods", key), index)
            validate_term(check, term, where)
    seeds = [check.integer(s, join("seeds", i), minimum=0)
             for i, s in enumerate(check.sequence(data.get("seeds", [0]), "seeds", min_length=1))]
    if len(set(seeds)) != len(seeds):
        raise check.fail("seeds", f"seeds repeat: {seeds}")
    baselines = check.mapping(data.get("baselines", {}), "baselines", ("teacher", "student"))
    baselines = {k: check.boolean(baselines.get(k, True), join("baselines", k)) for k in ("teacher", "student")}
    resources = {**RESOURCE_DEFAULTS, **check.mapping(data.get("resources", {}), "resources", RESOURCE_DEFAULTS)}
    for key in ("gpus", "cpus", "mem_gb", "time_min"):
        check.integer(resources[key], join("resources", key), minimum=0 if key == "gpus" else 1)
    if resources["partition"] is not None:
        check.string(resources["partition"], "resources.partition")
        if not safe_name(resources["partition"]):  # it goes into a batch script
            raise check.fail("resources.partition", f"{resources['partition']!r} must be letters, digits, '_', "
                                                    f"'-' or '.'")
    for index, reference in enumerate(check.sequence(data.get("references", []), "references")):
        check.string(reference, join("references", index))
        if not (path.parent / "references" / reference).is_file():
            raise check.fail(join("references", index),
                             f"{reference!r} is not a file in {path.parent / 'references'}")
    teacher_run = check.mapping(data.get("teacher_run", {}), "teacher_run", ("schedule", "seed"))
    cache_key = study_cache.key(data, path, results_root)  # the expansion below, kept from a previous load
    cached = study_cache.load(cache_key, path, results_root)
    if cached is not None and _configs_resolve(cached):
        return Study(name, path, {**data, "name": name, "revision": revision},
                     [PlannedRun(**fields) for fields in cached], resources)
    grid = data.get("grid") or {}
    if methods and "method" not in grid and not any("method" in (z or {}) for z in data.get("zip") or []):
        grid = {"method": list(methods), **grid}  # no method axis: every method is a cell
    groups = _axes(check, grid, data.get("zip"), methods)
    excludes = [check.mapping(rule, join("exclude", i), rule.keys() if isinstance(rule, dict) else ())
                for i, rule in enumerate(check.sequence(data.get("exclude", []), "exclude"))]
    cells = [dict(itertools.chain.from_iterable(a.items() for a in combo))
             for combo in itertools.product(*groups)] if groups else [{}]
    cells = [c for c in cells if not any(_matches(c, rule) for rule in excludes)]
    if not cells or (groups and not any(cells)):
        raise check.fail("exclude" if excludes else "grid", "the grid is empty: no run is left to plan")
    varying = [path for group in groups for path in group[0]
               if len({repr(c.get(path)) for c in cells}) > 1 or path == "method"]

    planned: dict[str, PlannedRun] = {}
    names: set[str] = set()
    checked_configs: set[str] = set()

    def check_configs(run: dict, label: str) -> None:
        for role in ("teacher", "student"):
            config = (run.get(role) or {}).get("config")
            if isinstance(config, str) and config not in checked_configs:
                try:
                    resolve_config(config, f"{role}.config")
                except UserError as error:
                    raise UserError(f"{check.source}: {label}: {error}") from None
                checked_configs.add(config)

    repeated: dict[str, str] = {}  # a teacher or baseline recurs in many cells: each distinct one is checked once
    resolved: dict[str, dict] = {}  # a cell's runs differ only in seed and name: validated once per cell

    def add(run: dict, name: str, stage: str, params: dict, kind: str, depends: list[str], label: str):
        run["name"] = name
        run["revision"] = revision  # a new revision of a study gives every run a new id
        seed = run.get("seed")
        same = repr({k: v for k, v in run.items() if k not in ("seed", "name")}) if kind == "cell" else None
        if same in resolved:  # the seeds were checked above, the name is ours: the rest is as validated
            run = {**copy_data(resolved[same]), "seed": seed, "name": name}
        else:
            run = _validated(run, check, label)
            if same is not None:
                resolved[same] = copy_data(run)
        check_configs(run, label)
        identity = run_id(run)
        if identity in planned:
            return identity
        unique = name if name not in names else f"{name}_{identity[:6]}"
        run["name"] = unique
        names.add(unique)
        planned[identity] = PlannedRun(run, identity, unique, stage, params, depends, kind)
        return identity

    def add_once(parts: list, make, *args) -> str:
        """``add(make(), *args)`` once per distinct ``parts`` (what the run is made of; two equal
        parts written in another key order are only checked twice)."""
        key = repr(parts)
        if key not in repeated:
            repeated[key] = add(make(), *args)
        return repeated[key]

    store_dir = Path(results_root) / name
    teachers, baseline_runs, cell_runs = [], [], []
    teacher_dirs: dict[str, str] = {}
    for cell in cells:
        label = "cell " + (", ".join(f"{k}={v}" for k, v in cell.items()) or "(base)")
        for seed in seeds:
            run = _apply(base, cell, methods, check, label)
            run["seed"] = seed
            depends: list[str] = []
            teacher = run.get("teacher")
            if run.get("distill") or (teacher and baselines["teacher"]):
                if not teacher:
                    raise check.fail("base.teacher", "distillation cells need a teacher")

                def teacher_run_of(run=run, teacher=teacher) -> dict:
                    t_run = {"task": run["task"], "role": "teacher",
                             "teacher": copy_data(teacher), "dataset": copy_data(run["dataset"]),
                             "schedule": _merge(base.get("schedule", {}), teacher_run.get("schedule", {})),
                             "seed": teacher_run.get("seed", 0)}
                    if teacher.get("checkpoint") is not None:
                        t_run["schedule"] = {**t_run["schedule"], "iterations": 0}  # evaluate only
                    return t_run

                t_name = "teacher" + "".join(f"_{_short(k, v)}" for k, v in cell.items()
                                             if k.startswith("teacher") or k.startswith("dataset"))
                t_id = add_once([t_name, run["task"], teacher, run["dataset"]], teacher_run_of, t_name, "teacher",
                                {k: v for k, v in cell.items() if k.startswith("teacher")}, "teacher", [],
                                label + " (teacher)")
                teachers.append(t_id)
                if teacher.get("checkpoint") is None:
                    if t_id not in teacher_dirs:
                        teacher_dirs[t_id] = str(store_dir / t_id)
                    run["teacher"] = {**teacher, "checkpoint": {"run": teacher_dirs[t_id]}}
                    depends = [t_id]
            if baselines["student"] and run.get("student"):
                def baseline_of(run=run) -> dict:
                    b_run = {k: copy_data(v) for k, v in run.items() if k != "teacher"}
                    b_run["distill"] = []
                    return b_run

                b_cell = {k: v for k, v in cell.items()
                          if k != "method" and not k.startswith((TERM_PREFIX, "teacher"))}
                b_name = _run_name({"method": "student", **b_cell}, ["method", *[v for v in varying if v in b_cell]],
                                   seed)
                b_parts = [b_name, {k: v for k, v in run.items() if k not in ("teacher", "distill")}]
                baseline_runs.append(add_once(b_parts,
                                              baseline_of, b_name, "student", {**b_cell, "seed": seed},
                                              "student_baseline", [], label + " (student baseline)"))
            if run.get("distill") or not baselines["student"]:
                cell_runs.append(add(run, _run_name(cell, varying, seed), "student",
                                     {**cell, "seed": seed}, "cell", depends, label))
    order = list(dict.fromkeys(teachers + baseline_runs + cell_runs))
    spec = {**data, "name": name, "revision": revision}
    runs = [planned[i] for i in order]
    study_cache.save(cache_key, path, results_root, [
        {"run": p.run, "run_id": p.run_id, "name": p.name, "stage": p.stage, "params": p.params,
         "depends_on": p.depends_on, "kind": p.kind} for p in runs])
    return Study(name, path, spec, runs, resources)


def _configs_resolve(runs: list[dict]) -> bool:
    """Whether every config the runs name still resolves (a saved expansion is used only then)."""
    try:
        configs = {run["run"][role]["config"] for run in runs for role in ("teacher", "student")
                   if isinstance(run["run"].get(role), dict)}
        for config in configs:
            resolve_config(config)
    except (UserError, KeyError, TypeError):
        return False
    return True
