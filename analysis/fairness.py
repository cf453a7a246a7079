"""The fairness audit: for each comparison the report makes, the recipe fields that differ between
its two sides, and "like for like" only where none does.

Three kinds of comparison, each read from the typed records (analysis.records) and the reference
files' ``recipe_<field>`` and ``baseline_recipe_<field>`` columns:

- a measured cell against its student baseline (their runs' recipe cards, final.json ``recipe``);
- a published row against its own baseline row (what the source states for each: the row's
  ``recipe_<field>`` against its ``baseline_recipe_<field>``);
- a measured cell against the published row of the same method (the row's ``recipe_<field>``
  against the cell's card).

The fields: the teacher, weight decay, iterations, how the reported number was chosen (the last
evaluation, or the best of one every N iterations: selected on val), the student's initialisation
(pretrained or random), the distillation terms trained together, gradient clipping, the crop and the
global batch. The teacher and the terms are what a cell adds to its baseline, so a cell and its
baseline are not compared on them. A field that one side does not state is listed as unstated, never
as a difference.
"""

from __future__ import annotations

import math

from analysis.recipes import shown
from analysis.records import CellRecord, Statistics

LIKE, UNLIKE = "like for like", "not like for like"
UNCHECKED = "unchecked: no recipe field stated by both sides"
# field -> what a reader calls it
FIELDS = {"teacher": "teacher", "weight_decay": "weight decay", "iterations": "iterations",
          "selection": "selection", "student_init": "initialisation", "terms": "loss terms",
          "grad_clip": "gradient clipping", "crop": "crop", "global_batch": "batch"}
TREATMENT = ("teacher", "terms")  # what a cell adds to its baseline: not a difference between them
OPTIMISTIC = "selected on val (optimistic)"


def _present(value) -> bool:
    return value is not None and value != "" and not (isinstance(value, float) and math.isnan(value))


def _selection(select, interval) -> str | None:
    if not _present(select):
        return None
    return f"best of every {shown('iterations', interval)} iterations (selected on val: optimistic)" \
        if str(select) == "best" else "last"


def _init(value) -> str | None:
    if not _present(value):
        return None
    return "random" if str(value).strip().lower() in ("random", "none", "scratch") else "pretrained"


def _normal(stated: dict) -> dict:
    """A side's fields as the audit compares them, from recipe fields (card or reference columns)."""
    found = {"selection": _selection(stated.get("select"), stated.get("val_interval")),
             "student_init": _init(stated.get("student_init"))}
    for field in ("teacher", "weight_decay", "iterations", "grad_clip", "crop", "global_batch"):
        found[field] = stated.get(field)
    terms = stated.get("terms")
    if isinstance(terms, (list, tuple)):
        found["terms"] = "+".join(sorted(terms)) if terms else None
    elif _present(terms):
        found["terms"] = "+".join(sorted(t.strip() for t in str(terms).split("+") if t.strip()))
    return {k: v for k, v in found.items() if _present(v)}


def _same(field: str, a, b) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return shown(field, a) == shown(field, b)


def audit(kind: str, subject: str, against: str, a: dict, b: dict, fields=tuple(FIELDS)) -> dict:
    """One comparison: the fields in ``fields`` both sides ``a`` and ``b`` state (each normalised by
    ``_normal``), those that differ, those only one side states, and the verdict: like for like when
    none differs, unchecked when no field is stated by both (results recorded before recipe cards)."""
    compared = [f for f in fields if f in a and f in b]
    differ = [{"field": FIELDS[f], "of": shown(f, a[f]), "against": shown(f, b[f])}
              for f in compared if not _same(f, a[f], b[f])]
    unstated = [FIELDS[f] for f in fields if (f in a) != (f in b)]
    verdict = UNCHECKED if not compared else LIKE if not differ else UNLIKE
    return {"comparison": kind, "of": subject, "against": against, "compared": [FIELDS[f] for f in compared],
            "differences": differ, "unstated": unstated, "like_for_like": verdict == LIKE, "verdict": verdict}


