"""Is a gain real? Student-t intervals, the Δ of a cell against its student baseline (paired by
seed or Welch), Holm's correction across a study's cells, and the seeds a Δ needs to be resolved.

Plain numbers in, plain numbers out: no frames, no formatting (analysis.aggregate applies these to
the cells, analysis.format shows them). Formulas: Student's t interval of a mean; the paired t test
on per-seed differences; Welch's t test with the Welch–Satterthwaite degrees of freedom; Holm
(1979), "A simple sequentially rejective multiple test procedure"; power of the t test from the
noncentral t distribution (the computation of R's ``power.t.test``); how much of the teacher-student
gap a Δ closes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

ALPHA = 0.05   # two-sided: 95% intervals, tests at 5% (familywise, after Holm)
POWER = 0.8    # the chance a study with the seeds needed resolves a Δ of the observed size
MAX_SEEDS = 10_000  # beyond this a Δ is called unresolvable in practice

GAIN, NOISE, LOSS = "gain", "within noise", "loss"
NO_INTERVAL = "no interval (n = 1)"
NOT_COMPARED = "not compared (no complete run on a side)"


@dataclass(frozen=True)
class Interval:
    """A mean with its sample std (ddof 1), n and the 95% Student-t interval (NaN bounds for n < 2)."""

    mean: float
    std: float
    n: int
    low: float
    high: float


@dataclass(frozen=True)
class Comparison:
    """A cell's Δ against its student baseline: ``test`` is ``paired`` (same seeds on both sides),
    ``welch`` (otherwise) or ``""`` (no test: a side has fewer than two runs). ``spread`` is the std
    the seeds needed are computed from: the std of the per-seed differences (paired), or the root
    mean square of the two sides' stds (Welch)."""

    delta: float
    low: float
    high: float
    test: str
    df: float
    p: float
    spread: float
    n: int           # pairs (paired) or the smaller side's runs (Welch); 0 when not compared

    @property
    def paired(self) -> bool:
        return self.test == "paired"


def interval(values) -> Interval:
    """Mean ± t(0.975, n - 1) · s / √n of the finite values (NaN and Inf dropped)."""
    array = np.asarray([v for v in values if v is not None], dtype=float)
    array = array[np.isfinite(array)]
    n = int(array.size)
    if n == 0:
        return Interval(math.nan, math.nan, 0, math.nan, math.nan)
    mean = float(array.mean())
    if n == 1:
        return Interval(mean, math.nan, 1, math.nan, math.nan)
    std = float(array.std(ddof=1))
    half = float(half_widths([std], [n])[0])
    return Interval(mean, std, n, mean - half, mean + half)


def half_widths(stds, counts) -> np.ndarray:
    """t(0.975, n - 1) · s / √n for each (s, n); NaN where n < 2."""
    std, n = np.asarray(stds, dtype=float), np.asarray(counts, dtype=float)
    half = np.full(std.shape, math.nan)
    ok = n >= 2
    half[ok] = scipy_stats.t.ppf(1 - ALPHA / 2, n[ok] - 1) * std[ok] / np.sqrt(n[ok])
    return half


def _sides(cell: dict, baseline: dict) -> tuple[float, float, float, str, float, int]:
    """(Δ, its standard error, degrees of freedom, test, spread, n) of one cell; the t quantiles
    are left to ``compare_all``, which asks scipy once for every cell."""
    a = {s: float(v) for s, v in cell.items() if v is not None and math.isfinite(v)}
    b = {s: float(v) for s, v in baseline.items() if v is not None and math.isfinite(v)}
    if not a or not b:
        return math.nan, math.nan, math.nan, "", math.nan, 0
    delta = float(np.mean(list(a.values())) - np.mean(list(b.values())))
    if min(len(a), len(b)) < 2:
        return delta, math.nan, math.nan, "", math.nan, 1
    if set(a) == set(b):
        differences = np.array([a[s] - b[s] for s in sorted(a)])
        n = differences.size
        spread = float(differences.std(ddof=1))
        return delta, spread / math.sqrt(n), float(n - 1), "paired", spread, n
    va, vb = np.var(list(a.values()), ddof=1) / len(a), np.var(list(b.values()), ddof=1) / len(b)
    standard_error = math.sqrt(va + vb)
    df = ((va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))) if standard_error else len(a) + len(b) - 2
    spread = math.sqrt((va * len(a) + vb * len(b)) / 2)  # sqrt((s_a² + s_b²) / 2)
    return delta, standard_error, float(df), "welch", spread, min(len(a), len(b))


def compare(cell: dict, baseline: dict) -> Comparison:
    """Δ = mean(cell) - mean(baseline) with its 95% interval and test, from {seed: value} of each.

    Paired by seed when both sides have results for exactly the same seeds (a seed fixes the data
    order and the student's initial weights, so the differences cancel that noise); Welch's
    unequal-variance test otherwise. Fewer than two runs on a side: Δ without an interval. Runs
    that agree exactly (standard error 0) give a zero-width interval and p 0 (1 when Δ = 0).
    """
    return compare_all([cell], [baseline])[0]


def compare_all(cells: list[dict], baselines: list[dict]) -> list[Comparison]:
    """``compare`` for each cell and its baseline, the t distribution asked once for them all."""
    parts = [_sides(cell, baseline) for cell, baseline in zip(cells, baselines)]
    delta, error, df = (np.array([part[i] for part in parts], dtype=float).reshape(-1) for i in range(3))
    half, p = np.full(len(parts), math.nan), np.full(len(parts), math.nan)
    tested = np.isfinite(df)
    with np.errstate(divide="ignore", invalid="ignore"):
        half[tested] = scipy_stats.t.ppf(1 - ALPHA / 2, df[tested]) * error[tested]
        p[tested] = 2 * scipy_stats.t.sf(np.abs(delta[tested]) / error[tested], df[tested])
    p[tested & (error == 0) & (delta == 0)] = 1.0
    return [Comparison(d, float(d - h), float(d + h), test, f, float(pv), spread, n)
            for (d, _, f, test, spread, n), h, pv in zip(parts, half, p)]


