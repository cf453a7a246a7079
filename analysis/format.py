"""The only place numbers become strings: every table and sentence in a report goes through here.

Missing values (NaN, None, no runs) are shown as an em dash; a value is never rounded before it
is stored, only when it is shown.
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"
DIGITS = 2  # metrics are percentages (mIoU, mAP): two decimals, as the paper and MMRazor print them


def is_number(value: Any) -> bool:
    """A finite real number (bools, None, NaN and Inf are not)."""
    if value is None or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def number(value: Any, digits: int = DIGITS) -> str:
    return f"{float(value):.{digits}f}" if is_number(value) else MISSING


def signed(value: Any, digits: int = DIGITS) -> str:
    """A difference, always with its sign: ``+1.23``, ``-0.40``."""
    return f"{float(value):+.{digits}f}" if is_number(value) else MISSING


def mean_std(mean: Any, std: Any, n: Any, digits: int = DIGITS, with_n: bool = True) -> str:
    """``72.41 ± 0.35 (n=3)``; a single run has no spread: ``72.41 (n=1)``; no run: an em dash."""
    count = int(n) if is_number(n) else 0
    if count == 0 or not is_number(mean):
        return MISSING
    text = number(mean, digits)
    if count > 1 and is_number(std):
        text += f" ± {float(std):.{digits}f}"
    return text + (f" (n={count})" if with_n else "")


def interval(low: Any, high: Any, digits: int = DIGITS, sign: bool = False) -> str:
    """A 95% interval: ``[71.53, 73.29]``, or ``[+0.12, +1.40]`` for a difference (``sign``)."""
    if not (is_number(low) and is_number(high)):
        return MISSING
    show = signed if sign else number
    return f"[{show(low, digits)}, {show(high, digits)}]"


def p_value(value: Any) -> str:
    """A p-value: ``0.012``, ``< 0.001``."""
    if not is_number(value):
        return MISSING
    return "< 0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def seed_count(value: Any, beyond: int) -> str:
    """Seeds needed: ``10``; infinite (more than ``beyond``, the most ever searched): ``> 10000``."""
    if isinstance(value, float) and math.isinf(value):
        return f"> {beyond}"
    return integer(value)


def integer(value: Any) -> str:
    return str(int(value)) if is_number(value) else MISSING


def seconds(value: Any) -> str:
    """Seconds per iteration, three significant digits: ``0.0751 s``."""
    return f"{float(value):.3g} s" if is_number(value) else MISSING


def ratio(value: Any) -> str:
    """A slowdown factor: ``1.62x``."""
    return f"{float(value):.2f}x" if is_number(value) else MISSING


def percent(value: Any) -> str:
    """A fraction in [0, 1] as a percentage: ``38.5%``."""
    return f"{100 * float(value):.1f}%" if is_number(value) else MISSING


def percent_interval(low: Any, high: Any) -> str:
    """An interval of fractions as percentages: ``[39.6%, 65.7%]``."""
    if not (is_number(low) and is_number(high)):
        return MISSING
    return f"[{percent(low)}, {percent(high)}]"


def megabytes(value: Any) -> str:
    return f"{float(value):,.0f} MB" if is_number(value) else MISSING


def value(value: Any) -> str:
    """An axis value as written in the study: ``4``, ``0.5``, ``kl``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return str(value)


def axis_value(axis: str, raw: Any) -> str:
    """An axis value in a table: config paths by their file stem, everything else as written."""
    if axis.endswith(".config") and isinstance(raw, str):
        return raw.split("::")[-1].rsplit("/", 1)[-1].removesuffix(".py")
    return value(raw)


def metric_label(metric: str) -> str:
    """``val/mIoU`` -> ``mIoU``; ``val/bbox_mAP`` -> ``mAP``."""
    name = metric.split("/", 1)[-1]
    return name.replace("bbox_", "")


def axis_label(axis: str) -> str:
    """``term.params.tau`` -> ``tau``; ``term.weight`` -> ``weight``; ``schedule.lr`` -> ``schedule.lr``."""
    if axis.startswith("term."):
        return axis.split(".")[-1]
    return axis


KIND_LABELS = {"feature": "feature map", "logits": "logits", "feature + logits": "feature map + logits"}


def kind_label(kind) -> str:
    """What a location kind (analysis.collect.location_kind) is called in a report: ``feature map``."""
    return KIND_LABELS.get(kind, MISSING)


def with_kind(name: str, kind) -> str:
    """A method with what its loss distils: ``cwd (channel-wise)``, ``pi (spatial)``; the name alone
    where the loss declares neither (kdbench.losses.params.LossParams.kind)."""
    return f"{name} ({kind})" if isinstance(kind, str) and kind else str(name)


def count_noun(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
