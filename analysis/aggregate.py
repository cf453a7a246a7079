"""Seeds aggregated into groups and cells (analysis.records): mean, sample std (ddof 1), n and the
95% interval per metric, Δ against the student baseline with its test and verdict (analysis.stats),
the teacher's metric, the share of the teacher-student gap closed, and the equal-budget comparisons.

Only complete runs with a finite metric enter a mean; every other run is counted by state
(``failed``, ``diverged``, ...) in the group it belongs to, never averaged in. This is the one
module that reads the run frame's metric, cost and recipe columns (analysis.collect) into numbers.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd

from analysis import stats as significance
from analysis.collect import AXIS, COST, COST_KEYS, EQUAL_BUDGET, RECIPE, RECIPE_KEYS, axis_path
from analysis.format import is_number as fmt_number
from analysis.records import (
    NOTHING,
    TWIN_VS_STUDENT,
    VS_EQUAL_BUDGET,
    VS_STUDENT,
    CellRecord,
    Delta,
    Family,
    GapShare,
    Group,
    RunFacts,
    Twin,
    measured,
)
from kdbench import vocab

SECONDARY = {"seg": ("val/mAcc", "val/aAcc"),
             "det": ("val/bbox_mAP_50", "val/bbox_mAP_75", "val/bbox_mAP_s", "val/bbox_mAP_m", "val/bbox_mAP_l")}
COSTS = (*(key for key in COST_KEYS if key != "peak_memory_kind"), "train_seconds")  # numeric: averaged
PROBLEM_STATES = vocab.NOT_COMPLETE
CLASSES_EVALUATED = "val/classes_evaluated"
COLLAPSE_TOLERANCE = 1e-3  # mAcc points: how close to 100 / classes a run must be to count as constant
FACTS = ("dataset", "teacher_config", "student_config", "location", "location_kind", "kd_method", "distils")


def task_of(frame: pd.DataFrame) -> str:
    tasks = frame["task"].dropna()
    return str(tasks.iloc[0]) if len(tasks) else "seg"


def primary_metric(frame: pd.DataFrame) -> str:
    return vocab.primary_metric(task_of(frame))


def metrics_of(frame: pd.DataFrame) -> list[str]:
    """The primary metric, then the secondary ones the runs wrote."""
    task = task_of(frame)
    return [vocab.primary_metric(task)] + [m for m in SECONDARY.get(task, ()) if m in frame.columns]


def axes_of(frame: pd.DataFrame) -> list[str]:
    """The grid axes a cell is identified by (seeds excluded): ``method`` and ``axis:*`` columns."""
    cells = frame[frame["kind"] == "cell"]
    return ["method"] + [c for c in frame.columns if c.startswith(AXIS) and cells[c].notna().any()]


def stats(values) -> tuple[float, float, int]:
    """Mean, sample std (NaN for one value) and n of the finite values; NaN and Inf are dropped."""
    array = np.asarray([v for v in values if v is not None], dtype=float)
    array = array[np.isfinite(array)]
    n = int(array.size)
    if n == 0:
        return math.nan, math.nan, 0
    return float(array.mean()), float(array.std(ddof=1)) if n > 1 else math.nan, n


def usable(frame: pd.DataFrame, metric: str) -> pd.Series:
    return (frame["status"] == "complete") & np.isfinite(pd.to_numeric(frame[metric], errors="coerce"))


def collapsed(frame: pd.DataFrame) -> np.ndarray:
    """Complete segmentation runs that predict one class everywhere: their mAcc (per-class accuracy
    averaged over the classes evaluated) is 100 / classes_evaluated, within ``COLLAPSE_TOLERANCE``.
    A constant predictor scores 100 on its one class and 0 on every other. Runs that did not record
    ``val/classes_evaluated`` (or mAcc), and detection runs, are never flagged."""
    flagged = np.zeros(len(frame), dtype=bool)
    if task_of(frame) != "seg" or "val/mAcc" not in frame or CLASSES_EVALUATED not in frame:
        return flagged
    macc = pd.to_numeric(frame["val/mAcc"], errors="coerce").to_numpy(dtype=float)
    classes = pd.to_numeric(frame[CLASSES_EVALUATED], errors="coerce").to_numpy(dtype=float)
    ok = (frame["status"] == "complete").to_numpy() & np.isfinite(macc) & np.isfinite(classes) & (classes > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        flagged[ok] = np.abs(macc[ok] - 100.0 / classes[ok]) <= COLLAPSE_TOLERANCE
    return flagged


class _Grouping:
    """The rows of ``frame`` grouped by ``keys`` (in order of first appearance; a missing key is
    NaN), and what each group's runs give: computed on arrays, one pass per column."""

    def __init__(self, frame: pd.DataFrame, keys: list[str]):
        self.frame = frame
        codes = frame.groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
        order = np.argsort(codes, kind="stable")
        self.codes = codes
        self.groups = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)  # row positions, in frame order
        self.count = len(self.groups)
        firsts = np.array([group[0] for group in self.groups])
        self.keys = list(zip(*([math.nan if pd.isna(v) else v for v in frame[key].to_numpy(dtype=object)[firsts]]
                               for key in keys)))
        self.complete = frame["status"].to_numpy(dtype=object) == "complete"

    def counts(self, rows: np.ndarray) -> list[int]:
        return [int(n) for n in np.bincount(self.codes[rows], minlength=self.count)]

    def summaries(self, column: str, interval: bool) -> list[significance.Interval]:
        """Mean, std and n of ``column`` over each group's complete runs with a finite value, and
        with ``interval`` the mean's 95% interval (NaN bounds without)."""
        values = pd.to_numeric(self.frame[column], errors="coerce").to_numpy(dtype=float)
        rows = self.complete & np.isfinite(values)
        found = [stats(values[group[rows[group]]]) for group in self.groups]
        mean = np.array([f[0] for f in found], dtype=float)
        half = significance.half_widths([f[1] for f in found], [f[2] for f in found]) if interval else \
            np.full(self.count, math.nan)
        low, high = mean - half, mean + half
        return [significance.Interval(m, s, n, float(lo), float(hi))
                for (m, s, n), lo, hi in zip(found, low, high)]

    def seeds(self, metric: str) -> list[dict]:
        """Each group's {seed: value} of ``metric`` over its complete runs (for the paired test)."""
        values = pd.to_numeric(self.frame[metric], errors="coerce").to_numpy(dtype=float)
        rows = self.complete & np.isfinite(values)
        seeds = self.frame["seed"].to_numpy(dtype=object) if "seed" in self.frame else \
            np.full(len(self.frame), None, dtype=object)
        return [{_seed(seeds[i], i): float(values[i]) for i in group[rows[group]]} for group in self.groups]

    def firsts(self, column: str, keep) -> list:
        """The first value of ``column`` in each group that ``keep`` accepts (None where none does)."""
        if column not in self.frame:
            return [None] * self.count
        values = self.frame[column].to_numpy(dtype=object)
        mask = np.fromiter((keep(v) for v in values), dtype=bool, count=len(values))
        found = [values[group[mask[group]]] for group in self.groups]
        return [f[0] if len(f) else None for f in found]


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _groups(frame: pd.DataFrame, keys: list[str], metrics: list[str], kind: str) -> list[tuple[tuple, Group]]:
    """(key values, Group) per group of ``keys`` of ``frame``'s rows (analysis.records.Group)."""
    if not len(frame):
        return []
    by = _Grouping(frame, keys)
    status = frame["status"].to_numpy(dtype=object)
    states = {state: by.counts(status == state) for state in ("complete", *PROBLEM_STATES)}
    partial = frame["data_complete"].astype("boolean").eq(False).fillna(False).to_numpy(dtype=bool) if (
        "data_complete" in frame) else np.zeros(len(frame), dtype=bool)
    collapses, partials = by.counts(collapsed(frame)), by.counts(by.complete & partial)
    written = [metric for metric in metrics if metric in frame]  # a metric no run wrote: no value anywhere
    values = {metric: by.summaries(metric, True) if metric in written else [NOTHING] * by.count for metric in metrics}
    seeds = {metric: by.seeds(metric) if metric in written else [{} for _ in by.groups] for metric in metrics}
    costs = {key: by.summaries(COST + key, False) if COST + key in frame else None for key in COSTS}
    memory = by.firsts(COST + "peak_memory_kind", lambda v: isinstance(v, str))
    recipe = {key: by.firsts(RECIPE + key, _present) for key in RECIPE_KEYS}  # the first complete run's card
    facts = {name: by.firsts(name, lambda v: not pd.isna(v)) for name in FACTS}
    names = frame["name"].to_numpy(dtype=object)
    return [(by.keys[i], Group(
        kind=kind, run_names=tuple(names[group]), planned=len(group),
        states={state: counts[i] for state, counts in states.items()}, collapsed=collapses[i],
        partial_data=partials[i], metrics={m: values[m][i] for m in metrics}, seeds={m: seeds[m][i] for m in metrics},
        costs={key: None if found is None else found[i] for key, found in costs.items()}, memory_kind=memory[i],
        recipe={key: found[i] for key, found in recipe.items()},
        facts=RunFacts(**{name: found[i] for name, found in facts.items()})))
        for i, group in enumerate(by.groups)]


