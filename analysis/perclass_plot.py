"""The per-class figure: each cell's per-class Δ against its student baseline (analysis.perclass),
the channel-wise cells (CWD) beside the spatial ones, as their losses declare what they distil
(``CellRecord.group.facts.distils``), never from a method's name."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd

from analysis import format as fmt
from analysis.perclass import PerClass, shown_classes
from analysis.plots import Figure
from analysis.records import Statistics
from kdbench.losses.params import CHANNEL_WISE, SPATIAL

KINDS = (CHANNEL_WISE, SPATIAL)
SHADES = {CHANNEL_WISE: ("#2b6cb0", "#63b3ed", "#1a365d", "#90cdf4"), SPATIAL: ("#dd6b20", "#f6ad55", "#7b341e",
                                                                              "#fbd38d")}


def points(found: PerClass, task: str) -> pd.DataFrame:
    """What the figure draws: one row per (channel-wise or spatial cell, shown class) with a Δ."""
    rows = []
    for cell in found.cells:
        if cell.distils not in KINDS:
            continue
        for i in shown_classes(found, task):
            delta = cell.deltas[i]
            if fmt.is_number(delta.delta):
                rows.append({"cell": cell.label, "kind": cell.distils, "class": found.classes[i],
                             "delta": delta.delta, "low": delta.low, "high": delta.high})
    return pd.DataFrame(rows, columns=["cell", "kind", "class", "delta", "low", "high"])


def _draw(data: pd.DataFrame, classes: list[str], measure: str):
    import matplotlib.pyplot as plt

    cells = list(dict.fromkeys(data.sort_values("kind", kind="stable")["cell"]))
    width = 0.8 / max(len(cells), 1)
    figure, axis = plt.subplots(figsize=(max(6.0, 0.9 * len(classes) * max(1, len(cells)) ** 0.5 + 2), 4.2))
    where = {name: i for i, name in enumerate(classes)}
    used = {kind: 0 for kind in KINDS}
    for offset, cell in enumerate(cells):
        part = data[data["cell"] == cell]
        kind = part["kind"].iloc[0]
        color = SHADES[kind][used[kind] % len(SHADES[kind])]
        used[kind] += 1
        x = np.array([where[c] for c in part["class"]]) - 0.4 + width * (offset + 0.5)
        delta = part["delta"].to_numpy(dtype=float)
        error = np.vstack([delta - part["low"].to_numpy(dtype=float), part["high"].to_numpy(dtype=float) - delta])
        axis.bar(x, delta, width=width * 0.95, color=color, label=f"{cell} ({kind})",
                 yerr=np.where(np.isfinite(error), error, 0), capsize=2)
    axis.axhline(0, color="#1a202c", linewidth=0.8)
    rotate = len(classes) > 6
    axis.set_xticks(range(len(classes)), classes, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    axis.set_ylabel(f"Δ {measure} vs student baseline")
    axis.legend(fontsize="small")
    return figure


def figures(found: Statistics) -> list[Figure]:
    """The per-class Δ figure of the report's first measure (IoU, AP), or none where no
    channel-wise or spatial cell has a per-class Δ."""
    if not found.per_class:
        return []
    first = found.per_class[0]
    data = points(first, found.task)
    if data.empty:
        return []
    classes = [first.classes[i] for i in shown_classes(first, found.task)]
    present = [kind for kind in KINDS if (data["kind"] == kind).any()]
    caption = (f"Each bar: a cell's mean {first.measure} minus its student baseline's on one class, with its 95% "
               "interval (the per-class Δ table); blue: cells whose losses distil channel-wise (CWD), orange: "
               "spatial ones, as the losses declare it. "
               + ("" if len(present) == 2 else f"This study has only {present[0]} cells. "))
    return [Figure("per_class_delta", f"Per-class Δ {first.measure}: channel-wise vs spatial cells", caption,
                   _png(_draw(data, classes, first.measure)), data)]


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()
