"""Tuned baselines: a study's ``tune:`` block (kdbench.study.Tune).

kdbench.expand plans the tune stage (``plan_tune``) and the final runs at given settings
(``plan_finals``); this module reads the tune runs' results and chooses. ``plan_tune`` is what
``expand`` plans for such a study: its teachers, then, for every method
and for the student baseline (``student``), one run per setting of its tune axes (stage and kind
``tune``), at the study's first seed, training on the training set less a held-out share of it
and evaluating on that share (``dataset.holdout``: val is never read). kdbench.stages.TunedFinals,
a later stage, reads the tune runs' results (``summary``): once every tune run of a method
has ended, it chooses the method's setting and plans the final runs, the chosen setting over the
study's seeds on the real train/val split (stage ``student``: cells, and the student baseline at
its own choice). ``choose`` states the rule; ``summary`` is what the report shows.
"""

from __future__ import annotations

import math
from pathlib import Path

from kdbench import store
from kdbench.study import STUDENT, StudySpec
from kdbench.vocab import ENDED, Kind, State, primary_metric


def metric_of(spec: StudySpec) -> str:
    """The held-out metric a setting is chosen by: ``tune.metric``, else the task's primary one."""
    return spec.tune.metric or primary_metric(spec.base.get("task"))


def tuned(spec: StudySpec) -> list[str]:
    """What is tuned, in order: the study's methods, then the student baseline."""
    methods = [axis.values for group in spec.axes for axis in group if axis.path == "method"]
    return [*(methods[0] if methods else spec.methods), *([STUDENT] if spec.student_baseline else [])]


def choose(tries: list[dict]) -> dict | None:
    """The chosen try among ``tries`` (each ``{"setting", "state", "score"}``, in the order the
    settings are listed): the highest held-out score among the complete runs with a finite score;
    on a tie, the one listed first. Failed, diverged or unscored runs are never chosen; None when
    no run is left to choose."""
    best = None
    for entry in tries:
        score = entry["score"]
        if entry["state"] != State.COMPLETE or score is None or not math.isfinite(score):
            continue
        if best is None or score > best["score"]:   # strictly better: a tie keeps the first listed
            best = entry
    return best


def tries(spec: StudySpec, runs, directory: Path) -> dict[str, list[dict]]:
    """method -> its tune runs (the PlannedRuns of kind ``tune`` among ``runs``) as the store holds
    them: setting, name, run id, state, held-out score, iterations and cost (final.json ``cost``),
    in the order the settings are listed."""
    tune_runs = [p for p in runs if p.kind == Kind.TUNE]
    scanned = store.scan(directory, [p.run_id for p in tune_runs])
    metric = metric_of(spec)
    found: dict[str, list[dict]] = {method: [] for method in tuned(spec)}
    for planned in tune_runs:
        files = scanned[planned.run_id]
        final = files.final if files.state == State.COMPLETE else {}
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
            "status": "chosen" if best else "waiting" if not ended else "none chosen: no tune run has a held-out score",
            "budget": {"runs": len(entries), "iterations": sum(t["iterations"] for t in entries),
                       "seconds": sum(seconds) if len(seconds) == len(entries) else None},
            # ended without a held-out score (failed, diverged, kd_inactive): never chosen
            "never_chosen": [t["name"] for t in entries if t["state"] in ENDED and t["score"] is None]})
    return rows

