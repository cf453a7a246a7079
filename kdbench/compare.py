"""A study's ``compare:`` key: pairs of its methods the report tests against each other.

    compare: [[cwd_logits, pi], [cwd_feature, at]]

Each pair names two of the study's methods (``methods:``); the report tests the first against the
second on every metric, the pairs one family for Holm's correction (analysis.comparisons). The key
changes what the report says, never what runs: it is no part of any run, so no run id moves.
"""

from __future__ import annotations

from typing import Any

from kdbench.errors import Problems
from kdbench.schema import Checker, join

KEY = "compare"


def parse_compare(check: Checker, data: dict, methods: dict | None) -> tuple[tuple[str, str], ...]:
    """``compare:`` checked: a list of pairs, each two different method names of the study that
    have cells (those its grid's method axis lists, when it lists them); every bad pair reported at
    once, naming the valid methods."""
    pairs = check.sequence(data.get(KEY) or [], KEY)
    names = [str(name) for name in (methods or {})]
    grid = data.get("grid")
    listed = grid.get("method") if isinstance(grid, dict) else None
    if isinstance(listed, list):  # a grid that picks some of the methods: only those have cells
        names = [name for name in names if name in {str(m) for m in listed}]
    found, problems = [], Problems()
    for index, pair in enumerate(pairs):
        parsed = problems.get(_pair, check, pair, join(KEY, index), names)
        if parsed is not None:
            found.append(parsed)
    problems.raise_any()
    return tuple(found)


def _pair(check: Checker, pair: Any, where: str, names: list[str]) -> tuple[str, str]:
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise check.fail(where, f"must be a pair of method names, [a, b], got {pair!r}")
    first, second = (check.string(name, join(where, i), names, "" if names else " (the study has no methods:)")
                     for i, name in enumerate(pair))
    if first == second:
        raise check.fail(where, f"compares {first!r} with itself; name two different methods")
    return first, second
