"""Report tables built from the aggregated frames; every number goes through analysis.format.

A ``Table`` is plain data (header, rows of ``Cell``s, a caption) that the HTML and markdown
templates render alike; ``Cell.best`` marks the best distilled cell of its column, decided per
rendered column from each cell's ``score`` (its mean; the teacher and baseline rows have none, so
they are never bold).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import aggregate
from analysis import format as fmt
from analysis import stats as significance

BEST_CAPTION = "bold = best distilled cell of the column"


@dataclass
class Cell:
    text: str
    best: bool = False
    score: float = math.nan   # what "best" compares within a column (higher is better); NaN: never best


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
    finite score (teacher, baseline, labels, missing cells) are never bold."""
    for column in range(max((len(r) for r in table.rows), default=0)):
        column_cells = [row[column] for row in table.rows if column < len(row)]
        scores = np.array([c.score for c in column_cells], dtype=float)
        finite = np.isfinite(scores)
        best = scores[finite].max() if finite.any() else math.nan
        for cell, score, ok in zip(column_cells, scores, finite):
            cell.best = bool(ok and score == best)
    return table


def _score(row, column: str) -> float:
    """The mean a cell is ranked by, when it has complete runs."""
    value = row.get(f"{column}|mean") if row else None
    return float(value) if fmt.is_number(value) and fmt.is_number(row.get(f"{column}|n")) and row[
        f"{column}|n"] > 0 else math.nan


def _stat(row, column: str, with_n: bool = True) -> str:
    return fmt.mean_std(row.get(f"{column}|mean"), row.get(f"{column}|std"), row.get(f"{column}|n"), with_n=with_n)


def _axis_columns(cells: pd.DataFrame) -> list[str]:
    return [c for c in aggregate.axes_of_table(cells) if c != "method"]


def setting(row, axis_columns: list[str]) -> str:
    """A cell's label: ``cwd_logits, tau 4, weight 3`` (its method, then each axis and its value)."""
    parts = [str(row["method"])] + [f"{fmt.axis_label(a[5:])} {fmt.axis_value(a, row[a])}" for a in axis_columns]
    return ", ".join(parts)


def group_label(kind: str, row: dict, groups: int) -> str:
    """``teacher`` / ``student (no distillation)``, with the run name when a study has several."""
    label = "teacher" if kind == "teacher" else "student (no distillation)"
    if groups < 2:
        return label
    name = re.sub(r"_s\d+$", "", str((row.get("run_names") or [""])[0]))
    name = name.removeprefix("teacher_").removeprefix("student_")
    return f"{label}: {name}"


def mmrazor_table(cells: pd.DataFrame, metric: str) -> Table:
    """The layout of MMRazor's CWD README table: Location | Dataset | Teacher | Student | mIoU |
    mIoU(T) | mIoU(S)."""
    label = fmt.metric_label(metric)
    table = Table("mmrazor", "Results in the layout of MMRazor's CWD README table",
                  ["Location", "Dataset", "Teacher", "Student", label, f"{label}(T)", f"{label}(S)"],
                  caption=f"The columns of the results table in MMRazor's CWD README, for comparison with it. "
                          f"{label}: mean ± std over seeds (n = complete runs); (T) the teacher, "
                          f"(S) the student trained without distillation; {BEST_CAPTION}.")
    axes = [a for a in _axis_columns(cells) if not a.endswith(".config")]  # configs: own columns
    for row in cells.to_dict("records"):
        where = setting(row, axes) + (f" @ {row['location']}" if row.get("location") else "")
        table.rows.append([Cell(where), Cell(fmt.value(row.get("dataset"))), Cell(fmt.value(row.get("teacher_config"))),
                           Cell(fmt.value(row.get("student_config"))),
                           Cell(_stat(row, metric), score=_score(row, metric)),
                           Cell(_stat(row, f"teacher|{metric}")), Cell(_stat(row, f"baseline|{metric}"))])
    return mark_best(table)


