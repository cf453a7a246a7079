"""Report figures (seaborn on matplotlib's Agg backend), each returned as PNG bytes.

Error bars are the sample standard deviation over seeds; single runs are drawn as dots, so the
spread is always visible. Only complete runs with a finite metric enter a bar, a mean or a point;
the training curves also draw runs without a result, dashed and apart from the mean. A ``Figure``
keeps the data it was drawn from (``data``) where a check needs it.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
# Labels are names from specs and results: drawn as written, never parsed as mathtext (a pair of "$"
# would be typeset as math, and "$^$" would stop every figure with a ValueError).
matplotlib.rcParams["text.parse_math"] = False

import matplotlib.container  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis import aggregate, chance  # noqa: E402
from analysis import format as fmt  # noqa: E402
from analysis.collect import axis_column, axis_path  # noqa: E402
from analysis.records import Statistics  # noqa: E402
from kdbench.losses.params import CHANNEL_WISE, SPATIAL  # noqa: E402

BASELINE = "student (no KD)"
MAX_BARS = 30     # a bar chart of more cells than this shows the best ones (every cell is in the tables)
MAX_LABELS = 12   # the gain-vs-cost figure names at most this many points (the largest gains)
MAX_DASHED = 12   # the training curves draw at most this many runs without a result, one dashed line each


NORM_AXIS, DIVERGENCE_AXIS = axis_column("term.params.norm"), axis_column("term.params.divergence")


@dataclass
class Figure:
    key: str          # file name stem
    title: str
    caption: str
    png: bytes
    data: pd.DataFrame | None = field(default=None, repr=False)  # what was drawn (for checks), when kept


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # long method names: a tight layout that cannot fit is still fine
        warnings.simplefilter("ignore", UserWarning)
        figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def _students(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The cell and student-baseline runs that can be drawn (complete, finite metric), each with its
    ``label`` and ``series``. The figures take it as ``students`` where all_figures has built it
    once; called alone, they build it."""
    part = frame[frame["kind"].isin(["cell", "student_baseline"]) & aggregate.usable(frame, metric)].copy()
    axes = [a for a in aggregate.axes_of(frame) if a != "method"]
    labels = _with_settings(part, [str(m) for m in part["method"]], axes)
    part["label"] = [label if kind == "cell" else BASELINE for kind, label in zip(part["kind"].tolist(), labels)]
    part["series"] = [m if isinstance(m, str) else BASELINE for m in part["method"]]
    return part


def _with_settings(rows: pd.DataFrame, heads: list[str], axes: list[str]) -> list[str]:
    """Each row's ``head`` followed by its values of ``axes`` (``cwd, tau 4, weight 3``); an axis a row
    lacks (another method's own axis) is left out. Column by column: rows of arrow strings are slow."""
    columns = {a: rows[a].tolist() for a in axes}
    return [", ".join([head] + [f"{fmt.axis_label(axis_path(a))} {fmt.axis_value(a, columns[a][i])}"
                                for a in axes if not pd.isna(columns[a][i])])
            for i, head in enumerate(heads)]


def _reference_lines(axis, frame: pd.DataFrame, metric: str) -> None:
    """The student baseline's mean ± std as a band, the teacher's mean as a dashed line."""
    for kind, style, name in (("student_baseline", ":", BASELINE), ("teacher", "--", "teacher")):
        part = frame[(frame["kind"] == kind) & aggregate.usable(frame, metric)]
        mean, std, n = aggregate.stats(part[metric])
        if n:
            axis.axhline(mean, linestyle=style, color="grey", label=f"{name} ({fmt.mean_std(mean, std, n)})")
            if n > 1:
                axis.axhspan(mean - std, mean + std, color="grey", alpha=0.12)


