"""Per-class results: each class's IoU and accuracy (segmentation) or AP (detection), as the runs
recorded them (final.json ``per_class``, runners.metrics.class_values), averaged over seeds per
teacher, student baseline and cell, and each cell's per-class Δ against its student baseline.

The Δ of a class is tested as the report tests a cell's Δ (analysis.stats: paired by seed or Welch,
the same verdict rule), with Holm's correction across the classes of the cell: a cell's classes are
one family. A class counts in a run where the run has every measure of it: a segmentation class
absent from the split's ground truth has no accuracy (its IoU would only count false positives), a
detection category without ground truth no AP. Runs recorded before per-class values were (no
``per_class``) are simply not in these numbers.

``results`` computes them once per report (analysis.summary: ``Statistics.per_class``, one
``PerClass`` per measure); ``table3`` and ``delta_table`` lay them out for the report, and
``plain`` turns such a table into (caption, columns, rows) of text for any other writer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import format as fmt
from analysis import stats as significance
from analysis import tables
from analysis.records import CellRecord, Group
from kdbench.store import PER_CLASS

MEASURES = {"seg": ("IoU", "Acc"), "det": ("AP",)}
SHOWN = {"seg": None, "det": 10}  # classes a report table shows: all, or those with the largest |Δ|
VERDICT_MARKS = {significance.GAIN: "gain", significance.LOSS: "loss", significance.NOISE: "within noise"}


@dataclass(frozen=True)
class ClassRow:
    """A teacher, student baseline or cell: its mean over seeds per class (NaN where no complete run
    has the class) and how many runs each mean is over."""

    label: str
    kind: str          # teacher, student or cell
    means: tuple[float, ...]
    runs: tuple[int, ...]
    primary: float     # the group's mean on the report's primary metric (mIoU, bbox mAP)


@dataclass(frozen=True)
class ClassDelta:
    """One class's Δ (cell mean - baseline mean) with its 95% interval, test, p before and after
    Holm across the cell's classes, and verdict (analysis.stats.verdict)."""

    name: str
    delta: float
    low: float
    high: float
    test: str
    p: float
    p_holm: float
    verdict: str


@dataclass(frozen=True)
class CellClasses:
    """A cell's per-class Δs, in class order, with what its losses distil (channel-wise, spatial)."""

    label: str
    distils: str | None
    deltas: tuple[ClassDelta, ...]

    def named(self, verdict: str) -> list[str]:
        return [d.name for d in self.deltas if d.verdict == verdict]


@dataclass(frozen=True)
class PerClass:
    """One measure (``IoU``, ``Acc``, ``AP``) per class: the classes (those some complete run has),
    one row per teacher, student baseline and cell, and each cell's Δs."""

    measure: str
    classes: tuple[str, ...]
    rows: tuple[ClassRow, ...]
    cells: tuple[CellClasses, ...]


def _parsed(text) -> dict | None:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return value if isinstance(value, dict) and isinstance(value.get("classes"), list) else None


def _run_values(frame: pd.DataFrame, measures: tuple[str, ...]) -> tuple[list[str], dict[str, tuple]]:
    """The classes in order of first appearance, and run name -> (its seed key, {measure: {class:
    value}}) for every complete run that recorded per-class values; a class a run lacks a measure
    of is left out of that run."""
    classes: dict[str, None] = {}
    runs: dict[str, tuple] = {}
    done = frame[frame["status"] == "complete"]
    for index, (name, seed, text) in enumerate(zip(done["name"], done["seed"], done[PER_CLASS])):
        record = _parsed(text)
        if record is None:
            continue
        lists = [record.get(m) if isinstance(record.get(m), list) else [] for m in measures]
        values: dict[str, dict] = {m: {} for m in measures}
        for position, label in enumerate(record["classes"]):
            found = [v[position] if position < len(v) else None for v in lists]
            if all(fmt.is_number(v) for v in found):
                classes.setdefault(str(label), None)
                for measure, value in zip(measures, found):
                    values[measure][str(label)] = float(value)
        runs[str(name)] = (int(seed) if fmt.is_number(seed) else f"row {index}", values)
    return list(classes), runs


def _seeds(group: Group | None, runs: dict, measure: str, name: str) -> dict:
    """{seed: value} of one class over a group's complete runs that have it."""
    if group is None:
        return {}
    found = (runs.get(run) for run in group.run_names)
    return {seed: values[measure][name] for seed, values in (f for f in found if f) if name in values[measure]}


