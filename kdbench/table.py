"""Plain-text tables, the one formatter of the CLI's tables (plan, status, the benchmarks)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def text_table(header: Sequence[str], rows: Iterable[Sequence], right: Iterable[int] = ()) -> list[str]:
    """The header, a rule of dashes and one line per row, columns two spaces apart; the columns
    whose index is in ``right`` are right-aligned, the others left-aligned."""
    right = set(right)
    table = [tuple(map(str, header))] + [tuple(map(str, row)) for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines
