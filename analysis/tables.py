"""Report tables built from a report's statistics (analysis.records, built once by
analysis.summary); every number goes through analysis.format.

A ``Table`` is plain data (header, rows of ``Cell``s, a caption) that the HTML and markdown
templates render alike; ``Cell.best`` marks the best distilled cell of its column, decided per
rendered column from each cell's ``score`` (its mean; the teacher and baseline rows have none, so
they are never bold).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import aggregate, references
from analysis import format as fmt
from analysis import stats as significance
from analysis.collect import COST
from analysis.records import CW_VS_SPATIAL, VS_STUDENT, CellRecord, Group, Statistics, measured
from analysis.stats import Interval

BEST_CAPTION = ("bold = best distilled cell of the column, when it is above its student baseline and the column "
                "has another cell to beat")


@dataclass
class Cell:
    text: str
    best: bool = False
    score: float = math.nan   # what "best" compares within a column (higher is better); NaN: never best
    beats: bool = True        # False: at or below its student baseline, so never best (it still counts as an entry)


@dataclass
class Table:
    key: str                      # anchor / file-safe identifier
    title: str
    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    caption: str = ""
    why_empty: dict[str, str] = field(default_factory=dict)  # header -> why that column can be all empty


def mark_best(table: Table) -> Table:
    """Bold the highest ``score`` of each column (ties: every cell that has it); cells without a
    finite score (teacher, baseline, labels, missing cells) are never bold, nor is a cell at or below
    its student baseline (``beats``), nor the only entry of its column (best of one says nothing)."""
    for column in range(max((len(r) for r in table.rows), default=0)):
        column_cells = [row[column] for row in table.rows if column < len(row)]
        scores = np.array([c.score for c in column_cells], dtype=float)
        finite = np.isfinite(scores)
        eligible = finite & np.array([c.beats for c in column_cells], dtype=bool)
        best = scores[eligible].max() if eligible.any() and finite.sum() > 1 else math.nan
        for cell, score, ok in zip(column_cells, scores, eligible):
            cell.best = bool(ok and score == best)
    return table


def _beats(cell: CellRecord, metric: str) -> bool:
    """Whether a cell's mean is above its student baseline's (True without a baseline to compare)."""
    delta = cell.delta(metric)
    return not fmt.is_number(delta) or delta > 0


def _score(interval: Interval) -> float:
    """The mean a cell is ranked by, when it has complete runs."""
    return float(interval.mean) if fmt.is_number(interval.mean) and interval.n > 0 else math.nan


def _stat(interval: Interval) -> str:
    return fmt.mean_std(interval.mean, interval.std, interval.n)


def label(method, axes: Mapping[str, object]) -> str:
    """A cell's label: ``cwd_logits, tau 4, weight 3`` (its method, then each axis and its value; an
    axis the cell does not have, another method's own, is left out)."""
    return ", ".join([str(method)] + [f"{fmt.axis_label(path)} {fmt.axis_value(path, value)}"
                                      for path, value in axes.items() if not _absent(value)])


