"""Equal-budget student baselines: a study's ``equal_budget:`` (a later stage, kdbench.stages.EqualBudget).

A distilled run costs more than its student baseline (the teacher's forward, the KD terms), so a
method can look better only because it spent more. With ``equal_budget: wall_clock``, each student
baseline gets a twin, ``student_budget_*`` (kind ``student_budget``, stage ``budget``), trained for
as long as the slowest distilled run of the same setting took:

* the same setting: the cells that share that baseline (the baseline's own axis values; the method,
  its terms and the teacher differ), and the same seed: each seed's twin is paired with that seed's
  cells, and is planned as soon as they have all finished (adding seeds later leaves the earlier
  seeds' twins, and their ids, unchanged);
* a run's training time: its iterations x its median step time (final.json ``cost``:
  ``seconds_per_iter``, runners.hooks.CostHook), which leaves out start-up, evaluation and any
  time lost to a preemption and resume;
* ``wall_clock``: iterations = ceil(the slowest cell's training seconds / the baseline's own
  seconds per iteration). Both are measured, so cells and baselines should run on the same kind of
  machine; ``iterations``: the slowest cell's cost in student iterations, measured within the cell
  alone: its iterations / (1 - the step's share spent in the teacher's forward and the KD terms),
  which holds when the runs were timed on different machines.

A cell that failed, diverged or recorded no cost is left out of "slowest" (and named in the
report); when every cell of a seed failed, nothing is planned. The twin is the baseline with more
iterations and nothing else changed: its learning-rate schedule is stretched over the longer run
as a longer schedule of the same kind would be (poly decays to min_lr at the new last iteration;
step's milestones stay at 2/3 and 11/12 of it; warm-up keeps its iterations). Same results, same
iterations, same run id: a relaunch finds the twin complete and runs nothing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from kdbench import store
from kdbench.ids import run_id
from kdbench.study import is_baseline_axis
from kdbench.vocab import FINISHED, Kind, Stage, State


@dataclass(frozen=True)
class Budget:
    """One equal-budget baseline (or why it is not planned yet): for one student baseline and seed."""

    baseline: object                # the PlannedRun of the ordinary student baseline
    cells: tuple                    # the PlannedRuns of the setting's distilled runs of that seed
    mode: str
    iterations: int | None = None   # None: not planned (``why`` says what it waits for)
    slowest: str | None = None      # the name of the slowest complete cell
    cost: float | None = None       # its training seconds (wall_clock) or student iterations (iterations)
    baseline_seconds_per_iter: float | None = None
    excluded: tuple[str, ...] = ()  # cells left out: "name (state)"
    why: str = ""
    shared: tuple[str, ...] = ()    # the runs it was computed from that were timed beside other work

    def warning(self) -> str:
        """Why this budget's timings may be the machine's rather than the runs' (empty: none)."""
        if not self.shared:
            return ""
        return (f"warning: the equal budget of {self.baseline.name} comes from {_names(list(self.shared))}, timed "
                f"while other work shared the machine: their seconds per iteration may be inflated; relaunch them "
                f"alone (--parallel 1 on an idle machine) for a budget that is the runs' own")


def _timed_shared(final: dict | None) -> bool:
    """Whether a run recorded that it was timed beside other work (``cost.shared``, runners.contention)."""
    return ((final or {}).get("cost") or {}).get("shared") is True


def training_seconds(final: dict) -> float | None:
    """A complete run's training time: its iterations x its median seconds per iteration."""
    per_iter = (final.get("cost") or {}).get("seconds_per_iter")
    iterations = final.get("iterations")
    if not (store.is_finite_number(per_iter) and store.is_finite_number(iterations)) or per_iter <= 0:
        return None
    return float(iterations) * float(per_iter)


def student_iterations(final: dict) -> float | None:
    """A complete distilled run's cost in student iterations: its iterations over the share of its
    step the student alone takes (1 - teacher_share - kd_share; runs that did not record the
    teacher's share counted it in kd_share)."""
    cost = final.get("cost") or {}
    teacher, kd = cost.get("teacher_share"), cost.get("kd_share")
    iterations = final.get("iterations")
    if not store.is_finite_number(kd) or not store.is_finite_number(iterations):
        return None
    student = 1.0 - kd - (teacher if store.is_finite_number(teacher) else 0.0)
    return float(iterations) / student if student > 0 else None


def _setting(params: dict) -> str:
    """The axis values a student baseline is planned per (kdbench.expand: all but the method, its
    terms, the teacher and the seed), as a key."""
    return repr(sorted((k, repr(v)) for k, v in params.items() if is_baseline_axis(k)))