def method_bars(frame: pd.DataFrame, metric: str, students: pd.DataFrame | None = None) -> Figure | None:
    data = _students(frame, metric) if students is None else students
    if data.empty:
        return None
    order = [BASELINE] + list(dict.fromkeys(data.loc[data["kind"] == "cell", "label"]))
    labels = set(data["label"])
    order = [o for o in order if o in labels]
    cells = len(order) - (BASELINE in order)
    if cells > MAX_BARS:  # a readable figure: the best cells by mean, in the study's order
        means = data[data["kind"] == "cell"].groupby("label", sort=False)[metric].mean()
        best = set(means.sort_values(ascending=False, kind="stable").index[:MAX_BARS])
        order = [o for o in order if o == BASELINE or o in best]
        data = data[data["label"].isin(order)]
    figure, axis = plt.subplots(figsize=(min(16, max(5, 0.9 * len(order) + 2)), 4.5))
    sns.barplot(data=data, x="label", y=metric, order=order, errorbar="sd", capsize=0.2, color="#8fb3d9", ax=axis)
    sns.stripplot(data=data, x="label", y=metric, order=order, color="black", size=4, ax=axis)
    _reference_lines(axis, frame[frame["kind"] == "teacher"], metric)
    level = chance.mean_level(frame, metric)
    if np.isfinite(level):
        axis.axhline(level, linestyle="-.", color="#c53030", label=f"{chance.LABEL} ({fmt.number(level)})")
    axis.set_xlabel("")
    axis.set_ylabel(fmt.metric_label(metric))
    axis.tick_params(axis="x", rotation=30 if len(order) < 8 else 60)
    for label in axis.get_xticklabels():
        label.set_horizontalalignment("right")
    if axis.get_legend_handles_labels()[0]:   # beside the axes: inside, it hides the last bars
        axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    label = fmt.metric_label(metric)
    shown = (f" The {MAX_BARS} cells with the highest mean of {cells} are shown; every cell is in the tables."
             if cells > MAX_BARS else "")
    return Figure("methods", f"{label} per method",
                  "Bars: mean over seeds, error bars: std; dots: single runs; dashed line: the teacher"
                  + ("; dash-dotted red line: chance, what a constant predictor scores" if np.isfinite(level) else "")
                  + "." + shown,
                  _png(figure))


def sweep_axes(cells: pd.DataFrame) -> list[str]:
    """The term axes (tau, weight) whose values in ``cells`` (rows of one kind, cell) are all finite
    numbers, two or more of them: the axes a sweep figure plots a metric against."""
    found = []
    for column in [c for c in cells.columns if c.startswith(axis_column("term."))]:
        values = pd.to_numeric(cells[column][cells[column].notna()], errors="coerce")  # a method's own axis: its
        if len(values) and np.isfinite(values.to_numpy(dtype=float)).all() and values.nunique() > 1:   # cells
            found.append(column)
    return found


def sweeps(frame: pd.DataFrame, metric: str, students: pd.DataFrame | None = None) -> list[Figure]:
    """One figure per numeric term axis (tau, weight): metric vs value, one line per method and
    setting of the other swept axes."""
    figures = []
    cells = _students(frame, metric) if students is None else students
    cells = cells[cells["kind"] == "cell"]
    axes = sweep_axes(cells)
    for column in axes:
        swept = cells[cells[column].notna()]   # the cells that have the axis (all, for a study-level one)
        values = pd.to_numeric(swept[column], errors="coerce")
        data = swept.assign(**{column: values, "series": _with_settings(swept, swept["series"].tolist(),
                                                                     [a for a in axes if a != column])})
        figure, axis = plt.subplots(figsize=(6, 4))
        sns.lineplot(data=data, x=column, y=metric, hue="series", errorbar="sd", err_style="bars",
                     marker="o", ax=axis)
        sns.scatterplot(data=data, x=column, y=metric, hue="series", legend=False, alpha=0.4, s=15, ax=axis)
        _reference_lines(axis, frame, metric)
        name = fmt.axis_label(axis_path(column))
        key = "sweep_" + re.sub(r"[^A-Za-z0-9_.-]", "_", name)  # it names a PNG file beside README.md
        if values.min() > 0 and values.max() / values.min() >= 20:  # weights spanning decades
            axis.set_xscale("log")
            axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # 10, not 10^1
        axis.set_xlabel(name)
        axis.set_ylabel(fmt.metric_label(metric))
        axis.legend(fontsize=8)
        figures.append(Figure(key, f"{fmt.metric_label(metric)} vs {name}",
                              "Mean over seeds with std error bars, single runs as faint dots; the student "
                              "baseline as a dotted line with its ± std band.", _png(figure),
                              data[[column, metric, "series"]]))
    return figures


