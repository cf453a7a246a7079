"""Recipe cards in the report: what each cell's runs trained with (final.json ``recipe``, read
by analysis.collect into each group's ``recipe``, analysis.records), and whether a published row's
recipe, as far as its reference file states it (``recipe_<field>`` columns), is the cell's.

A cell is "not comparable to" a published row when a field the row states differs from what the
cell's runs recorded: the report names the row and the fields, with both values. Fields a row
does not state, and cells whose runs recorded no recipe (older results), are not compared.
"""

from __future__ import annotations

import math

from analysis.records import CellRecord

# What a reference row may state, in the order a reader compares them. ``epochs`` is compared
# within 5% (a COCO epoch is 118,287 images, or fewer where images without boxes are dropped).
FIELDS = ("epochs", "iterations", "global_batch", "crop", "pipeline", "lr", "teacher_mode", "precision")
EPOCH_TOLERANCE = 0.05


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value != ""


def shown(field: str, value) -> str:
    """A recipe value as the report prints it: a crop as HxW, whole numbers without decimals."""
    if field == "crop" and isinstance(value, str) and value.startswith("["):
        value = [int(v) for v in value.strip("[]").split(",")]
    if isinstance(value, (list, tuple)):
        return "x".join(str(int(v)) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def reference_recipe(row: dict) -> dict:
    """The recipe fields a published row states (its ``recipe_<field>`` columns that hold a value)."""
    return {field: row[f"recipe_{field}"] for field in FIELDS if _present(row.get(f"recipe_{field}"))}


def cell_recipe(cell: CellRecord) -> dict:
    """The recipe a cell's runs recorded (its first complete run's card), where they did."""
    return {field: cell.group.recipe[field] for field in FIELDS if _present(cell.group.recipe[field])}


def _same(field: str, published, measured) -> bool:
    if field == "epochs":
        return abs(float(measured) - float(published)) <= EPOCH_TOLERANCE * float(published)
    if field in ("iterations", "global_batch", "lr"):
        return math.isclose(float(measured), float(published), rel_tol=1e-9)
    return shown(field, published) == shown(field, measured)


def differences(published: dict, measured: dict) -> list[str]:
    """``field published vs measured`` for each field both state and that differs."""
    return [f"{field} {shown(field, published[field])} vs {shown(field, measured[field])}"
            for field in FIELDS if field in published and field in measured
            and not _same(field, published[field], measured[field])]


def comparability_notes(matches) -> list[str]:
    """One sentence per (published row, cell) pair (analysis.records.Match) whose recipes differ."""
    notes = []
    for match in matches:
        ref, cell = match.reference, match.cell
        if not cell:
            continue
        found = differences(reference_recipe(ref), cell_recipe(cell))
        if found:
            where = ", ".join(str(ref.get(k)) for k in ("method", "student") if _present(ref.get(k)))
            notes.append(f"{cell.method} is not comparable to {ref.get('file')} ({where}): published "
                         f"vs measured {'; '.join(found)}.")
    return notes