def _row(label: str, kind: str, group: Group, classes, runs, measure: str, metric: str) -> ClassRow:
    seeds = [_seeds(group, runs, measure, name) for name in classes]
    means = tuple(float(np.mean(list(s.values()))) if s else math.nan for s in seeds)
    return ClassRow(label, kind, means, tuple(len(s) for s in seeds), group.metrics[metric].mean)


def _cell_classes(cell: CellRecord, classes, runs, measure: str) -> CellClasses:
    sides = [_seeds(cell.group, runs, measure, name) for name in classes]
    against = [_seeds(cell.baseline, runs, measure, name) for name in classes]
    found = significance.compare_all(sides, against)
    adjusted = significance.holm([c.p for c in found])
    deltas = tuple(ClassDelta(name, c.delta, c.low, c.high, c.test, c.p, p, significance.verdict(c, p))
                   for name, c, p in zip(classes, found, adjusted))
    return CellClasses(tables.setting(cell), cell.group.facts.distils, deltas)


def results(frame: pd.DataFrame, task: str, metric: str, teachers: tuple[Group, ...], baselines: tuple[Group, ...],
            cells: tuple[CellRecord, ...]) -> tuple[PerClass, ...]:
    """One ``PerClass`` per measure of ``task``; () where no complete run recorded per-class values."""
    if PER_CLASS not in frame:
        return ()
    measures = MEASURES.get(task, ())
    classes, runs = _run_values(frame, measures)
    if not classes:
        return ()
    found = []
    for measure in measures:
        rows = [_row(tables.group_label(kind, group.run_names[0], len(groups)), kind, group, classes, runs, measure,
                     metric)
                for kind, groups in (("teacher", teachers), ("student", baselines)) for group in groups]
        rows += [_row(tables.setting(cell), "cell", cell.group, classes, runs, measure, metric) for cell in cells]
        found.append(PerClass(measure, tuple(classes), tuple(rows),
                              tuple(_cell_classes(cell, classes, runs, measure) for cell in cells)))
    return tuple(found)


# -- the report's tables --------------------------------------------------------------------------
@dataclass(frozen=True)
class PlainTable:
    """A table as text alone, for a writer other than the report's templates (LaTeX)."""

    caption: str
    columns: list[str]
    rows: list[list[str]]


def plain(table: tables.Table) -> PlainTable:
    """A report table as (caption, columns, rows) of text."""
    return PlainTable(table.caption, list(table.header), [[cell.text for cell in row] for row in table.rows])


def shown_classes(found: PerClass, task: str) -> list[int]:
    """The classes a report table shows (their positions): every one, or for detection the
    ``SHOWN`` ones with the largest |Δ| of any cell, in class order."""
    limit = SHOWN.get(task)
    everything = list(range(len(found.classes)))
    if limit is None or len(everything) <= limit:
        return everything
    largest = [max((abs(c.deltas[i].delta) for c in found.cells if fmt.is_number(c.deltas[i].delta)), default=-1.0)
               for i in everything]
    return sorted(sorted(everything, key=lambda i: -largest[i])[:limit])


def _classes(count: int) -> str:
    return f"{count} class" if count == 1 else f"{count} classes"


def _left_out(found: PerClass, kept: list[int]) -> str:
    rest = len(found.classes) - len(kept)
    return (f" The {_classes(len(kept))} with the largest |Δ| of any cell are shown; the other "
            f"{rest} are in kdbench report --json (per_class)." if rest else "")


def table3(found: PerClass, task: str, metric: str) -> tables.Table:
    """The paper's Table 3 layout: one row per teacher, student baseline and cell, one column per
    class (its mean over seeds), the primary metric last; the best distilled cell of a column bold."""
    kept = shown_classes(found, task)
    name = fmt.metric_label(metric)
    table = tables.Table(f"per_class_{found.measure}", f"Per-class {found.measure} (the paper's Table 3 layout)",
                         ["Runs of"] + [found.classes[i] for i in kept] + [name],
                         caption=f"{found.measure} per class in percent, mean over the seeds whose complete run has "
                                 f"the class (a class missing from the split's ground truth has no value); {name}: the "
                                 f"mean over seeds as in the tables above; {tables.BEST_CAPTION}."
                                 + _left_out(found, kept))
    for row in found.rows:
        ranked = row.kind == "cell"
        table.rows.append([tables.Cell(row.label)] + [
            tables.Cell(fmt.number(row.means[i]), score=row.means[i] if ranked else math.nan) for i in kept]
            + [tables.Cell(fmt.number(row.primary), score=row.primary if ranked else math.nan)])
    return tables.mark_best(table)