def results_table(cells: pd.DataFrame, baselines: pd.DataFrame, teachers: pd.DataFrame, metrics: list[str]) -> Table:
    """Every cell with its metrics, Δ against the student baseline and its run counts."""
    primary = metrics[0]
    axes = _axis_columns(cells)
    header = ["Method"] + [fmt.axis_label(a[5:]) for a in axes] + [fmt.metric_label(primary), "Δ vs student"]
    header += [fmt.metric_label(m) for m in metrics[1:]] + ["complete / planned", "not averaged"]
    table = Table("results", "All cells", header,
                  caption="mean ± std over seeds (sample std), n = complete runs averaged; Δ = cell mean minus "
                          f"the student baseline's mean; {BEST_CAPTION} (the teacher and student rows never "
                          "are). Failed, diverged and "
                          "missing runs are counted in the last column and never averaged.")

    def line(name: str, row: dict, axis_values: list[str], delta: Cell, ranked: bool = False) -> list[Cell]:
        def score(metric: str) -> float:
            return _score(row, metric) if ranked else math.nan

        cells_ = [Cell(name)] + [Cell(v) for v in axis_values]
        cells_ += [Cell(_stat(row, primary), score=score(primary)), delta]
        cells_ += [Cell(_stat(row, m), score=score(m)) for m in metrics[1:]]
        problems = [f"{row.get(s, 0)} {s}" for s in aggregate.PROBLEM_STATES if row.get(s, 0)]
        return cells_ + [Cell(f"{row['complete']} / {row['planned']}"), Cell(", ".join(problems) or "none")]

    blank = [""] * len(axes)
    for row in teachers.to_dict("records") if len(teachers) else []:
        table.rows.append(line(group_label("teacher", row, len(teachers)), row, blank, Cell(fmt.MISSING)))
    for row in baselines.to_dict("records") if len(baselines) else []:
        table.rows.append(line(group_label("student", row, len(baselines)), row, blank, Cell(fmt.signed(0.0))))
    for row in cells.to_dict("records"):
        delta = row[f"{primary}|delta"]
        table.rows.append(line(str(row["method"]), row, [fmt.axis_value(a, row[a]) for a in axes],
                               Cell(fmt.signed(delta), score=float(delta) if fmt.is_number(delta) else math.nan),
                               ranked=True))
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


def significance_table(cells: pd.DataFrame, baselines: pd.DataFrame, teachers: pd.DataFrame, metric: str) -> Table:
    """Gain or noise: every teacher, student baseline and cell with its 95% interval, and each
    cell's Δ with its interval, test, Holm-corrected p-value, verdict and the seeds it needs."""
    label = fmt.metric_label(metric)
    table = Table("significance", "Gain or noise: Δ vs the student baseline with 95% intervals",
                  ["Cell", label, "95% interval", "Δ vs student", "Δ 95% interval", "test", "p (Holm)", "verdict",
                   "seeds to resolve Δ"],
                  caption=significance_caption(label, aggregate.tested_cells(cells, metric)))

    def spread(row: dict, prefix: str = "") -> list[Cell]:
        n = row.get(f"{prefix}{metric}|n") or 0
        shown = fmt.interval(row.get(f"{prefix}{metric}|low"), row.get(f"{prefix}{metric}|high"))
        return [Cell(_stat(row, f"{prefix}{metric}")), Cell(shown if n != 1 else "no interval (n = 1)")]

    def blank() -> list[Cell]:  # the teacher and baseline rows have no Δ
        return [Cell(fmt.MISSING) for _ in range(6)]

    for row in teachers.to_dict("records") if len(teachers) else []:
        table.rows.append([Cell(group_label("teacher", row, len(teachers)))] + spread(row) + blank())
    for row in baselines.to_dict("records") if len(baselines) else []:
        table.rows.append([Cell(group_label("student", row, len(baselines)))] + spread(row) + blank())
    axes = _axis_columns(cells)
    for row in cells.to_dict("records") if len(cells) else []:
        needed = fmt.seed_count(row.get(f"{metric}|seeds_needed"), significance.MAX_SEEDS)
        if needed != fmt.MISSING:
            needed += f" (has {fmt.integer(row.get(f'{metric}|runs'))})"
        table.rows.append([Cell(setting(row, axes))] + spread(row) + [
            Cell(fmt.signed(row.get(f"{metric}|delta"))),
            Cell(fmt.interval(row.get(f"{metric}|delta_low"), row.get(f"{metric}|delta_high"), sign=True)),
            Cell(row.get(f"{metric}|test") or fmt.MISSING), Cell(fmt.p_value(row.get(f"{metric}|p_holm"))),
            Cell(str(row.get(f"{metric}|verdict"))), Cell(needed)])
    return table