def curve_data(curve_frame: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A metric's evaluations split in two: those of complete runs (the mean line and its band are
    built from these alone) and those of every other run (failed, diverged, ... up to where they
    stopped), which are drawn one by one, dashed, and never averaged."""
    data = curve_frame[curve_frame["metric"] == metric] if len(curve_frame) else curve_frame
    if data.empty:
        return data, data
    data = data.assign(method=[BASELINE if m == "student baseline" else m for m in data["method"]])
    complete = data["status"] == "complete"
    return data[complete], data[~complete]


def curves(curve_frame: pd.DataFrame, metric: str) -> Figure | None:
    """Validation metric vs iteration per method (mean over complete runs' seeds, std band) from
    metrics.jsonl; runs without a result as dashed single lines, outside the mean."""
    averaged, others = curve_data(curve_frame, metric)
    if averaged.empty and others.empty:
        return None
    methods = list(dict.fromkeys([*averaged["method"], *others["method"]]))
    palette = dict(zip(methods, sns.color_palette(n_colors=len(methods))))
    figure, axis = plt.subplots(figsize=(6.5, 4))
    if len(averaged):
        few = averaged["iter"].nunique() < 3  # a single evaluation per run: error bars, not a band
        sns.lineplot(data=averaged, x="iter", y="value", hue="method", palette=palette, errorbar="sd", marker="o",
                     err_style="bars" if few else "band", ax=axis)
    runs = list(others.groupby(["run_id", "method", "seed", "status"], sort=False, dropna=False))
    for (_, method, seed, status), run in runs[:MAX_DASHED]:
        run = run.sort_values("iter")
        axis.plot(run["iter"], run["value"], linestyle="--", marker="x", linewidth=1, color=palette[method],
                  alpha=0.8, label=f"{method}, seed {fmt.integer(seed)} ({status}, not averaged)")
    axis.set_xlabel("iteration")
    axis.set_ylabel(fmt.metric_label(metric))
    axis.legend(fontsize=7)
    dropped = len(runs)
    note = (f" Dashed: {fmt.count_noun(dropped, 'run')} without a result (failed, diverged, ...), each up to its "
            "last evaluation, not in the mean" if dropped else "")
    if dropped > MAX_DASHED:
        note += f" (the first {MAX_DASHED} drawn; every such run is listed under Runs without a result)"
    note += "." if dropped else ""
    return Figure("curves", f"Validation {fmt.metric_label(metric)} during training",
                  "From each run's metrics.jsonl (every evaluation); line: mean over the complete runs' seeds, "
                  "band: std." + note, _png(figure))


def value_limits(values) -> tuple[float, float] | None:
    """Limits for a value axis that would hide differences if it started at 0: every value positive
    and their spread under a quarter of the largest (say 70.1 to 71.3 mIoU). Then the axis spans
    the values with a margin; else None (the axis starts at 0, bars keep their full length)."""
    array = np.asarray([v for v in values if v is not None], dtype=float)
    array = array[np.isfinite(array)]
    if not array.size:
        return None
    low, high = float(array.min()), float(array.max())
    if low <= 0 or high - low >= 0.25 * high:
        return None
    margin = max(0.15 * (high - low), 0.005 * high)
    return max(0.0, low - margin), high + 2 * margin  # room above for the numbers written on the bars


def _bars(data: pd.DataFrame, students: pd.DataFrame, metric: str, x: str, hue: str, order: list, hue_order: list,
          palette, title: str, key: str, grouping: str, xlabel: str) -> Figure:
    """Bars of the mean over seeds with std error bars, one dot per run, each bar's mean written on
    it, the student baseline's mean (from ``students``' baseline rows) as a dotted line; the value
    axis zoomed where 0 would hide the differences. The caption says all that around ``grouping``,
    the sentence that says how the bars are grouped and coloured."""
    baseline = students[students["kind"] == "student_baseline"]
    figure, axis = plt.subplots(figsize=(max(6, 1.2 * len(order) * max(1, len(hue_order)) / 2 + 3), 4.5))
    sns.barplot(data=data, x=x, y=metric, hue=hue, order=order, hue_order=hue_order, palette=palette,
                errorbar="sd", capsize=0.15, ax=axis)
    sns.stripplot(data=data, x=x, y=metric, hue=hue, order=order, hue_order=hue_order, dodge=True,
                  palette={h: "black" for h in hue_order}, size=3, legend=False, ax=axis)
    spread = data.groupby([x, hue], sort=False)[metric].agg(["mean", "std"]).reset_index()
    bars = [c for c in axis.containers if isinstance(c, matplotlib.container.BarContainer)]
    for container, name in zip(bars, hue_order):
        stats = spread[spread[hue] == name].set_index(x)
        for bar, value in zip(container, order):
            if bar is None or value not in stats.index:
                continue
            mean, std = stats.loc[value, "mean"], stats.loc[value, "std"]
            axis.annotate(fmt.number(mean), (bar.get_x() + bar.get_width() / 2, mean + (std if std == std else 0)),
                          xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=7,
                          rotation=90)
    mean, std, n = aggregate.stats(baseline[metric]) if len(baseline) else (np.nan, np.nan, 0)
    if n:
        axis.axhline(mean, linestyle=":", color="grey", label=f"{BASELINE} ({fmt.mean_std(mean, std, n)})")
    shown = list(data[metric]) + list(spread["mean"] + spread["std"].fillna(0)) + list(
        spread["mean"] - spread["std"].fillna(0)) + ([mean] if n else [])
    limits = value_limits(shown)
    if limits:
        axis.set_ylim(*limits)
    elif np.isfinite(np.nanmax(shown)) and np.nanmax(shown) > 0:
        axis.set_ylim(top=1.12 * np.nanmax(shown))  # room above for the numbers written on the bars
    axis.set_xlabel(xlabel)
    axis.set_ylabel(fmt.metric_label(metric))
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    zoom = (f" The {fmt.metric_label(metric)} axis starts at {fmt.number(limits[0])}, not 0, so that the differences "
            "show; the numbers on the bars are the means." if limits else " The numbers on the bars are the means.")
    caption = (f"Bars: mean over seeds, error bars: std, dots: single runs; {grouping}; dotted line: the student "
               "baseline.")
    return Figure(key, title, caption + zoom, _png(figure), data)


def norm_divergence_bars(frame: pd.DataFrame, metric: str, students: pd.DataFrame | None = None) -> Figure | None:
    """The paper's normalisation x divergence ablation: bars per normalisation (channel, spatial,
    channel_mean, none), one colour per divergence (kl, mse), error bars the seeds' std."""
    if NORM_AXIS not in frame or DIVERGENCE_AXIS not in frame:
        return None
    students = _students(frame, metric) if students is None else students
    data = students[students["kind"] == "cell"]
    if data.empty:
        return None
    data = data.assign(norm=data[NORM_AXIS].map(fmt.value), divergence=data[DIVERGENCE_AXIS].map(fmt.value))
    cells = frame[frame["kind"] == "cell"]
    order = [fmt.value(v) for v in dict.fromkeys(cells[NORM_AXIS])]
    hue_order = [fmt.value(v) for v in dict.fromkeys(cells[DIVERGENCE_AXIS])]
    order = [o for o in order if o in set(data["norm"])]
    hue_order = [h for h in hue_order if h in set(data["divergence"])]
    palette = dict(zip(hue_order, sns.color_palette("Set2", n_colors=len(hue_order))))
    return _bars(data, students, metric, "norm", "divergence", order, hue_order, palette,
                 f"{fmt.metric_label(metric)}: normalisation x divergence", "norm_divergence_bars",
                 "grouped by normalisation (channel: over positions, per channel, as CWD; spatial: over channels, "
                 "per position), coloured by divergence", "normalisation")