def _entry(delta: ClassDelta) -> str:
    if not fmt.is_number(delta.delta):
        return fmt.MISSING
    if not delta.test:
        return f"{fmt.signed(delta.delta)} (no interval: n = 1)"
    return (f"{fmt.signed(delta.delta)} {fmt.interval(delta.low, delta.high, sign=True)} "
            f"{VERDICT_MARKS.get(delta.verdict, delta.verdict)}")


def cell_sentence(cell: CellClasses) -> str:
    """``cwd_logits: gains on trouser, bag; a loss on sneaker; 2 classes within noise.``"""
    gains, losses = cell.named(significance.GAIN), cell.named(significance.LOSS)
    noise = len(cell.named(significance.NOISE))
    if not gains and not losses and not noise:
        return f"{cell.label}: no class tested (a single run on a side, or none)."
    parts = [f"{'a gain' if len(gains) == 1 else 'gains'} on {', '.join(gains)}" if gains else "no class gains",
             f"{'a loss' if len(losses) == 1 else 'losses'} on {', '.join(losses)}" if losses else "no class loses"]
    if noise:
        parts.append(f"{_classes(noise)} within noise")
    untested = len(cell.deltas) - len(gains) - len(losses) - noise
    if untested:
        parts.append(f"{_classes(untested)} without a test (a single run on a side, or none)")
    return f"{cell.label}: {'; '.join(parts)}."


def delta_table(found: PerClass, task: str) -> tables.Table:
    """Per class (rows), each cell's Δ vs its student baseline (columns) with its 95% interval and
    verdict, Holm-corrected across the cell's classes; the caption names the classes that gain and
    lose."""
    kept = shown_classes(found, task)
    table = tables.Table(f"per_class_{found.measure}_delta", f"Per-class Δ {found.measure} vs the student baseline",
                         ["Class"] + [cell.label for cell in found.cells])
    for i in kept:
        table.rows.append([tables.Cell(found.classes[i])]
                          + [tables.Cell(_entry(cell.deltas[i])) for cell in found.cells])
    table.caption = (f"Δ = the cell's mean {found.measure} minus its student baseline's, with its 95% interval (paired "
                     "by seed or Welch, as above); verdict: gain or loss when the p-value, Holm-corrected across the "
                     f"cell's {_classes(len(found.classes))}, is below {significance.ALPHA:g}, within "
                     "noise otherwise. " + " ".join(cell_sentence(cell) for cell in found.cells)
                     + _left_out(found, kept))
    return table


def report_tables(per_class: tuple[PerClass, ...], task: str, metric: str) -> list[tables.Table]:
    """The report's per-class tables: the Table 3 layout and the Δ table of the first measure (IoU,
    AP); every measure is in ``json_ready``."""
    if not per_class:
        return []
    first = per_class[0]
    return [table3(first, task, metric)] + ([delta_table(first, task)] if first.cells else [])


NO_PER_CLASS = ("No per-class table: no complete run recorded per-class values (results written before they were "
                "recorded, or a metric without them).")


# -- kdbench report --json ------------------------------------------------------------------------
def _number(value):
    return float(value) if fmt.is_number(value) else None


def json_ready(per_class: tuple[PerClass, ...]) -> list[dict]:
    """Every measure, class, row and cell Δ, unrounded; NaN as None."""
    return [{
        "measure": found.measure, "classes": list(found.classes),
        "correction": "holm across the classes of a cell",
        "rows": [{"name": row.label, "kind": row.kind, "means": [_number(v) for v in row.means],
                  "runs": list(row.runs)} for row in found.rows],
        "cells": [{"name": cell.label, "distils": cell.distils, "deltas": [{
            "class": d.name, "delta": _number(d.delta),
            "delta_ci95": [_number(d.low), _number(d.high)] if d.test else None, "test": d.test or None,
            "p": _number(d.p), "p_holm": _number(d.p_holm), "verdict": d.verdict} for d in cell.deltas]}
            for cell in found.cells],
    } for found in per_class]