GAP_CAPTION = ("Share of the gap closed = (cell mean - student baseline mean) / (teacher - student baseline mean): "
               "0% = no better than the student baseline, 100% = as good as the teacher, below 0% = worse than "
               "the baseline. Its 95% interval is the Δ's (paired by seed or Welch, as in the table above) divided "
               "by the gap, the teacher's value taken as fixed: it is one run (or its mean over seeds), and its "
               "own seed noise is not in the interval. No share where the teacher is not above the baseline.")


def gap_table(cells: pd.DataFrame, metric: str) -> Table:
    """How far each cell closes the teacher-student gap: its Δ, the gap and the share of it closed,
    with the share's 95% interval (analysis.stats.gap_shares)."""
    label = fmt.metric_label(metric)
    table = Table("gap", "How far distillation closes the teacher-student gap",
                  ["Cell", f"Δ vs student ({label})", "teacher - student", "share of the gap closed", "95% interval"],
                  caption=GAP_CAPTION,
                  why_empty={"95% interval": "a side has a single run (n = 1), so Δ has no interval",
                             "share of the gap closed": "no teacher above the student baseline to close a gap to",
                             "teacher - student": "no complete teacher run"})
    axes = _axis_columns(cells)
    for row in cells.to_dict("records") if len(cells) else []:
        closes = fmt.is_number(row.get(f"{metric}|gap_share"))  # Δ alone is in the table above
        table.rows.append([
            Cell(setting(row, axes)), Cell(fmt.signed(row.get(f"{metric}|delta")) if closes else fmt.MISSING),
            Cell(fmt.number(row.get(f"{metric}|gap"))), Cell(fmt.percent(row.get(f"{metric}|gap_share"))),
            Cell(fmt.percent_interval(row.get(f"{metric}|gap_share_low"), row.get(f"{metric}|gap_share_high")))])
    return table


def table2(cells: pd.DataFrame, metric: str, matches: pd.DataFrame) -> Table | None:
    """The paper's Table 2 layout: method family x {feature map, logits}, with published numbers."""
    kinds = aggregate.table2_kinds(cells)
    if not kinds:
        return None
    published = {}
    for match in matches.to_dict("records") if len(matches) else []:
        if match["cell"] is not None and match["cell"]["method"] in kinds:
            published[match["cell"]["method"]] = match["reference"]["value"]
    columns = [(kind, fmt.kind_label(kind).capitalize()) for kind in ("feature", "logits")]
    header = ["Method"] + [title for _, title in columns]
    if published:
        header += [f"{title} (published)" for _, title in columns]
    label = fmt.metric_label(metric)
    table = Table("table2", "Feature map vs logits (the paper's Table 2 layout)", header,
                  caption=f"{label} mean ± std (n) and Δ vs the student baseline; rows: the distillation "
                          "term's method with what its loss distils (channel-wise or spatial, as the loss "
                          "declares it), columns: what its student location is (a classifier such as "
                          f"decode_head.conv_seg: logits; any other module: feature map); {BEST_CAPTION}.")
    table.why_empty = _table2_why_empty(kinds, columns)
    by_method = {row["method"]: row for row in cells.to_dict("records")}
    families = list(dict.fromkeys(family for family, _ in kinds.values()))
    distils = aggregate.distil_kinds(cells)
    for family in families:
        declared = {distils.get(m) for m, (f, _) in kinds.items() if f == family}
        line = [Cell(fmt.with_kind(family, declared.pop() if len(declared) == 1 else None))]
        for kind, _ in columns:
            method = next((m for m, (f, k) in kinds.items() if f == family and k == kind), None)
            row = by_method.get(method)
            line.append(_joined(row, metric) if row else Cell(fmt.MISSING))
        if published:
            for kind, _ in columns:
                method = next((m for m, (f, k) in kinds.items() if f == family and k == kind), None)
                line.append(Cell(fmt.number(published.get(method))))
        table.rows.append(line)
    return mark_best(table)


