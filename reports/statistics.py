"""The report's statistics as one JSON-ready object (``kdbench report --json``): every teacher,
student baseline and cell with its 95% interval, each cell's Δ with its test, Holm-corrected
p-value, verdict, the seeds it needs and the share of the teacher-student gap it closes, and each
published number against the measured one.

The same numbers the tables show, unrounded; NaN (no value) becomes null.
"""

from __future__ import annotations

import pandas as pd

from analysis import aggregate, budgets, tables
from analysis import format as fmt
from analysis import stats as significance
from kdbench.expand import Study
from reports.tuning import tuning_json


def _number(value):
    """A finite number as a float, an int as an int; NaN, Inf, None and the rest as None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    return float(value) if fmt.is_number(value) else None


def _interval(row: dict, prefix: str, metric: str) -> dict:
    found = aggregate.measured(row, prefix, metric)
    return {"mean": _number(found.mean), "std": _number(found.std), "n": found.n,
            "ci95": [_number(found.low), _number(found.high)] if found.n > 1 else None}


def _cell(row: dict, axes: list[str], metric: str) -> dict:
    needed = row.get(f"{metric}|seeds_needed")
    return {
        "name": tables.setting(row, axes), "method": str(row["method"]),
        "axes": {axis[5:]: fmt.axis_value(axis, row[axis]) for axis in axes},
        **_interval(row, "", metric),
        "baseline": _interval(row, "baseline|", metric),
        "delta": _number(row.get(f"{metric}|delta")),
        "delta_ci95": ([_number(row.get(f"{metric}|delta_low")), _number(row.get(f"{metric}|delta_high"))]
                       if row.get(f"{metric}|test") else None),
        "test": row.get(f"{metric}|test") or None, "df": _number(row.get(f"{metric}|df")),
        "p": _number(row.get(f"{metric}|p")), "p_holm": _number(row.get(f"{metric}|p_holm")),
        "verdict": row.get(f"{metric}|verdict"),
        "gap": _number(row.get(f"{metric}|gap")), "gap_share": _number(row.get(f"{metric}|gap_share")),
        "gap_share_ci95": ([_number(row.get(f"{metric}|gap_share_low")), _number(row.get(f"{metric}|gap_share_high"))]
                           if fmt.is_number(row.get(f"{metric}|gap_share_low")) else None),
        "spread": _number(row.get(f"{metric}|spread")),
        "seeds_have": _number(row.get(f"{metric}|runs")),
        "seeds_needed": int(needed) if fmt.is_number(needed) else None,
        "seeds_beyond_max": bool(isinstance(needed, float) and needed == float("inf")),  # > MAX_SEEDS
    }


def _reference(match: dict, metric: str) -> dict:
    ref, cell = match["reference"], match["cell"]
    against = aggregate.published_vs_measured(ref, cell, metric)
    return {
        "method": str(ref.get("method")), "cell": str(cell["method"]) if cell else None,
        "source": str(ref.get("source")), "file": str(ref.get("file")),
        "published": _number(against["published"]),
        "measured": _interval(cell, "", metric) if cell else None,
        "inside_ci95": against["inside"], "distance_std": _number(against["distance"]),
        "tag": against["tag"], "starting_point": against["starting_point"],
    }


def study_statistics(study: Study, frame: pd.DataFrame) -> dict:
    """The statistics of a study's report from its rows (analysis.collect), aggregated as the report
    aggregates them."""
    metric = aggregate.primary_metric(frame)
    cells = aggregate.cells(frame)
    references = aggregate.read_references(study.path, study.spec.references)
    matches = aggregate.match_references(references, cells, study.spec.methods, aggregate.task_of(frame))
    found = statistics(cells, aggregate.baselines(frame), aggregate.teachers(frame), matches, metric)
    if study.spec.equal_budget:   # each cell against the student trained as long too (kdbench.budget)
        found["equal_budget"] = budgets.budget_statistics(cells, aggregate.budget_baselines(frame),
                                                          budgets.study_budgets(study), metric)
    if study.spec.tune is not None:
        found["tuning"] = tuning_json(study)
    return found


def statistics(cells: pd.DataFrame, baselines: pd.DataFrame, teachers: pd.DataFrame, matches: pd.DataFrame,
               metric: str) -> dict:
    """The statistics of a study's report; ``metric`` the primary one, the family Holm ran over."""
    axes = [c for c in aggregate.axes_of_table(cells) if c != "method"] if len(cells) else []

    def groups(frame: pd.DataFrame, kind: str) -> list[dict]:
        rows = frame.to_dict("records") if len(frame) else []
        return [{"name": tables.group_label(kind, row, len(rows)), **_interval(row, "", metric)} for row in rows]

    return {
        "metric": metric, "alpha": significance.ALPHA, "power": significance.POWER, "correction": "holm",
        "max_seeds": significance.MAX_SEEDS,
        "gap_share": "(cell mean - baseline mean) / (teacher mean - baseline mean); its ci95 is the delta's "
                     "divided by the gap, the teacher taken as fixed",
        "tested_cells": aggregate.tested_cells(cells, metric),
        "teachers": groups(teachers, "teacher"), "baselines": groups(baselines, "student"),
        "cells": [_cell(row, axes, metric) for row in cells.to_dict("records")] if len(cells) else [],
        "references": [_reference(m, metric) for m in matches.to_dict("records")] if len(matches) else [],
    }
