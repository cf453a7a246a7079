"""Tuned baselines: a study's ``tune:`` block (kdbench.study.Tune).

``plan_tune`` is what ``expand`` plans for such a study: its teachers, then, for every method
and for the student baseline (``student``), one run per setting of its tune axes (stage and kind
``tune``), at the study's first seed, training on the training set less a held-out share of it
and evaluating on that share (``dataset.holdout``: val is never read). ``final_stage``, a later
stage (kdbench.expand.LATER_STAGES), reads the tune runs' results: once every tune run of a method
has ended, it chooses the method's setting and plans the final runs, the chosen setting over the
study's seeds on the real train/val split (stage ``student``: cells, and the student baseline at
its own choice). ``choose`` states the rule; ``summary`` is what the report shows.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from kdbench import store
from kdbench.expand import PlannedRun, Waiting, _Planner, _Skipped, apply_cell, run_name
from kdbench.ids import run_id
from kdbench.study import STUDENT, StudySpec

TUNE = "tune"
ENDED = ("complete", *store.ERROR_STATES)   # a tune run that will not change without a relaunch


def metric_of(spec: StudySpec) -> str:
    """The held-out metric a setting is chosen by: ``tune.metric``, else the task's primary one."""
    return spec.tune.metric or ("val/bbox_mAP" if spec.base.get("task") == "det" else "val/mIoU")


def tuned(spec: StudySpec) -> list[str]:
    """What is tuned, in order: the study's methods, then the student baseline."""
    methods = [axis.values for group in spec.axes for axis in group if axis.path == "method"]
    return [*(methods[0] if methods else spec.methods), *([STUDENT] if spec.student_baseline else [])]


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


def _setting_run(planner: _Planner, method: str, setting: dict, label: str) -> tuple[dict, str | None, tuple]:
    """The run dict of ``method`` at ``setting`` (the student baseline: without teacher and terms),
    its teacher run's id and its dependencies."""
    cell = {} if method == STUDENT else {"method": method}
    run = apply_cell(planner.spec, {**cell, **setting}, planner.check, label)
    if method == STUDENT:
        return {k: v for k, v in run.items() if k not in ("teacher", "distill")}, None, ()
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
    for method in tuned(spec):
        planner.spec = _with_axes(spec, method)
        for setting in spec.tune.settings(method):
            label = _label(method, setting)
            planner.current = {**({} if method == STUDENT else {"method": method}), **setting}
            try:
                run, teacher_id, depends = _setting_run(planner, method, setting, label)
                teachers += [teacher_id] if teacher_id else []
                run["dataset"] = {**run["dataset"], "holdout": holdout}
                name = f"{TUNE}_" + run_name({"method": method, **setting}, ["method", *setting], seed)
                parsed = planner.parse({**run, "seed": seed, "name": name}, label)
            except _Skipped:
                continue
            runs.append(planner.keep(parsed, run_id(parsed), TUNE, {"method": method, **setting, "seed": seed},
                                     TUNE, depends))
    planner.spec = spec
    problems = planner.problems()
    if problems is not None:
        raise problems
    return [planner.planned[i] for i in dict.fromkeys(teachers + runs)]


def choose(tries: list[dict]) -> dict | None:
    """The chosen try among ``tries`` (each ``{"setting", "state", "score"}``, in the order the
    settings are listed): the highest held-out score among the complete runs with a finite score;
    on a tie, the one listed first. Failed, diverged or unscored runs are never chosen; None when
    no run is left to choose."""
    best = None
    for entry in tries:
        score = entry["score"]
        if entry["state"] != "complete" or score is None or not math.isfinite(score):
            continue
        if best is None or score > best["score"]:   # strictly better: a tie keeps the first listed
            best = entry
    return best


