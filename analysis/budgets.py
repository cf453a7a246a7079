"""The report's equal-budget section (a study's ``equal_budget:``, kdbench.budget), from
the decisions the equal-budget stage recorded (kdbench.stages.EqualBudget): each cell's Δ
against both student baselines, the ordinary one and the one trained as long as the slowest
distilled cell, and what each equal budget was computed from.

Tables as analysis.tables builds them (every number through analysis.format); the figure is
analysis.plots.budget_front; ``budget_statistics`` gives the same numbers to ``kdbench report --json``.
"""

from __future__ import annotations

from analysis import format as fmt
from analysis import tables
from analysis.records import VS_EQUAL_BUDGET, VS_STUDENT, Delta, Group, Statistics, Twin
from analysis.tables import Cell, Table
from kdbench.expand import Study
from kdbench.vocab import Stage


def comparison_table(found: Statistics) -> Table | None:
    """Each equal-budget baseline and cell: its extra training time and its Δ against the ordinary
    and the equal-budget student baseline, each with its interval and verdict."""
    if not found.twins or not found.cells:
        return None
    metric = found.metric
    label = fmt.metric_label(metric)
    table = Table("equal_budget", "Equal budgets: Δ vs the student baseline and vs the student trained as long",
                  ["Cell", label, "training time vs student", "Δ vs student", "verdict", "Δ vs equal-budget student",
                   "Δ 95% interval", "p (Holm)", "verdict (equal budget)"],
                  caption=f"{label}. The equal-budget student is the student baseline trained for as many "
                          "iterations as the slowest distilled cell of its setting took time, seed by seed (its poly "
                          "learning rate stretched over the longer run). Training time: iterations x the median "
                          "seconds per iteration, over the student baseline's, as measured on each run (a busy or "
                          "another machine changes it: the budget each twin was given is in the next table). Each Δ "
                          "is tested as in the significance table (paired by seed or Welch); Holm's correction runs "
                          "over each column's cells apart. A gain against the student that is within noise against "
                          "the equal-budget student may have come from the extra training time, not the teacher.")
    for twin in found.twins:
        table.rows.append([Cell(_twin_label(twin.group, len(found.twins))), Cell(_mean(twin.group, metric)),
                           Cell(fmt.ratio(twin.extra_cost)), Cell(fmt.signed(twin.test.delta)),
                           Cell(str(twin.test.verdict)), *[Cell(fmt.MISSING) for _ in range(4)]])
    for cell in found.cells:
        ordinary, equal = cell.test(VS_STUDENT, metric), cell.test(VS_EQUAL_BUDGET, metric)
        table.rows.append([
            Cell(tables.setting(cell)), Cell(_mean(cell.group, metric)), Cell(fmt.ratio(cell.extra_cost)),
            Cell(fmt.signed(cell.delta(metric))), Cell(str(ordinary.verdict)), Cell(fmt.signed(equal.delta)),
            Cell(fmt.interval(equal.low, equal.high, sign=True)), Cell(fmt.p_value(equal.p_holm)),
            Cell(str(equal.verdict))])
    return table


def _twin_label(group: Group, count: int) -> str:
    """``student, equal budget``, with the run name when a study has several settings."""
    return tables.group_label("student", group, count).replace("student (no distillation)", "student, equal budget")


def _mean(group: Group, metric: str) -> str:
    interval = group.metrics[metric]
    return fmt.mean_std(interval.mean, interval.std, interval.n)


def _cost(found: dict) -> str:
    if found["cost"] is None:
        return fmt.MISSING
    if found["mode"] == "wall_clock":
        return f"{fmt.number(found['cost'])} s"
    return f"{fmt.number(found['cost'])} student iterations"


def _note(each: dict) -> str:
    warning = f"; {each['warning']}" if each.get("warning") else ""   # timed beside other work (kdbench.budget)
    if each["run"] == each["baseline"]:
        return f"{each['baseline']} itself: the budget is its own iterations{warning}"
    return (each["why"] or "planned") + warning


def _vs_student(each: dict) -> float | None:
    return each["iterations"] / each["baseline_iterations"] if each["iterations"] else None


def basis_table(found: list[dict]) -> Table | None:
    """What each equal budget came from: the slowest cell, its cost, the baseline's pace, the
    cells left out; or what it still waits for."""
    if not found:
        return None
    table = Table("budget_basis", "Where each equal budget comes from",
                  ["Equal-budget run", "budget by", "iterations", "vs student", "slowest cell", "its cost",
                   "baseline s / iteration", "left out", "note"],
                  caption="Per student baseline and seed, from the complete runs' final.json: wall clock = the "
                          "slowest cell's iterations x its median seconds per iteration, divided by the student "
                          "baseline's own seconds per iteration, rounded up; iterations = the slowest cell's "
                          "iterations over the share of its step the student alone takes. Failed or diverged "
                          "cells are left out. vs student: the twin's iterations over the student baseline's, the "
                          "training time it is given; its measured time (Equal budgets) differs where the machine "
                          "ran at another speed than when the student baseline was timed.")
    for each in found:
        table.rows.append([Cell(each["run"]), Cell(each["mode"].replace("_", " ")),
                           Cell(fmt.integer(each["iterations"])), Cell(fmt.ratio(_vs_student(each))),
                           Cell(each["slowest"] or fmt.MISSING), Cell(_cost(each)),
                           Cell(fmt.seconds(each["baseline_seconds_per_iter"])),
                           Cell(", ".join(each["excluded"]) or fmt.MISSING), Cell(_note(each))])
    return table


def study_budgets(study: Study) -> list[dict]:
    """The study's equal budgets as the equal-budget stage decided them (kdbench.stages.EqualBudget,
    ``results/<study>/stages/budget.json``); none without ``equal_budget:``."""
    return (study.records.get(Stage.BUDGET) or {}).get("budgets", [])


def _number(value):
    return float(value) if fmt.is_number(value) else None


def _tested(found: Delta) -> dict:
    return {"delta": _number(found.delta),
            "delta_ci95": [_number(found.low), _number(found.high)] if found.test else None,
            "test": found.test or None, "p_holm": _number(found.p_holm), "verdict": found.verdict}


def _twin(twin: Twin, count: int) -> dict:
    interval = twin.group.metrics[twin.test.metric]
    return {"name": _twin_label(twin.group, count), "extra_cost": _number(twin.extra_cost),
            "mean": _number(interval.mean), "n": interval.n, "vs_student": _tested(twin.test)}


def budget_statistics(found: Statistics) -> dict:
    """The equal-budget numbers for ``kdbench report --json``: each twin's Δ vs the student and its
    extra cost, each cell's Δ vs the equal-budget student, and each budget's basis."""
    budgets = found.budgets
    return {
        "by": budgets[0]["mode"] if budgets else None,
        "baselines": [_twin(twin, len(found.twins)) for twin in found.twins],
        "cells": [{"name": tables.setting(cell), "extra_cost": _number(cell.extra_cost),
                   "vs_equal_budget": _tested(cell.test(VS_EQUAL_BUDGET, found.metric))}
                  for cell in found.cells] if found.twins else [],
        "basis": [{"run": b["run"], "seed": b["seed"], "iterations": b["iterations"], "slowest": b["slowest"],
                   "cost": b["cost"], "budget_vs_student": _vs_student(b),
                   "baseline_seconds_per_iter": b["baseline_seconds_per_iter"], "excluded": list(b["excluded"]),
                   "waiting": b["why"] or None} for b in budgets],
    }