def settings(runs) -> list[tuple[object, tuple]]:
    """(student baseline, its setting's distilled runs of the same seed) for every baseline with cells."""
    cells: dict[tuple, list] = {}
    for planned in runs:
        if planned.kind == Kind.CELL:
            cells.setdefault((_setting(planned.params), planned.run.seed), []).append(planned)
    return [(b, tuple(cells[(_setting(b.params), b.run.seed)])) for b in runs
            if b.kind == Kind.STUDENT_BASELINE and (_setting(b.params), b.run.seed) in cells]


def _round_up(value: float) -> int:
    """ceil, after rounding away float noise (0.15 x 10 / 0.1 is 15.000000000000002, not 16)."""
    return max(1, math.ceil(round(value, 6)))


def budget_for(baseline, cells: tuple, scanned: dict, mode: str) -> Budget:
    """The equal-budget baseline of one baseline and seed, from its runs' files (``store.scan``)."""
    made = Budget(baseline, cells, mode)
    running = [c.name for c in cells if scanned[c.run_id].state not in FINISHED]
    if running:
        return dataclasses.replace(made, why=f"waits for {_names(running)} to finish")
    measure = training_seconds if mode == "wall_clock" else student_iterations
    costs, excluded = {}, []
    for cell in cells:
        files = scanned[cell.run_id]
        value = measure(files.final) if files.state == State.COMPLETE else None
        if value is None:
            excluded.append(f"{cell.name} ({files.state if files.state != State.COMPLETE else 'no cost recorded'})")
        else:
            costs[cell.name] = value
    made = dataclasses.replace(made, excluded=tuple(excluded))
    if not costs:
        return dataclasses.replace(made, why=f"not planned: no distilled run finished with a cost "
                                             f"({_names(excluded)}); launch --retry-failed retries them")
    slowest = max(costs, key=lambda name: (costs[name], name))
    final = scanned[next(c.run_id for c in cells if c.name == slowest)].final
    made = dataclasses.replace(made, slowest=slowest, cost=costs[slowest],
                               shared=(slowest,) if _timed_shared(final) else ())
    if mode == "iterations":
        return dataclasses.replace(made, iterations=_round_up(costs[slowest]))
    base = scanned[baseline.run_id]
    made = dataclasses.replace(made, shared=made.shared + ((baseline.name,) if _timed_shared(base.final) else ()))
    if base.state not in FINISHED:
        return dataclasses.replace(made, why=f"waits for {baseline.name} to finish (its seconds per iteration)")
    per_iter = (base.final or {}).get("cost", {}).get("seconds_per_iter") if base.state == State.COMPLETE else None
    if not store.is_finite_number(per_iter) or per_iter <= 0:
        return dataclasses.replace(made, why=f"not planned: {baseline.name} recorded no seconds per iteration "
                                             f"({base.state})")
    return dataclasses.replace(made, iterations=_round_up(costs[slowest] / per_iter),
                               baseline_seconds_per_iter=float(per_iter))


def _names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def budgets(spec, runs, directory: Path) -> list[Budget]:
    """Every equal-budget baseline of a study (none without ``equal_budget:``), from the store."""
    if not spec.equal_budget:
        return []
    pairs = settings(runs)
    wanted = {p.run_id for baseline, cells in pairs for p in (baseline, *cells)}
    scanned = store.scan(directory, sorted(wanted))
    return [budget_for(baseline, cells, scanned, spec.equal_budget) for baseline, cells in pairs]


def twin_name(baseline_name: str) -> str:
    """``student_s0`` -> ``student_budget_s0``: the twin is named by its kind."""
    return Kind.STUDENT_BUDGET + baseline_name.removeprefix("student")


def budget_run(budget: Budget):
    """The planned twin of a budget with iterations: the baseline, longer, under its own name."""
    baseline = budget.baseline
    name = twin_name(baseline.name)
    run = dataclasses.replace(baseline.run, name=name,
                              schedule=dataclasses.replace(baseline.run.schedule, iterations=budget.iterations))
    return dataclasses.replace(baseline, run=run, run_id=run_id(run), name=name, stage=Stage.BUDGET, depends_on=(),
                               kind=Kind.STUDENT_BUDGET)


def as_record(budget: Budget) -> dict:
    """One budget as the equal-budget stage records it (``results/<study>/stages/budget.json``), for
    the report: the run that has the budget (the twin, or the baseline itself when the budget is its
    own iterations), what it was computed from, and what it waits for."""
    baseline = budget.baseline
    own = budget.iterations == baseline.run.schedule.iterations
    return {"run": baseline.name if own else twin_name(baseline.name), "baseline": baseline.name,
            "baseline_run_id": baseline.run_id, "seed": baseline.run.seed,
            "baseline_iterations": baseline.run.schedule.iterations, "mode": budget.mode,
            "iterations": budget.iterations, "cells": [c.name for c in budget.cells], "slowest": budget.slowest,
            "cost": budget.cost, "baseline_seconds_per_iter": budget.baseline_seconds_per_iter,
            "excluded": list(budget.excluded), "why": budget.why, "shared": list(budget.shared),
            "warning": budget.warning()}