def gap_shares(delta, low, high, teacher, baseline) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How far a cell closes the teacher-student gap: Δ / (teacher - baseline mean), where
    Δ = cell mean - baseline mean, with its 95% interval, the Δ interval (low, high) divided by the
    gap. The teacher's value is taken as fixed (one run, or its mean), so only the Δ's uncertainty
    enters the interval. 0 = no better than the student baseline, 1 = as good as the teacher.
    NaN where the teacher is not above the baseline (no gap to close) or a number is missing.
    Arrays (or scalars) broadcast together; returns (share, low, high)."""
    delta, low, high, teacher, baseline = (np.asarray(v, dtype=float) for v in (delta, low, high, teacher, baseline))
    gap = teacher - baseline
    closable = np.isfinite(gap) & (gap > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return tuple(np.where(closable, value / gap, math.nan) for value in (delta, low, high))


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order; NaN (no test) stays NaN and is not
    counted in the family. Sorted ascending, the k-th smallest p (1-based) of m becomes
    max over j <= k of min(1, (m - j + 1) · p_(j))."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = tested.size
    running = 0.0
    for rank, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def verdict(comparison: Comparison, adjusted_p: float) -> str:
    """gain / loss when the Holm-adjusted p is below ALPHA (by the sign of Δ), within noise
    otherwise; no interval with a single run on a side; not compared without runs."""
    if comparison.n == 0:
        return NOT_COMPARED
    if not comparison.test or not math.isfinite(adjusted_p):
        return NO_INTERVAL
    if adjusted_p < ALPHA:
        return GAIN if comparison.delta > 0 else LOSS
    return NOISE


def _power(n: np.ndarray, effect: np.ndarray, paired: np.ndarray) -> np.ndarray:
    """Power of the two-sided t test at ALPHA for a true Δ / σ of ``effect``: one-sample on n
    differences (paired), or two samples of n each (arrays broadcast together)."""
    df = np.where(paired, n - 1, 2 * n - 2)
    noncentrality = effect * np.sqrt(np.where(paired, n, n / 2))
    critical = scipy_stats.t.ppf(1 - ALPHA / 2, df)
    wrong_side = scipy_stats.nct.cdf(-critical, df, noncentrality)  # NaN where it underflows (a large Δ / σ)
    return scipy_stats.nct.sf(critical, df, noncentrality) + np.nan_to_num(wrong_side, nan=0.0)


def seeds_needed(comparison: Comparison) -> float:
    """The fewest seeds (pairs when paired, runs per side for Welch) at which the t test resolves
    the observed Δ with probability POWER at ALPHA, taking the observed spread as the true one.
    NaN without a spread (n = 1) or for Δ = 0; inf beyond MAX_SEEDS."""
    return seeds_needed_all([comparison])[0]


NO_SPREAD = 1e6  # Δ / σ beyond this: σ is the rounding of equal per-seed numbers, not seed noise
WINDOW = 8  # seed counts tried at once, from the normal approximation up (the t test's answer is a few above)


def seeds_needed_all(comparisons: list[Comparison]) -> list[float]:
    """``seeds_needed`` for each comparison. The normal approximation, (z(0.975) + z(0.8))² / effect²
    (twice that per side for two samples), is a lower bound: the exact power is computed from there
    up, WINDOW seed counts at a time, for every comparison at once."""
    found = np.full(len(comparisons), math.nan)
    todo = []
    for index, c in enumerate(comparisons):
        if c.test and math.isfinite(c.delta) and c.delta != 0:
            if c.spread <= abs(c.delta) / NO_SPREAD:
                found[index] = 2.0  # seeds that agree (to rounding): the fewest a t test takes
            else:
                todo.append(index)
    effect = np.array([abs(comparisons[i].delta) / comparisons[i].spread for i in todo], dtype=float)
    paired = np.array([comparisons[i].paired for i in todo], dtype=bool)
    z = scipy_stats.norm.ppf(1 - ALPHA / 2) + scipy_stats.norm.ppf(POWER)
    start = np.maximum(2.0, np.floor((z / effect) ** 2 * np.where(paired, 1, 2)))
    todo = np.array(todo, dtype=int)
    while todo.size:
        beyond = start > MAX_SEEDS
        found[todo[beyond]] = math.inf
        todo, start, effect, paired = todo[~beyond], start[~beyond], effect[~beyond], paired[~beyond]
        if not todo.size:
            break
        n = start[:, None] + np.arange(WINDOW)
        reached = _power(n, effect[:, None], paired[:, None]) >= POWER
        hit = reached.any(axis=1)
        first = n[np.arange(todo.size), reached.argmax(axis=1)]
        found[todo[hit]] = np.where(first[hit] <= MAX_SEEDS, first[hit], math.inf)
        todo, start, effect, paired = todo[~hit], start[~hit] + WINDOW, effect[~hit], paired[~hit]
    return found.tolist()


def position(value: float, measured: Interval) -> tuple[bool | None, float]:
    """Where a published ``value`` lies against a measured mean: (inside the 95% interval, or None
    without one; its distance from the mean in measured stds, signed, NaN without a std)."""
    if not math.isfinite(value) or measured.n == 0:
        return None, math.nan
    distance = (value - measured.mean) / measured.std if measured.n > 1 and measured.std > 0 else math.nan
    if measured.n < 2:
        return None, distance
    return bool(measured.low <= value <= measured.high), distance