def location_bars(frame: pd.DataFrame, found: Statistics, students: pd.DataFrame | None = None) -> Figure | None:
    """The paper's Table 2 as bars: grouped by where the method distils (feature map, logits), one
    bar per method, channel-wise ones (warm colours) apart from spatial ones (cool colours). Which
    is which comes from the loss each term uses (its declared kind), never from the method's name."""
    placed = aggregate.table2_kinds(found.cells, found.axes)
    if not placed:
        return None
    metric = found.metric
    students = _students(frame, metric) if students is None else students
    data = students[students["method"].isin(list(placed))]
    if data.empty:
        return None
    kinds = aggregate.distil_kinds(found.cells)
    labels = {method: fmt.with_kind(family, kinds.get(method)) for method, (family, _) in placed.items()}
    data = data.assign(where=[fmt.kind_label(placed[m][1]) for m in data["method"]],
                       family=[labels[m] for m in data["method"]])
    order = [fmt.kind_label(kind) for kind in ("feature", "logits") if fmt.kind_label(kind) in set(data["where"])]
    families = [f for f in dict.fromkeys(labels.values()) if f in set(data["family"])]
    channel = [labels[m] for m in placed if kinds.get(m) == CHANNEL_WISE]
    spatial = [labels[m] for m in placed if kinds.get(m) == SPATIAL]
    channel = [f for f in families if f in channel]
    spatial = [f for f in families if f in spatial]
    other = [f for f in families if f not in channel and f not in spatial]
    hue_order = spatial + other + channel
    palette = {**dict(zip(spatial, sns.color_palette("Blues_d", n_colors=max(1, len(spatial))))),
               **dict(zip(other, sns.color_palette("Greys", n_colors=max(1, len(other))))),
               **dict(zip(channel, sns.color_palette("Reds_r", n_colors=max(3, len(channel))))), }
    return _bars(data, students, metric, "where", "family", order, hue_order, palette,
                 f"{fmt.metric_label(metric)}: spatial vs channel-wise distillation", "location_bars",
                 "grouped by where the method distils (from its student location), blue: spatial, red: "
                 "channel-wise, grey: neither (as each term's loss declares its kind, never from the method's "
                 "name)", "distilled location")


