"""Method against method: each channel-wise cell against the best spatial cell at its location, and
the pairs a study names in ``compare:`` (kdbench.compare), on every metric the runs record.

What a cell distils (channel-wise or spatial) is what its terms' losses declare (analysis.collect's
``distils``), never its name. Cells are compared at one student location and one teacher-student
pair (the same teacher and student baseline); at each, every channel-wise cell is tested against
the spatial cell with the highest mean on the metric. That choice is made after seeing the results,
so it favours the spatial side: the best of several noisy means is biased upwards.

The test is analysis.stats' (paired by seed when both sides have results for the same seeds,
Welch otherwise). Holm's correction runs over each family apart, one per metric: the
channel-wise-vs-spatial comparisons are one family (CW_VS_SPATIAL), the named pairs another (NAMED).
"""

from __future__ import annotations

import math

from analysis import stats as significance
from analysis.records import CW_VS_SPATIAL, NAMED, CellRecord, Delta, Family, Versus
from kdbench.losses.params import CHANNEL_WISE, SPATIAL


def _pair_of(cell: CellRecord) -> tuple:
    """The teacher and student baseline a cell is compared with (by their runs' names)."""
    return tuple(None if group is None else group.run_names for group in (cell.teacher, cell.baseline))


def _mean(cell: CellRecord, metric: str) -> float:
    found = cell.measured(metric)
    return found.mean if found.n and math.isfinite(found.mean) else -math.inf


def spatial_sides(cells: list[CellRecord]) -> list[tuple[str, list[CellRecord], list[CellRecord]]]:
    """(location, channel-wise cells, spatial cells) of each student location and teacher-student
    pair that has both kinds; a cell whose terms distil both, or neither as declared, is in none."""
    places: dict[tuple, tuple[list, list]] = {}
    for cell in cells:
        facts = cell.group.facts
        if facts.distils in (CHANNEL_WISE, SPATIAL) and facts.location:
            sides = places.setdefault((facts.location, _pair_of(cell)), ([], []))
            sides[facts.distils == SPATIAL].append(cell)
    return [(where[0], channel, spatial) for where, (channel, spatial) in places.items() if channel and spatial]


def _best(spatial: list[CellRecord], metric: str) -> CellRecord:
    """The spatial cell with the highest mean on ``metric`` (the first listed on a tie)."""
    return max(spatial, key=lambda cell: _mean(cell, metric))


def _matching(first: CellRecord, second: CellRecord) -> bool:
    """Two cells of a named pair are compared when they share their teacher and student baseline and
    agree on every grid axis both have a value for (an axis one method does not take is ignored)."""
    if _pair_of(first) != _pair_of(second):
        return False
    shared = [path for path in first.axes if path in second.axes
              and all(_given(cell.axes[path]) for cell in (first, second))]
    return all(first.axes[path] == second.axes[path] for path in shared)


def _given(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def named_pairs(cells: list[CellRecord], pairs) -> list[tuple[CellRecord, CellRecord]]:
    """The cells each named pair (method a, method b) compares, a's cell first."""
    found = []
    for first_method, second_method in pairs:
        seconds = [cell for cell in cells if str(cell.method) == second_method]
        for first in (cell for cell in cells if str(cell.method) == first_method):
            found += [(first, second) for second in seconds if _matching(first, second)]
    return found


def _tested(family: str, metric: str, sides: list[tuple[CellRecord, CellRecord]]) -> list[Delta]:
    """Each (cell, other) Δ on ``metric`` (analysis.stats: paired or Welch), Holm over the family."""
    found = significance.compare_all([cell.group.seeds[metric] for cell, _ in sides],
                                     [other.group.seeds[metric] for _, other in sides])
    adjusted = significance.holm([c.p for c in found])
    needed = significance.seeds_needed_all(found)
    return [Delta(family, metric, c.delta, c.low, c.high, c.test, c.df, c.p, p, significance.verdict(c, p),
                  c.spread, c.n, need) for c, p, need in zip(found, adjusted, needed)]


def versus(cells: list[CellRecord], metrics: list[str], pairs=()) -> tuple[list[Versus], list[Family]]:
    """Every channel-wise cell against the best spatial cell at its location, and every named pair,
    on each metric; with the families Holm's correction ran over (one per family and metric)."""
    found, families = [], []
    places = spatial_sides(cells)
    named = named_pairs(cells, pairs)
    for metric in metrics:
        chosen = [(cell, _best(spatial, metric), where, tuple(spatial))
                  for where, channel, spatial in places for cell in channel]
        if chosen:
            tests = _tested(CW_VS_SPATIAL, metric, [(cell, best) for cell, best, _, _ in chosen])
            found += [Versus(cell, best, where, among, test) for (cell, best, where, among), test in zip(chosen, tests)]
            families.append(Family(CW_VS_SPATIAL, metric, sum(1 for t in tests if math.isfinite(t.p))))
        if named:
            tests = _tested(NAMED, metric, named)
            found += [Versus(cell, other, None, (), test) for (cell, other), test in zip(named, tests)]
            families.append(Family(NAMED, metric, sum(1 for t in tests if math.isfinite(t.p))))
    return found, families


def of_family(found, family: str, metric: str) -> list[Versus]:
    """The comparisons of one family on one metric, in study order."""
    return [each for each in found if (each.test.family, each.test.metric) == (family, metric)]