def _seed(seed, row: int):
    """A run's seed as the key its value is paired by; a run without one pairs with nothing."""
    return int(seed) if fmt_number(seed) else f"row {row}"


def _keyed(frame: pd.DataFrame, kind: str, key: str, metrics: list[str]) -> dict:
    """key -> Group of the rows of one kind (teacher, student_baseline), by their teacher or baseline key."""
    return {values[0]: group for values, group in _groups(frame[frame["kind"] == kind], [key], metrics, kind)}


def _equal_budget(frame: pd.DataFrame) -> pd.Series:
    """The equal-budget baselines' rows: the twins, and a student baseline that is its own twin
    (analysis.collect's ``equal_budget`` column; a frame without it, its twins)."""
    if EQUAL_BUDGET in frame:
        return frame[EQUAL_BUDGET].astype(bool)
    return frame["kind"] == vocab.Kind.STUDENT_BUDGET


def _tested(family: str, metric: str, deltas: list[float], sides: list[dict], against: list[dict]) -> list[Delta]:
    """Each side's Δ (``deltas``: its mean minus its reference's) tested against its reference's
    {seed: value} (analysis.stats: paired or Welch), Holm over the family, verdicts and seeds needed."""
    found = significance.compare_all(sides, against)
    adjusted = significance.holm([c.p for c in found])
    needed = significance.seeds_needed_all(found)
    return [Delta(family, metric, float(delta), c.low, c.high, c.test, c.df, c.p, p, significance.verdict(c, p),
                   c.spread, c.n, need) for delta, c, p, need in zip(deltas, found, adjusted, needed)]