def gain_cost_points(found: Statistics) -> pd.DataFrame:
    """The points of the gain-vs-cost figure: the student baseline at (1, 0), then every cell with
    a finite gain and slowdown: x = its seconds per iteration over its baseline's, y = its mean gain
    over that baseline, ``std`` the cell's seed spread (the baseline's own, on the baseline point)."""
    columns = ["label", "kind", "slowdown", "delta", "std"]
    metric = found.metric
    data = [cell for cell in found.cells if np.isfinite(cell.delta(metric)) and np.isfinite(cell.slowdown)]
    if not data:
        return pd.DataFrame(columns=columns)
    baseline_std = list(dict.fromkeys(cell.baseline.metrics[metric].std for cell in data))  # each has a baseline
    rows = [{"label": BASELINE, "kind": "baseline", "slowdown": 1.0, "delta": 0.0,
             "std": float(baseline_std[0]) if len(baseline_std) == 1 else np.nan}]
    for cell in data:
        rows.append({"label": _point_label(cell), "kind": "cell", "slowdown": float(cell.slowdown),
                     "delta": float(cell.delta(metric)), "std": float(cell.measured(metric).std)})
    return pd.DataFrame(rows, columns=columns)


def _point_label(cell) -> str:
    """A cell's point label: its method and axis values (``cwd_logits, 4, 3``)."""
    return ", ".join([str(cell.method)] + [fmt.axis_value(path, value) for path, value in cell.axes.items()])