def _card(cell_or_group, terms: list[str] | None = None) -> dict:
    recipe = dict(cell_or_group.recipe)
    recipe["teacher"] = recipe.get("teacher_checkpoint")
    recipe["terms"] = terms
    return _normal(recipe)


def _reference(row: dict, prefix: str) -> dict:
    return _normal({k[len(prefix):]: v for k, v in row.items() if isinstance(k, str) and k.startswith(prefix)})


def _row_name(row: dict) -> str:
    return " ".join(str(row.get(k)) for k in ("method", "student") if _present(row.get(k))) + f" ({row.get('file')})"


def audits(found: Statistics) -> list[dict]:
    """Every comparison the report makes, audited: cells against their baselines, each published
    row against its own baseline row, each measured cell against the published row it sits beside."""
    from analysis.tables import setting

    found_audits = []
    for cell in found.cells:
        if cell.baseline is not None:
            found_audits.append(audit("cell vs its student baseline", setting(cell), "student baseline",
                                      _card(cell.group), _card(cell.baseline),
                                      [f for f in FIELDS if f not in TREATMENT]))
    seen = set()
    for match in found.matches:
        row = match.reference
        key = id(row)
        if key not in seen and any(str(k).startswith("baseline_recipe_") for k in row):
            seen.add(key)
            found_audits.append(audit("published row vs its own baseline", _row_name(row), "its baseline row",
                                      _reference(row, "recipe_"), _reference(row, "baseline_recipe_"),
                                      [f for f in FIELDS if f not in TREATMENT]))
        if match.cell is not None:
            found_audits.append(audit("measured cell vs published row", setting(match.cell), _row_name(row),
                                      _card(match.cell.group, match.cell.group.facts.term_methods),
                                      _reference(row, "recipe_")))
    return found_audits


def _words(entry: dict) -> str:
    unstated = f" (not stated by one side: {', '.join(entry['unstated'])})" if entry["unstated"] else ""
    if entry["differences"]:
        return "; ".join(f"{d['field']} {d['of']} vs {d['against']}" for d in entry["differences"]) + unstated
    return ("none" if entry["compared"] else "nothing compared") + unstated


def audit_table(found: Statistics):
    """The report's "Like for like?" table, or None when the report makes no comparison."""
    from analysis.tables import Cell, Table

    entries = audits(found)
    if not entries:
        return None
    table = Table("fairness", "Like for like?", ["Comparison", "Of", "Against", "Recipe fields that differ",
                                                 "Verdict"],
                  caption="Each comparison the report makes, with the recipe fields (teacher, weight decay, "
                          "iterations, selection, initialisation, loss terms, gradient clipping, crop, batch) that "
                          "differ between its two sides: measured from the runs' recipe cards, published from the "
                          "reference files' recipe_ and baseline_recipe_ columns. Like for like only when none "
                          "differs; a field one side does not state is listed, not counted; unchecked when the two "
                          "sides state no field in common. A cell and its "
                          "baseline are not compared on the teacher and terms, which are what the cell adds.")
    for entry in entries:
        table.rows.append([Cell(entry["comparison"]), Cell(entry["of"]), Cell(entry["against"]),
                           Cell(_words(entry)), Cell(entry["verdict"])])
    return table


def selected_on_val(cell: CellRecord) -> bool:
    """Whether a cell reports its best validation evaluation (``schedule.select: best``)."""
    return str(cell.group.recipe.get("select")) == "best"


def label_optimistic(table, found: Statistics):
    """``table`` with each row of a cell that reports its best validation evaluation labelled
    ``selected on val (optimistic)``: a row whose first column names such a cell."""
    from analysis.tables import setting

    names = {n for cell in found.cells if selected_on_val(cell) for n in (setting(cell), str(cell.method))}
    names |= {f"{m.reference.get('method')} → {m.cell.method}" for m in found.matches
              if m.cell is not None and selected_on_val(m.cell)}
    for row in table.rows if names and table.key != "fairness" else ():
        if row and row[0].text in names:
            row[0].text = f"{row[0].text} [{OPTIMISTIC}]"
    return table
