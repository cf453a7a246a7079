"""The report's statistics as one JSON-ready object (``kdbench report --json``): every teacher,
student baseline and cell with its 95% interval, each cell's Δ with its test, Holm-corrected
p-value, verdict, the seeds it needs and the share of the teacher-student gap it closes (and under
``by_metric`` the same on every metric the runs record), the method-against-method comparisons
(reports.comparisons), and each published number against the measured one.

The same records the tables show (analysis.records, built once by analysis.summary), unrounded;
NaN (no value) becomes null.
"""

from __future__ import annotations

from analysis import budgets, fairness, perclass, references, tables
from analysis import format as fmt
from analysis import stats as significance
from analysis.records import VS_STUDENT, CellRecord, Match, Statistics, measured
from analysis.stats import Interval
from reports import comparisons


def _number(value):
    """A finite number as a float, an int as an int; NaN, Inf, None and the rest as None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    return float(value) if fmt.is_number(value) else None


def _interval(found: Interval) -> dict:
    return {"mean": _number(found.mean), "std": _number(found.std), "n": found.n,
            "ci95": [_number(found.low), _number(found.high)] if found.n > 1 else None}


def _cell(cell: CellRecord, metric: str) -> dict:
    tested, gap = cell.test(VS_STUDENT, metric), cell.gap(metric)
    needed = tested.seeds_needed
    return {
        "name": tables.setting(cell), "method": str(cell.method),
        "axes": {path: fmt.axis_value(path, value) for path, value in cell.axes.items()},
        **_interval(cell.measured(metric)),
        "baseline": _interval(measured(cell.baseline, metric)),
        "delta": _number(cell.delta(metric)),
        "delta_ci95": [_number(tested.low), _number(tested.high)] if tested.test else None,
        "test": tested.test or None, "df": _number(tested.df),
        "p": _number(tested.p), "p_holm": _number(tested.p_holm),
        "verdict": tested.verdict,
        "gap": _number(gap.gap), "gap_share": _number(gap.share),
        "gap_share_ci95": [_number(gap.low), _number(gap.high)] if fmt.is_number(gap.low) else None,
        "spread": _number(tested.spread),
        "seeds_have": _number(tested.runs),
        "seeds_needed": int(needed) if fmt.is_number(needed) else None,
        "seeds_beyond_max": bool(isinstance(needed, float) and needed == float("inf")),  # > MAX_SEEDS
    }


def _reference(match: Match, metric: str) -> dict:
    ref, cell = match.reference, match.cell
    against = references.published_vs_measured(ref, cell, metric)
    return {
        "method": str(ref.get("method")), "cell": str(cell.method) if cell else None,
        "source": str(ref.get("source")), "file": str(ref.get("file")),
        "published": _number(against["published"]),
        "measured": _interval(cell.measured(metric)) if cell else None,
        "inside_ci95": against["inside"], "distance_std": _number(against["distance"]),
        "tag": against["tag"], "starting_point": against["starting_point"],
    }


def holm_family(found: Statistics) -> list[str]:
    """The cells Holm's correction ran over on the primary metric (each tested against its student
    baseline), by label: adding or removing one changes every cell's corrected p."""
    metric = found.metric
    return [tables.setting(cell) for cell in found.cells if fmt.is_number(cell.test(VS_STUDENT, metric).p)]


def family_sentence(found: Statistics) -> str:
    """The verdicts' Holm family in words, or nothing when no cell was tested."""
    family = holm_family(found)
    if not family:
        return ""
    return (f"Holm's family: the {fmt.count_noun(len(family), 'cell')} tested against their student baseline on "
            f"{fmt.metric_label(found.metric)} ({'; '.join(family)}); a cell added to or removed from the study "
            f"changes every corrected p.")


def statistics_json(found: Statistics) -> dict:
    """The statistics of a study's report (analysis.summary.summarise) as ``kdbench report --json``
    prints them; ``metric`` the primary one, the family Holm ran over."""
    metric = found.metric

    def groups(kind: str, found_groups) -> list[dict]:
        return [{"name": tables.group_label(kind, group.run_names[0], len(found_groups)),
                 **_interval(group.metrics[metric])} for group in found_groups]

    out = {
        "metric": metric, "alpha": significance.ALPHA, "power": significance.POWER, "correction": "holm",
        "max_seeds": significance.MAX_SEEDS,
        "gap_share": "(cell mean - baseline mean) / (teacher mean - baseline mean); its ci95 is the delta's "
                     "divided by the gap, the teacher taken as fixed",
        "tested_cells": found.family(VS_STUDENT, metric).tested,
        "holm_family": {"comparison": VS_STUDENT, "metric": metric, "cells": holm_family(found)},
        "teachers": groups("teacher", found.teachers), "baselines": groups("student", found.baselines),
        "cells": [_cell(cell, metric) for cell in found.cells],
        "references": [_reference(match, metric) for match in found.matches],
    }
    for entry, cell in zip(out["cells"], found.cells):   # every metric the runs record, the primary one too
        entry["by_metric"] = comparisons.cell_metrics_json(cell, found.metrics)
    for entry, group in zip(out["teachers"] + out["baselines"], found.teachers + found.baselines):
        entry["by_metric"] = {m: comparisons.interval_json(group.metrics[m]) for m in found.metrics}
    out.update(comparisons.comparisons_json(found))
    if found.equal_budget:   # each cell against the student trained as long too (kdbench.budget)
        out["equal_budget"] = budgets.budget_statistics(found)
    if found.tuning:
        out["tuning"] = list(found.tuning)
    if found.per_class:   # each class's values and Δs (analysis.perclass)
        out["per_class"] = perclass.json_ready(found.per_class)
    out["fairness"] = fairness.audits(found)  # which comparisons are like for like (analysis.fairness)
    return out