def location_table(cells: pd.DataFrame, metric: str) -> Table | None:
    """Where to distil: one row per cell when the cells differ only by where their terms sit (one
    set of term methods, no other grid axis, two or more student locations)."""
    if cells.empty or "kd_method" not in cells or "location" not in cells:
        return None
    if [a for a in _axis_columns(cells) if "student_location" not in a]:
        return None
    rows = cells.to_dict("records")
    families = {frozenset(aggregate.term_methods(row)) for row in rows}
    if len(families) != 1 or not next(iter(families)) or len({row["location"] for row in rows}) < 2:
        return None
    label = fmt.metric_label(metric)
    table = Table("ablation_location", "Ablation: where to distil",
                  ["Method", "Distils", "Student location(s)", f"{label} [Δ vs student]"],
                  caption=f"{label} mean ± std (n) [Δ vs the student baseline]; every cell distils with "
                          f"{', '.join(sorted(next(iter(families))))}; where, from the runs' student locations "
                          f"(a classifier such as decode_head.conv_seg: logits; any other module: feature map); "
                          f"{BEST_CAPTION}.")
    for row in rows:
        table.rows.append([Cell(str(row["method"])), Cell(fmt.kind_label(row.get("location_kind"))),
                           Cell(str(row["location"])), _joined(row, metric)])
    return mark_best(table)


def ablation_tables(cells: pd.DataFrame, metric: str) -> list[Table]:
    """One table per term axis (rows: its values, columns: methods); two categorical axes as a grid."""
    axes = [a for a in _axis_columns(cells) if a.startswith("axis:term.")]
    tables = []
    label = fmt.metric_label(metric)
    methods = list(dict.fromkeys(cells["method"]))
    if len(axes) == 2:
        rows_axis, cols_axis = axes
        header = [f"{fmt.axis_label(rows_axis[5:])} \\ {fmt.axis_label(cols_axis[5:])}"]
        col_values = _ordered(cells[cols_axis])
        table = Table("ablation_grid", f"Ablation: {fmt.axis_label(rows_axis[5:])} x {fmt.axis_label(cols_axis[5:])}",
                      header + [fmt.value(v) for v in col_values],
                      caption=f"{label} mean ± std (n) [Δ vs the student baseline]; method(s): "
                              f"{', '.join(map(str, methods))}; {BEST_CAPTION}.")
        first = _first_rows(cells, [rows_axis, cols_axis])
        for value in _ordered(cells[rows_axis]):
            table.rows.append([Cell(fmt.value(value))]
                              + [_joined(first.get((value, col_value)), metric) for col_value in col_values])
        tables.append(mark_best(table))
    if len(axes) != 1:
        return tables  # two axes: the grid above; more: the "All cells" table lists every combination
    axis = axes[0]
    name = fmt.axis_label(axis[5:])
    table = Table(f"ablation_{name}", f"Ablation: {name}", [name] + [str(m) for m in methods],
                  caption=f"{label} mean ± std (n) [Δ vs the student baseline]; one column per method; "
                          f"{BEST_CAPTION}.")
    first = _first_rows(cells, [axis, "method"])
    for value in _ordered(cells[axis]):
        table.rows.append([Cell(fmt.value(value))]
                          + [_joined(first.get((value, method)), metric) for method in methods])
    tables.append(mark_best(table))
    return tables