def gain_vs_cost(found: Statistics) -> Figure | None:
    """Δ vs the student baseline against the slowdown vs the student baseline, one point per cell,
    the baseline itself at (1, 0)."""
    metric = found.metric
    points = gain_cost_points(found)
    cells = points[points["kind"] == "cell"]
    if cells.empty:
        return None
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.errorbar(cells["slowdown"], cells["delta"], yerr=cells["std"].fillna(0), fmt="o", color="#2b6cb0",
                  ecolor="grey", capsize=3, label="distilled cell (error bar: its std over seeds)")
    base = points[points["kind"] == "baseline"].iloc[0]
    axis.errorbar([1.0], [0.0], yerr=[0.0 if np.isnan(base["std"]) else base["std"]], fmt="s", color="black",
                  ecolor="black", capsize=3, label=f"{BASELINE} (1x, ±0)")
    _label_largest_gains(axis, cells, "slowdown")
    axis.axhline(0, color="grey", linestyle=":")
    axis.axvline(1, color="grey", linestyle=":")
    axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}x"))
    right = max(float(cells["slowdown"].max()), 1.0)
    left = min(float(cells["slowdown"].min()), 1.0)
    axis.set_xlim(left - 0.08 * max(right - left, 0.5), right + 0.15 * max(right - left, 0.5))
    axis.set_xlabel("slowdown vs the student baseline (s / iteration ÷ the baseline's)")
    axis.set_ylabel(f"Δ {fmt.metric_label(metric)} vs student")
    axis.legend(fontsize=7, loc="best")
    return Figure("gain_vs_cost", "Gain vs training cost",
                  "Each point is a cell: its mean gain over the student baseline (error bar: the cell's std over "
                  "seeds) against its training slowdown (mean seconds per iteration over the baseline's); the "
                  "student baseline sits at (1x, 0)."
                  + (f" The {MAX_LABELS} largest gains of {len(cells)} cells are labelled." if len(cells) > MAX_LABELS
                     else ""), _png(figure), points)


def _label_largest_gains(axis, cells: pd.DataFrame, x: str) -> None:
    """Each cell's label beside its point (``x``, ``delta``): the MAX_LABELS largest gains only, in a
    crowded figure."""
    named = cells.nlargest(MAX_LABELS, "delta", keep="first") if len(cells) > MAX_LABELS else cells
    for row in named.to_dict("records"):
        axis.annotate(row["label"], (row[x], row["delta"]), fontsize=7, xytext=(4, 4), textcoords="offset points")


def all_figures(frame: pd.DataFrame, found: Statistics, curve_frame: pd.DataFrame) -> list[Figure]:
    sns.set_theme(style="whitegrid", context="notebook")
    metric = found.metric
    students = _students(frame, metric)  # the student runs of every figure below, labelled once
    figures = [method_bars(frame, metric, students), norm_divergence_bars(frame, metric, students),
               location_bars(frame, found, students), *sweeps(frame, metric, students),
               curves(curve_frame, metric), gain_vs_cost(found), budget_front(found)]
    return [f for f in figures if f is not None]


# -- equal budgets (kdbench.budget) ---------------------------------------------------------------
EQUAL_BUDGET = "student, equal budget"


