"""Chance levels: what a constant predictor scores on each metric, and the cells within a few
points of it.

A segmentation run records its split's chance levels with its metrics (runners.metrics:
``val/chance_mIoU``, ``val/chance_mAcc``, ``val/chance_aAcc``: the best constant predictor, from
the ground truth's class areas). Runs recorded before that have only ``val/classes_evaluated``,
which still gives mAcc's (100 / classes). For box AP the chance level is taken as 0: boxes that
move from image to image are matched by no constant prediction. A teacher, student baseline or
cell whose mean is less than ``NEAR_CHANCE`` points above its chance level is flagged: collapsing
to exactly one class is only the extreme case of a model that has learnt little beyond the class
frequencies.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from analysis import aggregate, tables
from analysis import format as fmt
from analysis.collect import axis_path

NEAR_CHANCE = 3.0  # metric points (percent) above the chance level within which a mean is flagged
LABEL = "chance (a constant predictor)"
MAX_WARNINGS = 20  # a grid of thousands of near-chance cells gets this many lines and a count of the rest


def chance_column(metric: str) -> str:
    """Where a run records a metric's chance level: ``val/mIoU`` -> ``val/chance_mIoU``."""
    prefix, _, name = metric.rpartition("/")
    return f"{prefix}/chance_{name}" if prefix else f"chance_{name}"


def run_chance(frame: pd.DataFrame, metric: str) -> np.ndarray:
    """Each row's chance level of ``metric`` (NaN where it is not known)."""
    recorded = chance_column(metric)
    values = (pd.to_numeric(frame[recorded], errors="coerce").to_numpy(dtype=float) if recorded in frame
              else np.full(len(frame), np.nan))
    if metric.endswith("/mAcc") and aggregate.CLASSES_EVALUATED in frame:  # older runs: 100 / classes
        classes = pd.to_numeric(frame[aggregate.CLASSES_EVALUATED], errors="coerce").to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(np.isnan(values) & (classes > 0), 100.0 / classes, values)
    if metric.split("/")[-1].startswith("bbox_"):
        values = np.where(np.isnan(values), 0.0, values)
    return values


def mean_level(frame: pd.DataFrame, metric: str) -> float:
    """The mean chance level of ``metric`` over the complete runs (NaN where none is known)."""
    if metric not in frame:
        return np.nan
    values = run_chance(frame, metric)[aggregate.usable(frame, metric).to_numpy()]
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else np.nan


def levels(frame: pd.DataFrame, metrics: list[str]) -> dict[str, str]:
    """metric -> its chance level as the report shows it, over the complete runs: one number, or a
    range where runs were evaluated on different splits; the missing mark where none is known."""
    shown = {}
    for metric in metrics:
        if metric not in frame:
            shown[metric] = fmt.MISSING
            continue
        values = run_chance(frame, metric)[aggregate.usable(frame, metric).to_numpy()]
        values = values[np.isfinite(values)]
        low, high = (values.min(), values.max()) if values.size else (np.nan, np.nan)
        same = values.size and fmt.number(low) == fmt.number(high)
        shown[metric] = fmt.number(low) if same or not values.size else f"{fmt.number(low)} to {fmt.number(high)}"
    return shown


def with_chance_row(table: tables.Table, metrics: list[str], shown: dict[str, str]) -> tables.Table:
    """The cells table with a first row giving each metric's chance level under that metric's
    column (found by its label), and a caption sentence saying what it is."""
    labels = {fmt.metric_label(m): shown.get(m, fmt.MISSING) for m in metrics}
    if all(text == fmt.MISSING for text in labels.values()):
        return table
    row = [tables.Cell(LABEL)] + [tables.Cell(labels.get(h, "")) for h in table.header[1:]]
    table.rows.insert(0, row)
    table.caption = (f"{table.caption} Chance: what the best constant predictor scores on the validation split "
                     f"(one class everywhere; for box AP taken as 0); a mean less than {fmt.number(NEAR_CHANCE, 0)} "
                     "points above it is flagged beside the CWD verdict.").strip()
    return table


GROUPS = (("teacher", ("teacher_key",), "the teacher"), ("student_baseline", ("baseline_key",), "the student baseline"),
          ("cell", None, None))  # kind, the columns its groups are told apart by (cells: their axes), who


def _who(first: dict, whose: str | None, axes: list[str], groups: int) -> str:
    """How a warning names a group from its first row: a cell by its setting, the teacher or the
    student baseline as such (with its run name where a study has several)."""
    if whose is None:
        return tables.label(first["method"], {axis_path(a): first[a] for a in axes})
    name = re.sub(r"_s\d+$", "", str(first["name"])).removeprefix("teacher_").removeprefix("student_")
    return whose if groups < 2 else f"{whose} ({name})"


def near_chance_warnings(frame: pd.DataFrame, metrics: list[str], margin: float = NEAR_CHANCE) -> list[str]:
    """One warning per teacher, student baseline or cell whose mean on some metric is less than
    ``margin`` points above that metric's chance level (or below it), naming each such metric with
    the mean, the chance level and the gap. The means are taken for every group at once (one pass
    per metric); only the flagged groups are looked at one by one."""
    axes = [a for a in aggregate.axes_of(frame) if a != "method"]
    warnings = []
    for kind, keys, whose in GROUPS:
        part = frame[frame["kind"] == kind]
        if not len(part):
            continue
        keys = list(keys or ["method", *axes, "baseline_key", "teacher_key"])
        codes = part.groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
        count = int(codes.max()) + 1
        found: dict[int, list[str]] = {}
        for metric in [m for m in metrics if m in part]:
            values = pd.to_numeric(part[metric], errors="coerce").to_numpy(dtype=float)
            levels_ = run_chance(part, metric)
            usable = aggregate.usable(part, metric).to_numpy()
            known = usable & np.isfinite(levels_)
            n = np.bincount(codes[known], minlength=count)
            with np.errstate(divide="ignore", invalid="ignore"):
                gap = (np.bincount(codes[known], weights=values[known], minlength=count)
                       - np.bincount(codes[known], weights=levels_[known], minlength=count)) / n
            for group in np.flatnonzero((n > 0) & (gap < margin)):
                mine = known & (codes == group)
                mean, std, runs = aggregate.stats(values[mine])
                found.setdefault(int(group), []).append(
                    f"{fmt.metric_label(metric)} {fmt.mean_std(mean, std, runs)} vs chance "
                    f"{fmt.number(levels_[mine].mean())} ({fmt.signed(gap[group])} points)")
        for group in sorted(found):
            first = part.iloc[int(np.flatnonzero(codes == group)[0])].to_dict()
            warnings.append(f"warning: {_who(first, whose, axes, count)} is within {fmt.number(margin, 0)} points "
                            f"of chance (what a constant predictor scores): {'; '.join(found[group])}.")
    if len(warnings) > MAX_WARNINGS:
        rest = len(warnings) - MAX_WARNINGS
        warnings = warnings[:MAX_WARNINGS] + [
            f"warning: {rest} more (teachers, student baselines or cells) within {fmt.number(margin, 0)} points of "
            "chance; every mean is in the All cells table, beside the chance row."]
    return warnings