def _table2_why_empty(kinds: dict, columns: list[tuple[str, str]]) -> dict[str, str]:
    """Why a Table 2 column can be all empty: no cell distils there, or none of those has a result."""
    why = {}
    for kind, title in columns:
        where = fmt.kind_label(kind) if kind == "logits" else f"a {fmt.kind_label(kind)}"
        placed = any(k == kind for _, k in kinds.values())
        why[title] = (f"no {fmt.kind_label(kind)} cell has a complete run yet" if placed
                      else f"no cell of this study distils {where}")
        why[f"{title} (published)"] = f"no published number matches a {fmt.kind_label(kind)} cell"
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


def _ordered(column: pd.Series) -> list:
    """Axis values in study order, or ascending when they are all numbers (a sweep)."""
    values = list(dict.fromkeys(column))
    if all(fmt.is_number(v) for v in values):
        return sorted(values)
    return values


def _first_rows(cells: pd.DataFrame, columns: list[str]) -> dict[tuple, dict]:
    """The first cell row of each combination of ``columns``' values, by those values: one pass
    over the table instead of one filter per table cell."""
    first: dict[tuple, dict] = {}
    for row in cells.to_dict("records"):
        first.setdefault(tuple(row[c] for c in columns), row)
    return first


def _joined(row: dict | None, metric: str) -> Cell:
    """A table cell: mean ± std (n) [Δ] of a cell row, or the missing mark."""
    row = row or {}
    if not row.get(f"{metric}|n"):
        return Cell(fmt.MISSING)
    return Cell(f"{_stat(row, metric)} [{fmt.signed(row[f'{metric}|delta'])}]", score=_score(row, metric))


def _kd_terms(row: dict) -> str:
    """The KD terms' share; runs from before ``teacher_share`` was recorded measured the teacher's
    forward and the KD terms together, and say so."""
    text = fmt.percent(row.get("cost:kd_share|mean"))
    if text != fmt.MISSING and not row.get("cost:teacher_share|n") and row.get("cost:kd_share|n"):
        text += " (with the teacher forward)"
    return text


def cost_table(cells: pd.DataFrame, baselines: pd.DataFrame, teachers: pd.DataFrame) -> Table:
    """Training cost per method: seconds per iteration, slowdown, peak memory, and the shares of the
    step spent in the teacher's forward and in the KD terms."""
    table = Table("cost", "Training cost", ["Method", "s / iteration", "vs student", "peak memory", "teacher forward",
                                            "KD terms", "runs timed"],
                  caption="From final.json's cost, mean over complete runs. Teacher forward: the teacher's forward "
                          "pass's share of the training step; KD terms: the share of the distillation losses and "
                          "adapters, forward and backward. Runs that did not record the teacher's share (older "
                          f"results) show {fmt.MISSING} there, and their KD share includes the teacher forward. "
                          "Peak memory is the GPU's peak allocation on CUDA, the process's max RSS on CPU (the kind "
                          "is given).")
    axes = _axis_columns(cells)

    def line(name: str, row: dict, slowdown) -> list[Cell]:
        kind = f" ({row['memory_kind']})" if row.get("memory_kind") else ""
        return [Cell(name), Cell(fmt.seconds(row.get("cost:seconds_per_iter|mean"))), Cell(fmt.ratio(slowdown)),
                Cell(fmt.megabytes(row.get("cost:peak_memory_mb|mean")) + kind),
                Cell(fmt.percent(row.get("cost:teacher_share|mean"))), Cell(_kd_terms(row)),
                Cell(fmt.integer(row.get("cost:seconds_per_iter|n")))]

    for row in teachers.to_dict("records") if len(teachers) else []:
        table.rows.append(line(group_label("teacher", row, len(teachers)) + " (training)", row, None))
    for row in baselines.to_dict("records") if len(baselines) else []:
        table.rows.append(line(group_label("student", row, len(baselines)), row, 1.0))
    for row in cells.to_dict("records") if len(cells) else []:
        table.rows.append(line(setting(row, axes), row, row.get("slowdown")))
    return table


