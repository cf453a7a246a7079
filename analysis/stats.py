"""Is a gain real? Student-t intervals, the Δ of a cell against its student baseline (paired by
seed or Welch), Holm's correction across a study's cells, and the seeds a Δ needs to be resolved.

Plain numbers in, plain numbers out: no frames, no formatting (analysis.aggregate applies these to
the cells, analysis.format shows them). Formulas: Student's t interval of a mean; the paired t test
on per-seed differences; Welch's t test with the Welch–Satterthwaite degrees of freedom; Holm
(1979), "A simple sequentially rejective multiple test procedure"; power of the t test from the
noncentral t distribution (the computation of R's ``power.t.test``).
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


def t_quantile(probability: float, df: float) -> float:
    return float(scipy_stats.t.ppf(probability, df))


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
    half = t_quantile(1 - ALPHA / 2, n - 1) * std / math.sqrt(n)
    return Interval(mean, std, n, mean - half, mean + half)


def _t_test(delta: float, standard_error: float, df: float) -> tuple[float, float, float]:
    """(low, high, two-sided p) of a t statistic delta / standard_error with df degrees of freedom.
    Runs that agree exactly (standard error 0) give a zero-width interval: p 0 for a nonzero Δ, 1
    for none."""
    if standard_error == 0:
        return delta, delta, (1.0 if delta == 0 else 0.0)
    half = t_quantile(1 - ALPHA / 2, df) * standard_error
    p = 2 * float(scipy_stats.t.sf(abs(delta) / standard_error, df))
    return delta - half, delta + half, p


def compare(cell: dict, baseline: dict) -> Comparison:
    """Δ = mean(cell) - mean(baseline) with its 95% interval and test, from {seed: value} of each.

    Paired by seed when both sides have results for exactly the same seeds (a seed fixes the data
    order and the student's initial weights, so the differences cancel that noise); Welch's
    unequal-variance test otherwise. Fewer than two runs on a side: Δ without an interval.
    """
    a = {s: float(v) for s, v in cell.items() if v is not None and math.isfinite(v)}
    b = {s: float(v) for s, v in baseline.items() if v is not None and math.isfinite(v)}
    if not a or not b:
        return Comparison(math.nan, math.nan, math.nan, "", math.nan, math.nan, math.nan, 0)
    delta = float(np.mean(list(a.values())) - np.mean(list(b.values())))
    if min(len(a), len(b)) < 2:
        return Comparison(delta, math.nan, math.nan, "", math.nan, math.nan, math.nan, 1)
    if set(a) == set(b):
        differences = np.array([a[s] - b[s] for s in sorted(a)])
        n = differences.size
        spread = float(differences.std(ddof=1))
        low, high, p = _t_test(delta, spread / math.sqrt(n), n - 1)
        return Comparison(delta, low, high, "paired", float(n - 1), p, spread, n)
    va, vb = np.var(list(a.values()), ddof=1) / len(a), np.var(list(b.values()), ddof=1) / len(b)
    standard_error = math.sqrt(va + vb)
    df = ((va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))) if standard_error else len(a) + len(b) - 2
    low, high, p = _t_test(delta, standard_error, df)
    spread = math.sqrt((va * len(a) + vb * len(b)) / 2)  # sqrt((s_a² + s_b²) / 2)
    return Comparison(delta, low, high, "welch", float(df), p, spread, min(len(a), len(b)))


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


def _power(n: np.ndarray, effect: float, paired: bool) -> np.ndarray:
    """Power of the two-sided t test at ALPHA for a true Δ / σ of ``effect``: one-sample on n
    differences (paired), or two samples of n each."""
    df = n - 1 if paired else 2 * n - 2
    noncentrality = effect * np.sqrt(n) if paired else effect * np.sqrt(n / 2)
    critical = scipy_stats.t.ppf(1 - ALPHA / 2, df)
    return scipy_stats.nct.sf(critical, df, noncentrality) + scipy_stats.nct.cdf(-critical, df, noncentrality)


def seeds_needed(comparison: Comparison) -> float:
    """The fewest seeds (pairs when paired, runs per side for Welch) at which the t test resolves
    the observed Δ with probability POWER at ALPHA, taking the observed spread as the true one.
    NaN without a spread (n = 1) or for Δ = 0; inf beyond MAX_SEEDS."""
    if not comparison.test or not math.isfinite(comparison.delta) or comparison.delta == 0:
        return math.nan
    effect = abs(comparison.delta) / comparison.spread if comparison.spread else math.inf
    if math.isinf(effect):
        return 2.0
    z = scipy_stats.norm.ppf(1 - ALPHA / 2) + scipy_stats.norm.ppf(POWER)
    guess = (z / effect) ** 2 * (1 if comparison.paired else 2)  # the normal approximation: a lower bound
    start = max(2, int(guess) - 1)
    while start <= MAX_SEEDS:
        n = np.arange(start, min(start + 64, MAX_SEEDS + 1))
        reached = np.flatnonzero(_power(n.astype(float), effect, comparison.paired) >= POWER)
        if reached.size:
            return float(n[reached[0]])
        start += 64
    return math.inf


def position(value: float, measured: Interval) -> tuple[bool | None, float]:
    """Where a published ``value`` lies against a measured mean: (inside the 95% interval, or None
    without one; its distance from the mean in measured stds, signed, NaN without a std)."""
    if not math.isfinite(value) or measured.n == 0:
        return None, math.nan
    distance = (value - measured.mean) / measured.std if measured.n > 1 and measured.std > 0 else math.nan
    if measured.n < 2:
        return None, distance
    return bool(measured.low <= value <= measured.high), distance