def _absent(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def setting(cell: CellRecord) -> str:
    """A cell's label (``label``) from its record."""
    return label(cell.method, cell.axes)


def group_label(kind: str, run_name: str, groups: int) -> str:
    """``teacher`` / ``student (no distillation)``, with the run name (of its first run) when a
    study has several."""
    text = "teacher" if kind == "teacher" else "student (no distillation)"
    if groups < 2:
        return text
    name = re.sub(r"_s\d+$", "", str(run_name)).removeprefix("teacher_").removeprefix("student_")
    return f"{text}: {name}"


def _named(kind: str, groups: tuple[Group, ...]) -> list[tuple[str, Group]]:
    """(label, group) of each teacher or student baseline group."""
    return [(group_label(kind, group.run_names[0], len(groups)), group) for group in groups]


def mmrazor_table(found: Statistics) -> Table:
    """The layout of MMRazor's CWD README table: Location | Dataset | Teacher | Student | mIoU |
    mIoU(T) | mIoU(S)."""
    metric = found.metric
    name = fmt.metric_label(metric)
    table = Table("mmrazor", "Results in the layout of MMRazor's CWD README table",
                  ["Location", "Dataset", "Teacher", "Student", name, f"{name}(T)", f"{name}(S)"],
                  caption=f"The columns of the results table in MMRazor's CWD README, for comparison with it. "
                          f"{name}: mean ± std over seeds (n = complete runs); (T) the teacher, "
                          f"(S) the student trained without distillation; {BEST_CAPTION}.")
    for cell in found.cells:
        facts = cell.group.facts
        axes = {path: value for path, value in cell.axes.items() if not path.endswith(".config")}  # own columns
        where = label(cell.method, axes) + (f" @ {facts.location}" if facts.location else "")
        table.rows.append([Cell(where), Cell(fmt.value(facts.dataset)), Cell(fmt.value(facts.teacher_config)),
                           Cell(fmt.value(facts.student_config)),
                           Cell(_stat(cell.measured(metric)), score=_score(cell.measured(metric)),
                                beats=_beats(cell, metric)),
                           Cell(_stat(measured(cell.teacher, metric))), Cell(_stat(measured(cell.baseline, metric)))])
    return mark_best(table)


def results_table(found: Statistics) -> Table:
    """Every cell with its metrics, Δ against the student baseline and its run counts."""
    metrics, primary, axes = found.metrics, found.metric, found.axes
    header = ["Method"] + [fmt.axis_label(a) for a in axes] + [fmt.metric_label(primary), "Δ vs student"]
    header += [fmt.metric_label(m) for m in metrics[1:]] + ["complete / planned", "not averaged"]
    table = Table("results", "All cells", header,
                  caption="mean ± std over seeds (sample std), n = complete runs averaged; Δ = cell mean minus "
                          f"the student baseline's mean; {BEST_CAPTION} (the teacher and student rows never "
                          "are). Failed, diverged and "
                          "missing runs are counted in the last column and never averaged.")

    def line(name: str, group: Group, axis_values: list[str], delta: Cell, ranked: CellRecord | None = None
             ) -> list[Cell]:
        def stat(metric: str) -> Cell:
            if ranked is None:
                return Cell(_stat(group.metrics[metric]))
            return Cell(_stat(group.metrics[metric]), score=_score(group.metrics[metric]), beats=_beats(ranked, metric))

        cells_ = [Cell(name)] + [Cell(v) for v in axis_values]
        cells_ += [stat(primary), delta]
        cells_ += [stat(m) for m in metrics[1:]]
        problems = [f"{group.states[s]} {s}" for s in aggregate.PROBLEM_STATES if group.states[s]]
        return cells_ + [Cell(f"{group.complete} / {group.planned}"), Cell(", ".join(problems) or "none")]

    blank = [""] * len(axes)
    for name, group in _named("teacher", found.teachers):
        table.rows.append(line(name, group, blank, Cell(fmt.MISSING)))
    for name, group in _named("student", found.baselines):
        table.rows.append(line(name, group, blank, Cell(fmt.signed(0.0))))
    for cell in found.cells:
        delta = cell.delta(primary)
        table.rows.append(line(str(cell.method), cell.group, [fmt.axis_value(a, cell.axes.get(a)) for a in axes],
                               Cell(fmt.signed(delta), score=float(delta) if fmt.is_number(delta) else math.nan,
                                    beats=_beats(cell, primary)),
                               ranked=cell))
    return mark_best(table)


def significance_caption(label: str, tested: int) -> str:
    """How to read the significance table: the intervals, the two tests, Holm, n = 1, seeds needed."""
    return (f"{label}: mean ± sample std (n = complete runs) and the mean's 95% Student-t interval. "
            "Δ = the cell's mean minus its student baseline's, with its 95% interval: paired (a t test on the "
            "per-seed differences) where the cell and its baseline have results for the same seeds, as a seed fixes "
            "the data order and the student's initial weights; Welch's t test otherwise. Verdict: gain or loss when "
            f"the Holm-corrected p-value across the study's {fmt.count_noun(tested, 'tested cell')} is below "
            f"{significance.ALPHA:g}, within noise otherwise; the intervals are not corrected, so a Δ interval "
            "that excludes 0 can still be within noise. A side with one run (n = 1) has no interval and no test. "
            f"Seeds to resolve Δ: the seeds (pairs when paired, runs per side for Welch) at which a t test at "
            f"{significance.ALPHA:g} finds a Δ of this size with power {significance.POWER:g}, taking the "
            "observed spread as the true one; to get them, add seeds to the study's seeds: and relaunch (only the "
            "new seeds run).")


def _enough_alone(tested, cells: int) -> str:
    """Beside "seeds to resolve Δ: 3 (has 3)" of a cell within noise: why that is no contradiction."""
    if tested.verdict != significance.NOISE or not fmt.is_number(tested.seeds_needed) or \
            not fmt.is_number(tested.runs) or tested.seeds_needed > tested.runs:
        return ""
    return f"; enough on its own, within noise after Holm's correction over {fmt.count_noun(cells, 'cell')}"


def significance_table(found: Statistics) -> Table:
    """Gain or noise: every teacher, student baseline and cell with its 95% interval, and each
    cell's Δ with its interval, test, Holm-corrected p-value, verdict and the seeds it needs."""
    metric = found.metric
    name = fmt.metric_label(metric)
    tested_cells = found.family(VS_STUDENT, metric).tested
    table = Table("significance", "Gain or noise: Δ vs the student baseline with 95% intervals",
                  ["Cell", name, "95% interval", "Δ vs student", "Δ 95% interval", "test", "p (Holm)", "verdict",
                   "seeds to resolve Δ"],
                  caption=significance_caption(name, tested_cells))

    def spread(interval: Interval) -> list[Cell]:
        shown_ = fmt.interval(interval.low, interval.high)
        return [Cell(_stat(interval)), Cell(shown_ if interval.n != 1 else "no interval (n = 1)")]

    def blank() -> list[Cell]:  # the teacher and baseline rows have no Δ
        return [Cell(fmt.MISSING) for _ in range(6)]

    for kind, groups in (("teacher", found.teachers), ("student", found.baselines)):
        for title, group in _named(kind, groups):
            table.rows.append([Cell(title)] + spread(group.metrics[metric]) + blank())
    for cell in found.cells:
        tested = cell.test(VS_STUDENT, metric)
        needed = fmt.seed_count(tested.seeds_needed, significance.MAX_SEEDS)
        if needed != fmt.MISSING:
            needed += f" (has {fmt.integer(tested.runs)}{_enough_alone(tested, tested_cells)})"
        table.rows.append([Cell(setting(cell))] + spread(cell.measured(metric)) + [
            Cell(fmt.signed(cell.delta(metric))), Cell(fmt.interval(tested.low, tested.high, sign=True)),
            Cell(tested.test or fmt.MISSING), Cell(fmt.p_value(tested.p_holm)), Cell(str(tested.verdict)),
            Cell(needed)])
    return table


GAP_CAPTION = ("Share of the gap closed = (cell mean - student baseline mean) / (teacher - student baseline mean): "
               "0% = no better than the student baseline, 100% = as good as the teacher, below 0% = worse than "
               "the baseline. Its 95% interval is the Δ's (paired by seed or Welch, as in the table above) divided "
               "by the gap, the teacher's value taken as fixed: it is one run (or its mean over seeds), and its "
               "own seed noise is not in the interval. No share where the teacher is not above the baseline.")


def gap_table(found: Statistics) -> Table:
    """How far each cell closes the teacher-student gap: its Δ, the gap and the share of it closed,
    with the share's 95% interval (analysis.stats.gap_shares)."""
    metric = found.metric
    name = fmt.metric_label(metric)
    table = Table("gap", "How far distillation closes the teacher-student gap",
                  ["Cell", f"Δ vs student ({name})", "teacher - student", "share of the gap closed", "95% interval"],
                  caption=GAP_CAPTION,
                  why_empty={"95% interval": "a side has a single run (n = 1), so Δ has no interval",
                             "share of the gap closed": "no teacher above the student baseline to close a gap to",
                             "teacher - student": "no complete teacher run"})
    for cell in found.cells:
        gap = cell.gap(metric)
        closes = fmt.is_number(gap.share)  # Δ alone is in the table above
        table.rows.append([
            Cell(setting(cell)), Cell(fmt.signed(cell.delta(metric)) if closes else fmt.MISSING),
            Cell(fmt.number(gap.gap)), Cell(fmt.percent(gap.share)), Cell(fmt.percent_interval(gap.low, gap.high))])
    return table


def table2(found: Statistics) -> Table | None:
    """The paper's Table 2 layout: method family x {feature map, logits}, with published numbers."""
    metric = found.metric
    kinds = aggregate.table2_kinds(found.cells, found.axes)
    if not kinds:
        return None
    published = {match.cell.method: match.reference["value"] for match in found.matches
                 if match.cell is not None and match.cell.method in kinds}
    columns = [(kind, fmt.kind_label(kind).capitalize()) for kind in ("feature", "logits")]
    header = ["Method"] + [title for _, title in columns]
    if published:
        header += [f"{title} (published)" for _, title in columns]
    header += [f"{title}: Δ vs best spatial" for _, title in columns]
    table = Table("table2", "Feature map vs logits (the paper's Table 2 layout)", header,
                  caption=f"{fmt.metric_label(metric)} mean ± std (n) and Δ vs the student baseline; rows: the "
                          "distillation term's method with what its loss distils (channel-wise or spatial, as the "
                          "loss declares it), columns: what its student location is (a classifier such as "
                          f"decode_head.conv_seg: logits; any other module: feature map); {BEST_CAPTION}. "
                          "Δ vs best spatial: a channel-wise cell minus the spatial cell with the highest mean at its "
                          "location (chosen after the fact, which favours the spatial side), with its 95% interval "
                          "and verdict (the channel-wise-vs-spatial table below).")
    table.why_empty = _table2_why_empty(kinds, columns)
    by_method = {cell.method: cell for cell in found.cells}
    distils = aggregate.distil_kinds(found.cells)
    for family in dict.fromkeys(family for family, _ in kinds.values()):
        declared = {distils.get(m) for m, (f, _) in kinds.items() if f == family}
        line = [Cell(fmt.with_kind(family, declared.pop() if len(declared) == 1 else None))]
        placed = [next((m for m, (f, k) in kinds.items() if f == family and k == kind), None) for kind, _ in columns]
        line += [_joined(by_method.get(method), metric) for method in placed]
        if published:
            line += [Cell(fmt.number(published.get(method))) for method in placed]
        line += [_versus_spatial(found, by_method.get(method)) for method in placed]
        table.rows.append(line)
    return mark_best(table)


def location_table(found: Statistics) -> Table | None:
    """Where to distil: one row per cell when the cells differ only by where their terms sit (one
    set of term methods, no other grid axis, two or more student locations)."""
    cells = found.cells
    if not cells or [a for a in found.axes if "student_location" not in a]:
        return None
    families = {frozenset(cell.group.facts.term_methods) for cell in cells}
    if len(families) != 1 or not next(iter(families)) or len({cell.group.facts.location for cell in cells}) < 2:
        return None
    name = fmt.metric_label(found.metric)
    table = Table("ablation_location", "Ablation: where to distil",
                  ["Method", "Distils", "Student location(s)", f"{name} [Δ vs student]"],
                  caption=f"{name} mean ± std (n) [Δ vs the student baseline]; every cell distils with "
                          f"{', '.join(sorted(next(iter(families))))}; where, from the runs' student locations "
                          f"(a classifier such as decode_head.conv_seg: logits; any other module: feature map); "
                          f"{BEST_CAPTION}.")
    for cell in cells:
        table.rows.append([Cell(str(cell.method)), Cell(fmt.kind_label(cell.group.facts.location_kind)),
                           Cell(str(cell.group.facts.location)), _joined(cell, found.metric)])
    return mark_best(table)


def ablation_tables(found: Statistics) -> list[Table]:
    """One table per term axis (rows: its values, columns: methods); two categorical axes as a grid."""
    axes = [a for a in found.axes if a.startswith("term.")]
    cells, metric = [cell for cell in found.cells if all(a in cell.axes for a in axes)], found.metric  # a method's
    # own axes (methods.<name>.grid) sweep that method alone: the cells without them sit in "All cells"
    tables = []
    name = fmt.metric_label(metric)
    methods = list(dict.fromkeys(cell.method for cell in cells))
    if len(axes) == 2:
        rows_axis, cols_axis = axes
        header = [f"{fmt.axis_label(rows_axis)} \\ {fmt.axis_label(cols_axis)}"]
        col_values = _ordered([cell.axes[cols_axis] for cell in cells])
        table = Table("ablation_grid", f"Ablation: {fmt.axis_label(rows_axis)} x {fmt.axis_label(cols_axis)}",
                      header + [fmt.value(v) for v in col_values],
                      caption=f"{name} mean ± std (n) [Δ vs the student baseline]; method(s): "
                              f"{', '.join(map(str, methods))}; {BEST_CAPTION}.")
        first = _first_cells(cells, lambda cell: (cell.axes[rows_axis], cell.axes[cols_axis]))
        for value in _ordered([cell.axes[rows_axis] for cell in cells]):
            table.rows.append([Cell(fmt.value(value))]
                              + [_joined(first.get((value, col_value)), metric) for col_value in col_values])
        tables.append(mark_best(table))
    if len(axes) != 1:
        return tables  # two axes: the grid above; more: the "All cells" table lists every combination
    axis = axes[0]
    title = fmt.axis_label(axis)
    table = Table(f"ablation_{title}", f"Ablation: {title}", [title] + [str(m) for m in methods],
                  caption=f"{name} mean ± std (n) [Δ vs the student baseline]; one column per method; "
                          f"{BEST_CAPTION}.")
    first = _first_cells(cells, lambda cell: (cell.axes[axis], cell.method))
    for value in _ordered([cell.axes[axis] for cell in cells]):
        table.rows.append([Cell(fmt.value(value))]
                          + [_joined(first.get((value, method)), metric) for method in methods])
    tables.append(mark_best(table))
    return tables


def _versus_spatial(found: Statistics, cell: CellRecord | None) -> Cell:
    """A Table 2 cell: a channel-wise cell's Δ against the best spatial cell at its location on the
    primary metric (analysis.comparisons), ``+14.67 [+9.62, +19.73] vs pi: gain``, or the missing mark."""
    tested = next((each for each in found.versus if each.cell is cell and
                   (each.test.family, each.test.metric) == (CW_VS_SPATIAL, found.metric)), None)
    if tested is None:
        return Cell(fmt.MISSING)
    test = tested.test
    interval = fmt.interval(test.low, test.high, sign=True)
    return Cell(f"{fmt.signed(test.delta)}{'' if interval == fmt.MISSING else ' ' + interval} vs "
                f"{tested.other.method}: {test.verdict}")


def _table2_why_empty(kinds: dict, columns: list[tuple[str, str]]) -> dict[str, str]:
    """Why a Table 2 column can be all empty: no cell distils there, or none of those has a result."""
    why = {}
    for kind, title in columns:
        where = fmt.kind_label(kind) if kind == "logits" else f"a {fmt.kind_label(kind)}"
        placed = any(k == kind for _, k in kinds.values())
        why[title] = (f"no {fmt.kind_label(kind)} cell has a complete run yet" if placed
                      else f"no cell of this study distils {where}")
        why[f"{title} (published)"] = f"no published number matches a {fmt.kind_label(kind)} cell"
        why[f"{title}: Δ vs best spatial"] = (f"no channel-wise {fmt.kind_label(kind)} cell has a spatial one at "
                                              "its location")
    return why


def without_empty_columns(table: Table) -> Table | None:
    """``table`` without the columns whose every row shows the missing mark (a feature-map column
    of a study that distils only logits), its caption saying which were left out and why (the
    table's ``why_empty``, else that no row has a value there); None when nothing but the first
    column would remain. A table without rows is kept as it is."""
    if not table.rows:
        return table
    width = len(table.header)
    empty = [i for i in range(1, width)
             if all(i >= len(row) or row[i].text == fmt.MISSING for row in table.rows)]
    if not empty:
        return table
    if len(empty) == width - 1:
        return None
    reasons: dict[str, list[str]] = {}
    for i in empty:
        reasons.setdefault(table.why_empty.get(table.header[i], "no row has a value there"), []).append(
            f'"{table.header[i]}"')
    sentences = [f"The {' and '.join(names)} column{'s are' if len(names) > 1 else ' is'} left out: {why}."
                 for why, names in reasons.items()]
    keep = [i for i in range(width) if i not in empty]
    return Table(table.key, table.title, [table.header[i] for i in keep],
                 [[row[i] for i in keep if i < len(row)] for row in table.rows],
                 " ".join([table.caption, *sentences]).strip(), table.why_empty)


def shown(built: list[Table]) -> tuple[list[Table], list[str]]:
    """The tables a report shows (``without_empty_columns`` of each) and one sentence per table
    left out whole because every column but its labels is empty."""
    kept, notes = [], []
    for table in built:
        trimmed = without_empty_columns(table)
        if trimmed is None:
            notes.append(f'The table "{table.title}" is left out: none of its rows has a value yet.')
        else:
            kept.append(trimmed)
    return kept, notes


def _ordered(values: list) -> list:
    """Axis values in study order, or ascending when they are all numbers (a sweep)."""
    values = list(dict.fromkeys(values))
    if all(fmt.is_number(v) for v in values):
        return sorted(values)
    return values


def _first_cells(cells, key) -> dict[tuple, CellRecord]:
    """The first cell of each ``key`` (a tuple of its values): one pass over the cells instead of
    one search per table cell."""
    first: dict[tuple, CellRecord] = {}
    for cell in cells:
        first.setdefault(key(cell), cell)
    return first


def _joined(cell: CellRecord | None, metric: str) -> Cell:
    """A table cell: mean ± std (n) [Δ] of a cell, or the missing mark."""
    if cell is None or not cell.measured(metric).n:
        return Cell(fmt.MISSING)
    return Cell(f"{_stat(cell.measured(metric))} [{fmt.signed(cell.delta(metric))}]",
                score=_score(cell.measured(metric)), beats=_beats(cell, metric))


def _cost(group: Group, key: str, stat: str):
    """A cost's ``mean`` or ``n`` over a group's complete runs; None where no run recorded it."""
    found = group.costs[key]
    return None if found is None else getattr(found, stat)


def _kd_terms(group: Group) -> str:
    """The KD terms' share; runs from before ``teacher_share`` was recorded measured the teacher's
    forward and the KD terms together, and say so."""
    text = fmt.percent(_cost(group, "kd_share", "mean"))
    if text != fmt.MISSING and not _cost(group, "teacher_share", "n") and _cost(group, "kd_share", "n"):
        text += " (with the teacher forward)"
    return text


SHARED_CAPTION = ("\"shared k/n\": k of the n runs timed were timed while other work shared the machine (the launch "
                  "ran other runs beside them, or the load average showed another busy core): their seconds per "
                  "iteration, and the slowdowns built on them, are the machine's as much as the method's; "
                  "relaunch those runs alone (--parallel 1 on an idle machine) to time them.")


def _shared(group: Group) -> str:
    """`` (shared 2/3)`` when some of a group's runs were timed beside other work; else nothing."""
    found = group.costs.get("shared")
    if found is None or not found.n or not fmt.is_number(found.mean) or found.mean <= 0:
        return ""
    return f" (shared {round(found.mean * found.n)}/{found.n})"


def cost_table(found: Statistics) -> Table:
    """Training cost per method: seconds per iteration, slowdown, peak memory, and the shares of the
    step spent in the teacher's forward and in the KD terms."""
    table = Table("cost", "Training cost", ["Method", "s / iteration", "vs student", "peak memory", "teacher forward",
                                            "KD terms", "runs timed"],
                  caption="From final.json's cost, mean over complete runs. Teacher forward: the teacher's forward "
                          "pass's share of the training step; KD terms: the share of the distillation losses and "
                          "adapters, forward and backward. Runs that did not record the teacher's share (older "
                          f"results) show {fmt.MISSING} there, and their KD share includes the teacher forward. "
                          "Peak memory is the GPU's peak allocation on CUDA, the process's max RSS on CPU (the kind "
                          "is given). " + SHARED_CAPTION)
    def line(name: str, group: Group, slowdown) -> list[Cell]:
        kind = f" ({group.memory_kind})" if group.memory_kind else ""
        seconds = fmt.seconds(_cost(group, "seconds_per_iter", "mean")) + _shared(group)
        return [Cell(name), Cell(seconds), Cell(fmt.ratio(slowdown)),
                Cell(fmt.megabytes(_cost(group, "peak_memory_mb", "mean")) + kind),
                Cell(fmt.percent(_cost(group, "teacher_share", "mean"))), Cell(_kd_terms(group)),
                Cell(fmt.integer(_cost(group, "seconds_per_iter", "n")))]

    for name, group in _named("teacher", found.teachers):
        table.rows.append(line(name + " (training)", group, None))
    for name, group in _named("student", found.baselines):
        table.rows.append(line(name, group, 1.0))
    for cell in found.cells:
        table.rows.append(line(setting(cell), cell.group, cell.slowdown))
    return table


def reference_table(found: Statistics) -> Table | None:
    """Published numbers beside the measured ones, with their source."""
    if not found.matches:
        return None
    metric = found.metric
    table = Table("references", "Published vs measured",
                  ["Method", "Location", "Student", "Published", "Published (T)", "Published (S)", "Measured",
                   "Measured (T)", "Measured (S)", "Source", "Comparability tag", "Measured 95% interval",
                   "Published vs measured", "Starting point"],
                  caption="Published numbers from studies/references/ (typed from the papers, with their source); "
                          "measured: mean ± std (n) from this study's runs. Settings differ where the study header "
                          "says so. " + REFERENCE_CAPTION)
    for match in found.matches:
        ref, cell = match.reference, match.cell
        against = references.published_vs_measured(ref, cell, metric)
        table.rows.append([
            Cell(f"{ref['method']} → {cell.method}" if cell else str(ref["method"])),
            Cell(fmt.value(ref.get("location")) if isinstance(ref.get("location"), str) else fmt.MISSING),
            Cell(fmt.value(ref.get("student")) if isinstance(ref.get("student"), str) else fmt.MISSING),
            Cell(fmt.number(ref.get("value"))), Cell(fmt.number(ref.get("teacher_value"))),
            Cell(fmt.number(ref.get("student_value"))),
            Cell(_stat(cell.measured(metric)) if cell else "not measured"),
            Cell(_stat(measured(cell.teacher, metric)) if cell else fmt.MISSING),
            Cell(_stat(measured(cell.baseline, metric)) if cell else fmt.MISSING),
            Cell(f"{ref.get('source')} ({ref.get('file')})"),
            Cell(against["tag"] or fmt.MISSING),
            Cell(fmt.interval(against["measured"].low, against["measured"].high) if cell else fmt.MISSING),
            Cell(_placed(against)), Cell(against["starting_point"]),
        ])
    return table


REFERENCE_CAPTION = (
    "Published vs measured: whether the published number lies inside the measured mean's 95% Student-t interval, "
    "and how far it is from the measured mean in measured (sample) stds. Comparability tag: how the published "
    "setting differs, as its reference file words it. Starting point, from the numbers: same when the published "
    "teacher and student baseline lie inside the measured ones' intervals; different teacher or student baseline "
    "when one lies outside, where the gains compare and the absolute numbers do not; unchecked without a published "
    "number or with a single measured run; not comparable when the cell's runs used a partial dataset split.")


def _placed(against: dict) -> str:
    """``inside (0.4 std above)``, ``outside: 2.3 std below``, or why there is no interval."""
    here = against["measured"]
    if here is None or here.n == 0:
        return "not measured"
    if not fmt.is_number(against["published"]):
        return fmt.MISSING
    if against["inside"] is None:
        return "no interval (n = 1)"
    distance = against["distance"]
    side = "at the mean"  # a measured std of 0: every seed gave the published number
    if fmt.is_number(distance):
        side = f"{abs(distance):.1f} std {'above' if distance > 0 else 'below'}"
    return f"inside ({side})" if against["inside"] else f"outside: {side}"


def problems_table(frame: pd.DataFrame) -> Table:
    """Every run that did not complete, and why."""
    table = Table("problems", "Runs without a result (not averaged)", ["Run", "Run id", "Kind", "State", "Detail"])
    for row in frame[frame["status"] != "complete"].to_dict("records"):
        table.rows.append([Cell(str(row["name"])), Cell(str(row["run_id"])), Cell(str(row["kind"])),
                           Cell(str(row["status"])), Cell(str(row.get("detail") or ""))])
    return table


def runs_table(frame: pd.DataFrame, metrics: list[str]) -> Table:
    """Every planned run with its state and raw metrics (the numbers the cells average)."""
    header = ["Run", "Run id", "Kind", "Seed", "State"] + [fmt.metric_label(m) for m in metrics] + ["s / iteration"]
    table = Table("runs", "Every run", header)
    for row in frame.to_dict("records"):
        table.rows.append([Cell(str(row["name"])), Cell(str(row["run_id"])), Cell(str(row["kind"])),
                           Cell(fmt.integer(row.get("seed"))), Cell(str(row["status"]))]
                          + [Cell(fmt.number(row.get(m), 4)) for m in metrics]
                          + [Cell(fmt.seconds(row.get(COST + "seconds_per_iter"))
                                  + (" (shared)" if row.get(COST + "shared") == 1 else ""))])
    return table


def recipe_table(found: Statistics) -> Table | None:
    """What each group of runs trained with, from their recipe cards (final.json ``recipe``); None
    when no complete run recorded one."""
    if not found.recipes or not (found.teachers or found.baselines or found.cells):
        return None
    table = Table("recipe", "Recipe per cell",
                  ["Runs of", "batch (per process x processes x nodes)", "iterations (epochs)", "crop", "pipeline",
                   "optimizer, lr, schedule", "teacher (checkpoint, mode)", "precision"],
                  caption="From the recipe card of each group's first complete run (final.json recipe). Epochs: the "
                          "iterations times the global batch over the training images the run found.")

    def line(name: str, group: Group) -> list[Cell]:
        get = group.recipe.__getitem__  # None where the card did not say

        batch = (f"{fmt.value(get('global_batch'))} ({fmt.value(get('per_process_batch'))} x "
                 f"{fmt.value(get('processes'))} x {fmt.value(get('nodes'))})")
        iterations = fmt.value(get("iterations")) + (f" ({get('epochs')})" if get("epochs") is not None else "")
        schedule = f"{fmt.value(get('optimizer'))}, {fmt.value(get('lr'))}, {fmt.value(get('lr_schedule'))}"
        teacher = (f"{get('teacher_checkpoint')}, {get('teacher_mode')}" if get("teacher_checkpoint") is not None
                   else fmt.MISSING)
        return [Cell(name), Cell(batch), Cell(iterations), Cell(fmt.value(get("crop"))),
                Cell(fmt.value(get("pipeline"))), Cell(schedule), Cell(teacher), Cell(fmt.value(get("precision")))]

    for name, group in _named("teacher", found.teachers):
        table.rows.append(line(name, group))
    for name, group in _named("student", found.baselines):
        table.rows.append(line(name, group))
    for cell in found.cells:
        table.rows.append(line(setting(cell), cell.group))
    return table