def tries(spec: StudySpec, runs: list[PlannedRun] | tuple[PlannedRun, ...], directory: Path) -> dict[str, list[dict]]:
    """method -> its tune runs as the store holds them: setting, name, run id, state, held-out score,
    iterations and cost (final.json ``cost``), in the order the settings are listed."""
    tune_runs = [p for p in runs if p.kind == TUNE]
    scanned = store.scan(directory, [p.run_id for p in tune_runs])
    metric = metric_of(spec)
    found: dict[str, list[dict]] = {method: [] for method in tuned(spec)}
    for planned in tune_runs:
        files = scanned[planned.run_id]
        final = files.final if files.state == "complete" else {}
        score = (final.get("metrics") or {}).get(metric)
        cost = final.get("cost") or {}
        setting = {k: v for k, v in planned.params.items() if k not in ("method", "seed")}
        found.setdefault(planned.params["method"], []).append({
            "setting": setting, "name": planned.name, "run_id": planned.run_id, "state": files.state,
            "score": float(score) if store.is_finite_number(score) else None,
            "iterations": planned.run.schedule.iterations,
            "seconds": cost.get("wall_seconds_this_attempt") if store.is_finite_number(
                cost.get("wall_seconds_this_attempt")) else None})
    return found


def final_stage(spec: StudySpec, runs: list[PlannedRun], directory: Path) -> tuple[list[PlannedRun], list[Waiting]]:
    """The final runs of every method whose tune runs have all ended, at its chosen setting; a
    ``Waiting`` naming the tune runs still to end. A method none of whose tune runs completed gets
    no final runs (the report says why); it does not wait."""
    if spec.tune is None:
        return [], []
    found = tries(spec, runs, directory)
    pending = {method: [t["run_id"] for t in entries if t["state"] not in ENDED] for method, entries in found.items()}
    chosen = {method: choose(entries) for method, entries in found.items() if not pending[method]}
    planned = _plan_finals(spec, directory.parent, {m: c["setting"] for m, c in chosen.items() if c is not None})
    known = {p.run_id for p in runs}
    more = [p for p in planned if p.run_id not in known]
    waiting_for = [m for m, ids in pending.items() if ids]
    if not waiting_for:
        return more, []
    needs = tuple(i for m in waiting_for for i in pending[m])
    why = (f"the final runs of {', '.join(waiting_for)} (seeds {', '.join(map(str, spec.seeds))}), at the settings "
           f"their tune runs choose: {len(needs)} tune run(s) still to finish")
    return more, [Waiting("student", needs, why)]


def _plan_finals(spec: StudySpec, results: Path, settings: dict[str, dict]) -> list[PlannedRun]:
    """Each method's cells and the student baseline's runs over the study's seeds, at ``settings``."""
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
            baselines.append(planner.keep(parsed, run_id(parsed), "student", {"seed": seed}, "student_baseline", ()))
    return [planner.planned[i] for i in dict.fromkeys(baselines + cells) if planner.planned[i].kind != "teacher"]


def summary(spec: StudySpec, runs, directory: Path) -> list[dict]:
    """Per method (the student baseline last): the settings tried, each tune run's held-out score
    and state, the choice (None while its tune runs run, or when none completed) and the budget
    (tune runs, iterations, seconds). The report's Tuning section."""
    if spec.tune is None:
        return []
    rows = []
    for method, entries in tries(spec, runs, directory).items():
        ended = all(t["state"] in ENDED for t in entries)
        best = choose(entries) if ended else None
        seconds = [t["seconds"] for t in entries if t["seconds"] is not None]
        rows.append({
            "method": method, "metric": metric_of(spec), "tries": entries,
            "chosen": None if best is None else best["setting"], "chosen_run": None if best is None else best["name"],
            "status": "chosen" if best else ("waiting" if not ended else "no tune run completed"),
            "budget": {"runs": len(entries), "iterations": sum(t["iterations"] for t in entries),
                       "seconds": sum(seconds) if len(seconds) == len(entries) else None},
            "never_chosen": [t["name"] for t in entries if t["state"] != "complete" or t["score"] is None]})
    return rows
