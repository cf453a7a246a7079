"""Seeds aggregated into cells: mean, sample std (ddof 1), n and the 95% interval per cell, Δ
against the student baseline with its test and verdict (analysis.stats), the teacher's metric,
and published reference numbers.

Only complete runs with a finite metric enter a mean; every other run is counted by state
(``failed``, ``diverged``, ...) in the cell it belongs to, never averaged in.
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import stats as significance
from analysis.collect import COST_KEYS, EQUAL_BUDGET, TRAIN_SECONDS, primary_metric_of
from analysis.format import is_number as fmt_number
from kdbench.study import read_reference

SECONDARY = {"seg": ("val/mAcc", "val/aAcc"), "det": ("val/bbox_mAP_50", "val/bbox_mAP_75")}
COSTS = (*(f"cost:{key}" for key in COST_KEYS if key != "peak_memory_kind"), TRAIN_SECONDS)  # numeric: averaged
BUDGET_KIND = "student_budget"  # an equal-budget twin of a student baseline (kdbench.budget)
PROBLEM_STATES = ("failed", "diverged", "kd_inactive", "corrupt", "blocked", "interrupted", "running", "missing")
CLASSES_EVALUATED = "val/classes_evaluated"
COLLAPSE_TOLERANCE = 1e-3  # mAcc points: how close to 100 / classes a run must be to count as constant


def task_of(frame: pd.DataFrame) -> str:
    tasks = frame["task"].dropna()
    return str(tasks.iloc[0]) if len(tasks) else "seg"


def primary_metric(frame: pd.DataFrame) -> str:
    return primary_metric_of(task_of(frame))


def metrics_of(frame: pd.DataFrame) -> list[str]:
    """The primary metric, then the secondary ones the runs wrote."""
    task = task_of(frame)
    return [primary_metric_of(task)] + [m for m in SECONDARY.get(task, ()) if m in frame.columns]


def axes_of(frame: pd.DataFrame) -> list[str]:
    """The grid axes a cell is identified by (seeds excluded): ``method`` and ``axis:*`` columns."""
    cells = frame[frame["kind"] == "cell"]
    return ["method"] + [c for c in frame.columns if c.startswith("axis:") and cells[c].notna().any()]


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


def _grouped(frame: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per group of ``keys`` (in order of first appearance; a missing key is NaN): ``planned``,
    a count per state, ``collapsed`` (complete runs that predict one class everywhere, see
    ``collapsed``), ``partial_data`` (complete runs on a partial dataset split),
    ``<metric>|mean|std|n|low|high|seeds`` over the complete runs with a finite metric (low, high:
    the mean's 95% interval; seeds: {seed: value}), ``<cost>|mean|std|n`` for the costs, the first
    ``memory_kind``, ``location``, ``location_kind``, ``kd_method``, ``distils``, ``dataset``,
    ``teacher_config`` and ``student_config`` found, and ``run_names``. Computed on
    arrays, one pass per column."""
    if not len(frame):
        return pd.DataFrame()
    codes = frame.groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)  # row positions, in frame order
    count = len(groups)
    firsts = np.array([group[0] for group in groups])
    table: dict[str, object] = {}
    for key in keys:
        table[key] = [math.nan if pd.isna(v) else v for v in frame[key].to_numpy(dtype=object)[firsts]]
    table["planned"] = [len(group) for group in groups]
    status = frame["status"].to_numpy(dtype=object)
    complete = status == "complete"
    for state in ("complete", *PROBLEM_STATES):
        table[state] = np.bincount(codes[status == state], minlength=count)
    table["collapsed"] = np.bincount(codes[collapsed(frame)], minlength=count)
    partial = frame["data_complete"].astype("boolean").eq(False).fillna(False).to_numpy(dtype=bool) if (
        "data_complete" in frame) else np.zeros(len(frame), dtype=bool)
    table["partial_data"] = np.bincount(codes[complete & partial], minlength=count)

    def summarise(column: str, rows: np.ndarray) -> None:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        rows = rows & np.isfinite(values)
        found = [stats(values[group[rows[group]]]) for group in groups]
        table[f"{column}|mean"], table[f"{column}|std"], table[f"{column}|n"] = (
            [f[i] for f in found] for i in range(3))

    seeds = frame["seed"].to_numpy(dtype=object) if "seed" in frame else np.full(len(frame), None, dtype=object)

    def intervals(metric: str) -> None:
        """The 95% interval of each group's mean (from its mean, std and n), and its values by seed
        (for the paired test)."""
        values = pd.to_numeric(frame[metric], errors="coerce").to_numpy(dtype=float)
        rows = complete & np.isfinite(values)
        mean = np.asarray(table[f"{metric}|mean"], dtype=float)
        half = significance.half_widths(table[f"{metric}|std"], table[f"{metric}|n"])
        table[f"{metric}|low"], table[f"{metric}|high"] = list(mean - half), list(mean + half)
        table[f"{metric}|seeds"] = [{_seed(seeds[i], i): float(values[i]) for i in group[rows[group]]}
                                    for group in groups]

    for metric in metrics:
        if metric in frame:
            summarise(metric, complete)
            intervals(metric)
        else:
            table[f"{metric}|mean"], table[f"{metric}|std"], table[f"{metric}|n"] = (
                [math.nan] * count, [math.nan] * count, [0] * count)
            table[f"{metric}|low"], table[f"{metric}|high"] = [math.nan] * count, [math.nan] * count
            table[f"{metric}|seeds"] = [{} for _ in range(count)]
    for cost in COSTS:
        if cost in frame:
            summarise(cost, complete)

    def first(column: str, keep) -> list:
        if column not in frame:
            return [None] * count
        values = frame[column].to_numpy(dtype=object)
        mask = np.fromiter((keep(v) for v in values), dtype=bool, count=len(values))
        found = [values[group[mask[group]]] for group in groups]
        return [f[0] if len(f) else None for f in found]

    table["memory_kind"] = first("cost:peak_memory_kind", lambda v: isinstance(v, str))
    for column in (c for c in frame.columns if c.startswith("recipe:")):  # the first complete run's card
        table[column] = first(column, lambda v: v is not None and not (isinstance(v, float) and math.isnan(v)))
    for column in ("location", "location_kind", "kd_method", "distils", "dataset", "teacher_config",
                   "student_config"):
        table[column] = first(column, lambda v: not pd.isna(v))
    names = frame["name"].to_numpy(dtype=object)
    table["run_names"] = [list(names[group]) for group in groups]
    return pd.DataFrame(table)