def _ratios(tops: list[float], bottoms: list[float]) -> list[float]:
    """tops / bottoms, element by element, as floats (inf over 0, NaN where one is missing)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return [float(r) for r in np.asarray(tops, dtype=float) / np.asarray(bottoms, dtype=float)]


def _cost_mean(group: Group | None, key: str) -> float:
    found = None if group is None else group.costs[key]
    return math.nan if found is None else found.mean


def twins(frame: pd.DataFrame, metrics: list[str], baselines: dict) -> dict[str, Twin]:
    """Baseline key -> its equal-budget student baseline (over its seeds; a student baseline whose
    budget came out at its own iterations stands for its seed), with its extra cost (its mean
    training seconds over its student baseline's) and its Δ against that baseline on the primary
    metric (a family of its own for Holm)."""
    found = _groups(frame[_equal_budget(frame)], ["baseline_key"], metrics, vocab.Kind.STUDENT_BUDGET)
    metric = metrics[0]
    bases = [baselines.get(key[0]) for key, _ in found]
    deltas = [group.metrics[metric].mean - measured(base, metric).mean for (_, group), base in zip(found, bases)]
    tests = _tested(TWIN_VS_STUDENT, metric, deltas, [group.seeds[metric] for _, group in found],
                    [{} if base is None else base.seeds[metric] for base in bases])
    extra = _ratios([_cost_mean(group, "train_seconds") for _, group in found],
                    [_cost_mean(base, "train_seconds") for base in bases])
    return {key[0]: Twin(group, base, cost, test)
            for (key, group), base, cost, test in zip(found, bases, extra, tests)}


def _gaps(metric: str, cells: list[Group], bases: list, teachers: list, tests: list[Delta]) -> list[GapShare]:
    """How far each cell closes its teacher-student gap on ``metric`` (analysis.stats.gap_shares:
    Δ / (teacher mean - baseline mean), the teacher taken as fixed; NaN without a gap to close)."""
    teacher = np.array([measured(t, metric).mean for t in teachers], dtype=float)
    baseline = np.array([measured(b, metric).mean for b in bases], dtype=float)
    share, low, high = significance.gap_shares([t.delta for t in tests], [t.low for t in tests],
                                               [t.high for t in tests], teacher, baseline)
    gap = teacher - baseline
    return [GapShare(metric, float(g), float(s), float(lo), float(hi)) for g, s, lo, hi in zip(gap, share, low, high)]


def cells(frame: pd.DataFrame, metrics: list[str], baselines: dict, teachers: dict,
          equal: dict[str, Twin]) -> list[CellRecord]:
    """One record per cell (analysis.records.CellRecord): its runs' statistics, its student
    baseline and teacher, its Δ on each metric tested against the baseline (a family per metric
    for Holm), the gap share on each, the slowdown, and with equal budgets (``equal``) its Δ on the
    primary metric against the equal-budget student (a family apart) and its extra cost."""
    part = frame[frame["kind"] == "cell"]
    axes = axes_of(frame)
    found = _groups(part, axes + ["baseline_key", "teacher_key"], metrics, "cell")
    if not found:
        return []
    metric = metrics[0]
    groups = [group for _, group in found]
    bases = [baselines.get(key[-2]) for key, _ in found]
    teach = [teachers.get(key[-1]) for key, _ in found]
    tests, gaps = [[] for _ in groups], [[] for _ in groups]
    for each in metrics:  # every metric the runs record, each its own family for Holm
        deltas = [group.metrics[each].mean - measured(base, each).mean for group, base in zip(groups, bases)]
        tested = _tested(VS_STUDENT, each, deltas, [g.seeds[each] for g in groups],
                         [{} if base is None else base.seeds[each] for base in bases])
        for mine, mine_gaps, test, gap in zip(tests, gaps, tested, _gaps(each, groups, bases, teach, tested)):
            mine.append(test)
            mine_gaps.append(gap)
    slowdown = _ratios([_cost_mean(g, "seconds_per_iter") for g in groups],
                       [_cost_mean(b, "seconds_per_iter") for b in bases])
    extra = [math.nan] * len(groups)
    if equal:
        twin_of = [equal.get(key[-2]) for key, _ in found]
        against = [NOTHING if t is None else t.group.metrics[metric] for t in twin_of]
        seeds = [{} if t is None else t.group.seeds[metric] for t in twin_of]
        budget = _tested(VS_EQUAL_BUDGET, metric, [g.metrics[metric].mean - a.mean for g, a in zip(groups, against)],
                         [g.seeds[metric] for g in groups], seeds)
        tests = [mine + [other] for mine, other in zip(tests, budget)]
        extra = _ratios([_cost_mean(g, "train_seconds") for g in groups],
                        [_cost_mean(b, "train_seconds") for b in bases])
    return [CellRecord(method=key[0], axes={axis_path(a): v for a, v in zip(axes[1:], key[1:-2]) if not _absent(v)},
                       group=group,
                       baseline=base, teacher=teacher, tests=tuple(tested), gaps=tuple(gap), slowdown=slow,
                       extra_cost=cost)
            for (key, group), base, teacher, tested, gap, slow, cost
            in zip(found, bases, teach, tests, gaps, slowdown, extra)]


def _absent(value) -> bool:
    """An axis a cell does not have: another method's own axis (``methods.<name>.grid``)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def families(metrics: list[str], cell_records: list[CellRecord], equal: list[Twin]) -> list[Family]:
    """The families Holm's correction ran over, with how many comparisons had a test: the cells
    against their student baseline on each metric (a family per metric), and with equal budgets
    the primary metric's comparisons against the equal-budget student."""
    metric = metrics[0]
    def tested(found: list[Delta]) -> int:
        return sum(1 for t in found if math.isfinite(t.p))

    found = [Family(VS_STUDENT, each, tested([c.test(VS_STUDENT, each) for c in cell_records])) for each in metrics]
    if equal:
        found.append(Family(VS_EQUAL_BUDGET, metric, tested([c.test(VS_EQUAL_BUDGET, metric) for c in cell_records])))
        found.append(Family(TWIN_VS_STUDENT, metric, tested([t.test for t in equal])))
    return found


def groups_of(frame: pd.DataFrame) -> tuple[list[str], dict, dict, dict[str, Twin], list[CellRecord]]:
    """The metrics (primary first), teachers and student baselines (by key), equal-budget students
    and cells of a study's rows (analysis.collect)."""
    metrics = metrics_of(frame)
    teachers = _keyed(frame, "teacher", "teacher_key", metrics)
    baselines = _keyed(frame, "student_baseline", "baseline_key", metrics)
    equal = twins(frame, metrics, baselines) if _equal_budget(frame).any() else {}
    return metrics, teachers, baselines, equal, cells(frame, metrics, baselines, teachers, equal)


def location_kinds(cell_records) -> dict[str, tuple[str, str]]:
    """method -> (method family, ``feature`` or ``logits``), for the paper's Table 2 layout.

    The family is the distillation term's ``method`` (``cwd``, ``pi``, ...) and the kind is what its
    student location is (analysis.collect.location_kind), read from the runs, not from the name.
    Cells with several term methods or on both kinds at once are left out; two cells of one family
    on one kind (say two weights) keep their own names as families.
    """
    placed = {}
    for cell in _first_per_method(cell_records):
        families_ = set(cell.group.facts.term_methods)
        if len(families_) == 1 and cell.group.facts.location_kind in ("feature", "logits"):
            placed[cell.method] = (families_.pop(), cell.group.facts.location_kind)
    counts = Counter(placed.values())
    return {method: (str(method) if counts[where] > 1 else where[0], where[1]) for method, where in placed.items()}


def _first_per_method(cell_records) -> list[CellRecord]:
    first: dict = {}
    for cell in cell_records:
        first.setdefault(cell.method, cell)
    return list(first.values())


def distil_kinds(cell_records) -> dict[str, str | None]:
    """method -> what its terms' losses distil (``channel-wise``, ``spatial``, both joined, or None),
    as analysis.collect.distils read it from the loss declarations, never from the method's name."""
    return {cell.method: cell.group.facts.distils for cell in _first_per_method(cell_records)}


def table2_kinds(cell_records, axes) -> dict[str, tuple[str, str]]:
    """``location_kinds`` where the paper's Table 2 layout applies (the cells differ by method alone
    and span two or more method families; with one family the location table says it), else {}.
    Table 2 and its bar figure both ask here."""
    if not cell_records or axes:
        return {}
    kinds = location_kinds(cell_records)
    return kinds if len({family for family, _ in kinds.values()}) >= 2 else {}


def cwd_verdicts(cell_records, metric: str) -> list[dict]:
    """For each CWD cell (every term ``method: cwd``, see ``CellRecord.is_cwd``; the cell's name is
    not looked at): the cell, its gap to the baseline's mean, whether it is positive, and the verdict
    of its test (gain, within noise, loss, or no interval)."""
    verdicts = []
    for cell in cell_records:
        if not cell.is_cwd:
            continue
        gap = cell.delta(metric)
        verdicts.append({"cell": cell, "gap": gap, "beat": bool(np.isfinite(gap) and gap > 0),
                         "verdict": cell.test(VS_STUDENT, metric).verdict, "comparable": bool(np.isfinite(gap))})
    return verdicts