def pareto_front(costs, gains) -> list[int]:
    """The indices of the points on the Pareto front, cheapest first: those that no other point
    beats, i.e. none costs as little or less and gains as much or more, and is better in one."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -gains[i]))
    front, best = [], -np.inf
    for index in order:
        if gains[index] > best:
            front.append(index)
            best = gains[index]
    return front


def budget_points(found: Statistics) -> pd.DataFrame:
    """The points of the gain-vs-extra-cost figure: the student baseline at (1, 0), each
    equal-budget baseline and each cell with a finite gain and cost (x: mean training seconds over
    the student baseline's; y: Δ vs the student baseline), ``front``: on the Pareto front."""
    columns = ["label", "kind", "cost", "delta", "std", "front"]
    metric = found.metric
    rows = [{"label": BASELINE, "kind": "baseline", "cost": 1.0, "delta": 0.0, "std": np.nan}]
    for twin in found.twins:
        rows.append({"label": EQUAL_BUDGET, "kind": "equal budget", "cost": twin.extra_cost,
                     "delta": twin.test.delta, "std": twin.group.metrics[metric].std})
    for cell in found.cells:
        rows.append({"label": _point_label(cell), "kind": "cell", "cost": cell.extra_cost,
                     "delta": cell.delta(metric), "std": cell.measured(metric).std})
    points = pd.DataFrame(rows, columns=columns[:-1])
    points = points[np.isfinite(points["cost"].astype(float)) & np.isfinite(points["delta"].astype(float))]
    points = points.reset_index(drop=True).astype({"cost": float, "delta": float, "std": float})
    on_front = set(pareto_front(list(points["cost"]), list(points["delta"])))
    points["front"] = [i in on_front for i in range(len(points))]
    return points[columns]


def budget_front(found: Statistics) -> Figure | None:
    """Δ vs the student baseline against the extra training time, with the Pareto front and the
    equal-budget baselines: a method below the front's line at its cost is beaten by a cheaper one."""
    metric = found.metric
    points = budget_points(found)
    if not found.twins or not (points["kind"] == "cell").any():
        return None
    figure, axis = plt.subplots(figsize=(6, 4))
    front = points[points["front"]].sort_values("cost")
    reach = max(float(points["cost"].max()), float(front["cost"].iloc[-1]))   # the best gain holds to the right
    axis.step([*front["cost"], reach], [*front["delta"], front["delta"].iloc[-1]], where="post", color="#dd6b20",
              label="Pareto front")
    styles = {"cell": ("o", "#2b6cb0", "distilled cell (error bar: its std over seeds)"),
              "equal budget": ("D", "#38a169", f"{EQUAL_BUDGET} (trained as long as the slowest cell)"),
              "baseline": ("s", "black", f"{BASELINE} (1x, ±0)")}
    for kind, (marker, colour, label) in styles.items():
        part = points[points["kind"] == kind]
        if len(part):
            axis.errorbar(part["cost"], part["delta"], yerr=part["std"].fillna(0), fmt=marker, color=colour,
                          ecolor="grey", capsize=3, label=label)
    cells = points[points["kind"] == "cell"]
    _label_largest_gains(axis, cells, "cost")
    axis.axhline(0, color="grey", linestyle=":")
    axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}x"))
    axis.set_xlabel("training time ÷ the student baseline's (iterations x s / iteration)")
    axis.set_ylabel(f"Δ {fmt.metric_label(metric)} vs student")
    axis.legend(fontsize=7, loc="best")
    return Figure("budget_front", "Gain vs extra training cost, with the equal-budget baseline",
                  "Each point's mean gain over the student baseline against its training time over the baseline's "
                  "(its iterations times its median seconds per iteration, from final.json). The green diamond is "
                  "the student trained as long as the slowest distilled cell; the orange line is the Pareto front: "
                  "a point below it is beaten by one that costs no more. Every point is drawn at its measured time: "
                  "where the machine ran at another speed than when the baseline was timed, the green diamond sits "
                  "off the budget it was given (the table \"Where each equal budget comes from\").",
                  _png(figure), points)