def reference_table(matches: pd.DataFrame, metric: str) -> Table | None:
    """Published numbers beside the measured ones, with their source."""
    if matches.empty:
        return None
    table = Table("references", "Published vs measured",
                  ["Method", "Location", "Student", "Published", "Published (T)", "Published (S)", "Measured",
                   "Measured (T)", "Measured (S)", "Source", "Comparability tag", "Measured 95% interval",
                   "Published vs measured", "Starting point"],
                  caption="Published numbers from studies/references/ (typed from the papers, with their source); "
                          "measured: mean ± std (n) from this study's runs. Settings differ where the study header "
                          "says so. " + REFERENCE_CAPTION)
    for match in matches.to_dict("records"):
        ref, cell = match["reference"], match["cell"] or {}
        against = aggregate.published_vs_measured(ref, match["cell"], metric)
        table.rows.append([
            Cell(f"{ref['method']} → {cell['method']}" if cell else str(ref["method"])),
            Cell(fmt.value(ref.get("location")) if isinstance(ref.get("location"), str) else fmt.MISSING),
            Cell(fmt.value(ref.get("student")) if isinstance(ref.get("student"), str) else fmt.MISSING),
            Cell(fmt.number(ref.get("value"))), Cell(fmt.number(ref.get("teacher_value"))),
            Cell(fmt.number(ref.get("student_value"))),
            Cell(_stat(cell, metric) if cell else "not measured"),
            Cell(_stat(cell, f"teacher|{metric}") if cell else fmt.MISSING),
            Cell(_stat(cell, f"baseline|{metric}") if cell else fmt.MISSING),
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
                          + [Cell(fmt.seconds(row.get("cost:seconds_per_iter")))])
    return table


def recipe_table(cells: pd.DataFrame, baselines: pd.DataFrame, teachers: pd.DataFrame) -> Table | None:
    """What each group of runs trained with, from their recipe cards (final.json ``recipe``); None
    when no complete run recorded one."""
    columns = [c for frame in (cells, baselines, teachers) for c in frame.columns if c.startswith("recipe:")]
    if not columns:
        return None
    table = Table("recipe", "Recipe per cell",
                  ["Runs of", "batch (per process x processes x nodes)", "iterations (epochs)", "crop", "pipeline",
                   "optimizer, lr, schedule", "teacher (checkpoint, mode)", "precision"],
                  caption="From the recipe card of each group's first complete run (final.json recipe). Epochs: the "
                          "iterations times the global batch over the training images the run found.")

    def line(name: str, row: dict) -> list[Cell]:
        def get(key):
            value = row.get(f"recipe:{key}")
            return None if value is None or (isinstance(value, float) and math.isnan(value)) else value

        batch = (f"{fmt.value(get('global_batch'))} ({fmt.value(get('per_process_batch'))} x "
                 f"{fmt.value(get('processes'))} x {fmt.value(get('nodes'))})")
        iterations = fmt.value(get("iterations")) + (f" ({get('epochs')})" if get("epochs") is not None else "")
        schedule = f"{fmt.value(get('optimizer'))}, {fmt.value(get('lr'))}, {fmt.value(get('lr_schedule'))}"
        teacher = (f"{get('teacher_checkpoint')}, {get('teacher_mode')}" if get("teacher_checkpoint") is not None
                   else fmt.MISSING)
        return [Cell(name), Cell(batch), Cell(iterations), Cell(fmt.value(get("crop"))),
                Cell(fmt.value(get("pipeline"))), Cell(schedule), Cell(teacher), Cell(fmt.value(get("precision")))]

    for row in teachers.to_dict("records") if len(teachers) else []:
        table.rows.append(line(group_label("teacher", row, len(teachers)), row))
    for row in baselines.to_dict("records") if len(baselines) else []:
        table.rows.append(line(group_label("student", row, len(baselines)), row))
    axes = _axis_columns(cells) if len(cells) else []
    for row in cells.to_dict("records") if len(cells) else []:
        table.rows.append(line(setting(row, axes), row))
    return table