def _seed(seed, row: int):
    """A run's seed as the key its value is paired by; a run without one pairs with nothing."""
    return int(seed) if fmt_number(seed) else f"row {row}"


def baselines(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per student baseline setting (over its seeds)."""
    part = frame[frame["kind"] == "student_baseline"]
    return _grouped(part, ["baseline_key"], metrics_of(frame)) if len(part) else pd.DataFrame()


def budget_baselines(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per equal-budget student baseline setting (over its seeds; a student baseline whose
    budget came out at its own iterations stands for its seed), with ``extra_cost`` (its
    mean training seconds over its student baseline's) and its Δ against that baseline on the
    primary metric (``<metric>|delta``, ``|delta_low``, ``|delta_high``, ``|test``, ``|verdict``;
    a family of its own for Holm)."""
    part = frame[_equal_budget(frame)]
    if not len(part):
        return pd.DataFrame()
    metric = primary_metric(frame)
    table = _grouped(part, ["baseline_key"], metrics_of(frame))
    base = baselines(frame)
    base = base.set_index("baseline_key") if len(base) else pd.DataFrame(columns=[f"{metric}|seeds", TRAIN_SECONDS])
    keys = list(table["baseline_key"])
    seconds = _column(base, f"{TRAIN_SECONDS}|mean", keys, math.nan)
    table["extra_cost"] = np.asarray(table[f"{TRAIN_SECONDS}|mean"], dtype=float) / np.asarray(seconds, dtype=float)
    table[f"baseline|{metric}|mean"] = _column(base, f"{metric}|mean", keys, math.nan)
    table[f"{metric}|delta"] = table[f"{metric}|mean"] - table[f"baseline|{metric}|mean"]
    _tested(table, "", list(table[f"{metric}|seeds"]), _column(base, f"{metric}|seeds", keys, {}), metric)
    return table


def _equal_budget(frame: pd.DataFrame) -> pd.Series:
    """The equal-budget baselines' rows: the twins, and a student baseline that is its own twin
    (analysis.collect's ``equal_budget`` column; a frame without it, its twins)."""
    if EQUAL_BUDGET in frame:
        return frame[EQUAL_BUDGET].astype(bool)
    return frame["kind"] == BUDGET_KIND


def _column(table: pd.DataFrame, column: str, keys: list, missing) -> list:
    """``table[column]`` (indexed by key) for each of ``keys``; ``missing`` where there is none."""
    found = table[column].to_dict() if column in table else {}
    return [found.get(key, missing) for key in keys]


def _tested(table: pd.DataFrame, prefix: str, sides: list[dict], against: list[dict], metric: str) -> None:
    """The Δ of each row's {seed: value} against another's, tested (analysis.stats: paired or
    Welch, Holm over the rows): ``<metric>|<prefix>delta_low``, ``_high``, ``|<prefix>test``,
    ``|<prefix>p_holm`` and ``|<prefix>verdict``."""
    found = significance.compare_all(sides, against)
    adjusted = significance.holm([c.p for c in found])
    table[f"{metric}|{prefix}delta_low"] = [c.low for c in found]
    table[f"{metric}|{prefix}delta_high"] = [c.high for c in found]
    table[f"{metric}|{prefix}test"] = [c.test for c in found]
    table[f"{metric}|{prefix}p_holm"] = adjusted
    table[f"{metric}|{prefix}verdict"] = [significance.verdict(c, p) for c, p in zip(found, adjusted)]


def against_budget(cell_table: pd.DataFrame, frame: pd.DataFrame) -> None:
    """Each cell against its setting's equal-budget baseline too, when the study has them: columns
    ``budget|<metric>|mean|std|n|low|high``, ``<metric>|budget_delta`` and its test (``_tested``,
    prefix ``budget_``: Holm over these comparisons, a family apart from the ordinary one), and
    ``extra_cost``, the cell's mean training seconds over its student baseline's."""
    metric = primary_metric(frame)
    twins = budget_baselines(frame)
    keys = list(cell_table["baseline_key"])
    base = baselines(frame)
    base = base.set_index("baseline_key") if len(base) else pd.DataFrame()
    cell_table["extra_cost"] = np.asarray(cell_table.get(f"{TRAIN_SECONDS}|mean", math.nan), dtype=float) / \
        np.asarray(_column(base, f"{TRAIN_SECONDS}|mean", keys, math.nan), dtype=float)
    if not len(twins):
        return
    twins = twins.set_index("baseline_key")
    for stat in ("mean", "std", "n", "low", "high"):
        cell_table[f"budget|{metric}|{stat}"] = _column(twins, f"{metric}|{stat}", keys, math.nan)
    cell_table[f"{metric}|budget_delta"] = cell_table[f"{metric}|mean"] - cell_table[f"budget|{metric}|mean"]
    _tested(cell_table, "budget_", list(cell_table[f"{metric}|seeds"]), _column(twins, f"{metric}|seeds", keys, {}),
            metric)


def teachers(frame: pd.DataFrame) -> pd.DataFrame:
    part = frame[frame["kind"] == "teacher"]
    return _grouped(part, ["teacher_key"], metrics_of(frame)) if len(part) else pd.DataFrame()


def cells(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: axis values, per-metric mean/std/n, state counts, Δ and the teacher's metric.

    Columns ``<metric>|mean|std|n|low|high`` (low, high: the mean's 95% Student-t interval),
    ``<metric>|seeds`` ({seed: value}), ``<metric>|delta`` (cell mean minus its baseline's mean),
    ``baseline|<metric>|mean|std|n|low|high`` and ``teacher|<metric>|...`` alike; on the primary
    metric, the test of the Δ (``_compare``) and the share of the teacher-student gap it closes
    (``_gap_share``). Which cell is best (bold in the report) is decided per
    rendered column by analysis.tables.mark_best.
    """
    part = frame[frame["kind"] == "cell"]
    if not len(part):
        return pd.DataFrame()
    metrics = metrics_of(frame)
    table = _grouped(part, axes_of(frame) + ["baseline_key", "teacher_key"], metrics)
    base = baselines(frame).set_index("baseline_key") if (frame["kind"] == "student_baseline").any() else None
    teach = teachers(frame).set_index("teacher_key") if (frame["kind"] == "teacher").any() else None
    for metric in metrics:
        for stat in ("mean", "std", "n", "low", "high"):
            column = f"{metric}|{stat}"
            by_baseline = base[column].to_dict() if base is not None else {}
            by_teacher = teach[column].to_dict() if teach is not None else {}
            table[f"baseline|{column}"] = [by_baseline.get(k, math.nan) for k in table["baseline_key"]]
            table[f"teacher|{column}"] = [by_teacher.get(k, math.nan) for k in table["teacher_key"]]
        table[f"{metric}|delta"] = table[f"{metric}|mean"] - table[f"baseline|{metric}|mean"]
    by_baseline = base[f"{metrics[0]}|seeds"].to_dict() if base is not None else {}
    _compare(table, [by_baseline.get(k, {}) for k in table["baseline_key"]], metrics[0])
    _gap_share(table, metrics[0])
    seconds = "cost:seconds_per_iter|mean"
    if seconds in table:
        table["slowdown"] = table[seconds] / [base[seconds].get(k, math.nan) if base is not None and seconds in base
                                              else math.nan for k in table["baseline_key"]]
    if _equal_budget(frame).any():
        against_budget(table, frame)
    return table


def _compare(table: pd.DataFrame, baseline_seeds: list[dict], metric: str) -> None:
    """Each cell's Δ against its student baseline on ``metric`` (analysis.stats.compare: paired by
    seed or Welch), its 95% interval, Holm's correction across the study's tested cells, the verdict
    and the seeds needed to resolve the Δ: columns ``<metric>|delta_low``, ``|delta_high``,
    ``|test``, ``|df``, ``|p``, ``|p_holm``, ``|verdict``, ``|spread``, ``|runs`` (pairs, or the
    smaller side's runs) and ``|seeds_needed`` (pairs, or runs per side)."""
    found = significance.compare_all(list(table[f"{metric}|seeds"]), baseline_seeds)
    adjusted = significance.holm([c.p for c in found])
    for name in ("low", "high", "test", "df", "p", "spread"):
        table[f"{metric}|{'delta_' if name in ('low', 'high') else ''}{name}"] = [getattr(c, name) for c in found]
    table[f"{metric}|runs"] = [c.n for c in found]
    table[f"{metric}|p_holm"] = adjusted
    table[f"{metric}|verdict"] = [significance.verdict(c, p) for c, p in zip(found, adjusted)]
    table[f"{metric}|seeds_needed"] = significance.seeds_needed_all(found)


def _gap_share(table: pd.DataFrame, metric: str) -> None:
    """How far each cell closes its teacher-student gap on ``metric`` (analysis.stats.gap_shares:
    Δ / (teacher mean - baseline mean), the teacher taken as fixed): columns ``<metric>|gap``,
    ``|gap_share``, ``|gap_share_low`` and ``|gap_share_high`` (NaN without a gap to close)."""
    teacher, baseline = table[f"teacher|{metric}|mean"], table[f"baseline|{metric}|mean"]
    table[f"{metric}|gap"] = teacher - baseline
    share, low, high = significance.gap_shares(table[f"{metric}|delta"], table[f"{metric}|delta_low"],
                                               table[f"{metric}|delta_high"], teacher, baseline)
    table[f"{metric}|gap_share"], table[f"{metric}|gap_share_low"], table[f"{metric}|gap_share_high"] = (
        list(share), list(low), list(high))


def term_methods(cell: dict) -> list[str]:
    """The ``method`` of each distillation term of a cell (``["cwd", "cwd"]`` for CWD on two places)."""
    text = cell.get("kd_method")
    return str(text).split("; ") if isinstance(text, str) and text else []


def is_cwd(cell: dict) -> bool:
    """A CWD cell: every distillation term of its runs has ``method: cwd`` (whatever the cell is called)."""
    methods = term_methods(cell)
    return bool(methods) and all(m == "cwd" for m in methods)


def location_kinds(cell_table: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """method -> (method family, ``feature`` or ``logits``), for the paper's Table 2 layout.

    The family is the distillation term's ``method`` (``cwd``, ``pi``, ...) and the kind is what its
    student location is (analysis.collect.location_kind), read from the runs, not from the name.
    Cells with several term methods or on both kinds at once are left out; two cells of one family
    on one kind (say two weights) keep their own names as families.
    """
    placed = {}
    if cell_table.empty or "kd_method" not in cell_table or "location_kind" not in cell_table:
        return placed
    rows = cell_table.drop_duplicates("method")
    for cell in rows.to_dict("records"):
        families = set(term_methods(cell))
        if len(families) == 1 and cell["location_kind"] in ("feature", "logits"):
            placed[cell["method"]] = (families.pop(), cell["location_kind"])
    counts = Counter(placed.values())
    return {method: (str(method) if counts[where] > 1 else where[0], where[1]) for method, where in placed.items()}


def distil_kinds(cell_table: pd.DataFrame) -> dict[str, str | None]:
    """method -> what its terms' losses distil (``channel-wise``, ``spatial``, both joined, or None),
    as analysis.collect.distils read it from the loss declarations, never from the method's name."""
    if cell_table.empty or "distils" not in cell_table:
        return {}
    rows = cell_table.drop_duplicates("method")
    return {row["method"]: row["distils"] if isinstance(row["distils"], str) else None
            for row in rows.to_dict("records")}


def table2_kinds(cell_table: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """``location_kinds`` where the paper's Table 2 layout applies (the cells differ by method alone
    and span two or more method families; with one family the location table says it), else {}.
    Table 2 and its bar figure both ask here."""
    if cell_table.empty or len(axes_of_table(cell_table)) > 1:
        return {}
    kinds = location_kinds(cell_table)
    return kinds if len({family for family, _ in kinds.values()}) >= 2 else {}


def read_references(study_path: Path, names: list[str]) -> pd.DataFrame:
    """Published numbers from ``studies/references/*.csv`` (with the file each row came from)."""
    frames = []
    for name in names or []:
        text = read_reference(Path(study_path), name)   # bounded, from inside the study's folder
        if text is None:
            continue
        table = pd.read_csv(io.StringIO(text), dtype={"location": str})
        table["file"] = name
        frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _norm(text) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower()) if isinstance(text, str) else ""


def _tokens(text) -> set[str]:
    return {t for t in re.split(r"[^a-z0-9]+", str(text).lower()) if t} if isinstance(text, str) else set()


def _same_settings(ref: dict, cell: dict, terms) -> bool:
    """A row that states its ``tau`` or ``weight`` (a committed log of one setting) matches only
    cells run at that value: the cell's axis value where an axis sets it, else its terms' own."""
    for column, axis, read in (("tau", "axis:term.params.tau", lambda t: (t.get("params") or {}).get("tau", 1.0)),
                               ("weight", "axis:term.weight", lambda t: t.get("weight", 1.0))):
        wanted = pd.to_numeric(ref.get(column), errors="coerce")
        if not np.isfinite(wanted):
            continue
        value = cell.get(axis)
        values = {float(value)} if isinstance(value, (int, float)) and np.isfinite(value) else {
            float(read(t)) for t in terms}
        if values != {float(wanted)}:
            return False
    return True


def match_references(references: pd.DataFrame, cell_table: pd.DataFrame, methods: dict, task: str) -> pd.DataFrame:
    """Each published row beside the measured cells it describes (or none).

    A row matches a cell when its method is the cell's distillation method (the ``method`` of
    every term of the cell), its metric fits the task (mIoU for seg, AP/mAP for det), its dataset starts with
    the run's dataset name, its location (feature / logits) agrees with the cell's where both
    say one, its ``tau`` and ``weight`` (where the row states them) are the cell's, and its student
    appears in the cell's student config name where the study varies it.
    """
    if references.empty:
        return pd.DataFrame()
    kinds = location_kinds(cell_table) if len(cell_table) else {}
    rows = []
    for ref in references.to_dict("records"):
        wanted_metric = "miou" if task == "seg" else "ap"
        metric_ok = _norm(ref.get("metric")).endswith(wanted_metric)
        ref_kind = str(ref.get("location") or "").split(" ")[0].strip().lower()
        matched = []
        for cell in cell_table.to_dict("records") if metric_ok and len(cell_table) else []:
            terms = methods.get(cell["method"]) or ()  # the study's methods: name -> its terms
            if not terms or any(term.get("method") != ref.get("method") for term in terms):
                continue  # every term of the cell is the row's method (FBKD on four FPN levels: four terms)
            if cell.get("dataset") and not _norm(ref.get("dataset")).startswith(_norm(cell["dataset"])):
                continue
            kind = kinds.get(cell["method"], (None, None))[1]
            if ref_kind in ("feature", "logits") and kind and kind != ref_kind:
                continue
            if not _same_settings(ref, cell, terms):
                continue
            student = cell.get("axis:student.config")
            if _tokens(ref.get("student")) and isinstance(student, str):
                if not _tokens(ref["student"]) <= _tokens(Path(student.split("::")[-1]).stem):
                    continue
            matched.append(cell)
        for cell in matched or [None]:
            rows.append({"reference": ref, "cell": cell})
    return pd.DataFrame(rows)


def cwd_verdicts(cell_table: pd.DataFrame, metric: str) -> list[dict]:
    """For each CWD cell (every term ``method: cwd``, see ``is_cwd``; the cell's name is not
    looked at): the cell, its gap to the baseline's mean, whether it is positive, and the verdict of
    its test (``_compare``: gain, within noise, loss, or no interval)."""
    verdicts = []
    if cell_table.empty:
        return verdicts
    for cell in cell_table.to_dict("records"):
        if not is_cwd(cell):
            continue
        gap = cell[f"{metric}|delta"]
        verdicts.append({
            "cell": cell, "gap": gap, "beat": bool(np.isfinite(gap) and gap > 0),
            "verdict": cell.get(f"{metric}|verdict", significance.NOT_COMPARED),
            "comparable": bool(np.isfinite(gap)),
        })
    return verdicts


def tested_cells(cell_table: pd.DataFrame, metric: str) -> int:
    """How many cells had a test of their Δ on ``metric``: the family Holm's correction ran over."""
    column = f"{metric}|p"
    return int(np.isfinite(cell_table[column].to_numpy(dtype=float)).sum()) if column in cell_table else 0


def _float(value) -> float:
    return float(value) if fmt_number(value) else math.nan


def measured(row: dict, prefix: str, metric: str) -> significance.Interval:
    """The interval of a cell row's ``<prefix><metric>|...`` columns (prefix ``""``, ``baseline|``
    or ``teacher|``)."""
    def get(stat: str) -> float:
        return _float(row.get(f"{prefix}{metric}|{stat}"))

    n = get("n")
    return significance.Interval(get("mean"), get("std"), int(n) if math.isfinite(n) else 0, get("low"), get("high"))


def starting_point(reference: dict, cell: dict, metric: str) -> str:
    """Whether the measured setting starts where the published one did, judged from the numbers
    (the reference's own ``tag`` says it in words): the published teacher and student-baseline
    numbers against the measured 95% intervals. ``same`` when every one that can be checked lies
    inside, ``different teacher`` (or student baseline, or both) when one lies outside, so that the
    gains compare and the absolute numbers do not; a side without a published number or with a
    single measured run is unchecked. A cell with runs on a partial dataset split is not
    comparable at all."""
    if cell.get("partial_data"):
        return "not comparable: measured on a partial dataset split"
    inside, outside, unchecked = [], [], []
    for side, column, prefix in (("teacher", "teacher_value", "teacher|"),
                                 ("student baseline", "student_value", "baseline|")):
        agrees, _ = significance.position(_float(reference.get(column)), measured(cell, prefix, metric))
        (unchecked if agrees is None else inside if agrees else outside).append(side)
    head = ("different " + " and ".join(outside)) if outside else "same" if inside else "unchecked"
    return head + (f"; {' and '.join(unchecked)} unchecked" if unchecked and (inside or outside) else "")


def published_vs_measured(reference: dict, cell: dict | None, metric: str) -> dict:
    """A published row against the measured cell it describes: ``published`` (its number, NaN when
    none), ``measured`` (the cell's Interval,
    None when no cell), ``inside`` (the published number in its 95% interval; None without one),
    ``distance`` (published minus measured mean, in measured stds), ``starting_point`` and ``tag``
    (the reference's comparability tag, as its file words it)."""
    published = _float(reference.get("value"))
    tag = reference.get("tag") if isinstance(reference.get("tag"), str) else None
    if not cell:
        return {"published": published, "measured": None, "inside": None, "distance": math.nan,
                "starting_point": "not measured", "tag": tag}
    here = measured(cell, "", metric)
    inside, distance = significance.position(published, here)
    return {"published": published, "measured": here, "inside": inside, "distance": distance,
            "starting_point": starting_point(reference, cell, metric), "tag": tag}


def axes_of_table(cell_table: pd.DataFrame) -> list[str]:
    """The axis columns of a cell table (``method`` first)."""
    return ["method"] + [c for c in cell_table.columns if c.startswith("axis:")]
