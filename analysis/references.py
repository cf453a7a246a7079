"""Published numbers (``studies/references/*.csv``) beside the measured cells they describe, and
where each lies against the measured 95% interval."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import aggregate
from analysis import stats as significance
from analysis.format import is_number
from analysis.records import CellRecord, Match, measured
from kdbench.study import read_reference


def read_references(study_path: Path, names: list[str]) -> pd.DataFrame:
    """Published numbers from ``studies/references/*.csv`` (with the file each row came from)."""
    frames = []
    for name in names or []:
        text = read_reference(Path(study_path), name)   # bounded, from inside the study's folder
        if text is None:
            continue
        table = pd.read_csv(io.StringIO(text), dtype={"location": str})
        table["file"] = name
        frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _norm(text) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower()) if isinstance(text, str) else ""


def _tokens(text) -> set[str]:
    return {t for t in re.split(r"[^a-z0-9]+", str(text).lower()) if t} if isinstance(text, str) else set()


def _same_settings(ref: dict, cell: CellRecord, terms) -> bool:
    """A row that states its ``tau`` or ``weight`` (a committed log of one setting) matches only
    cells run at that value: the cell's axis value where an axis sets it, else its terms' own."""
    for column, axis, read in (("tau", "term.params.tau", lambda t: (t.get("params") or {}).get("tau", 1.0)),
                               ("weight", "term.weight", lambda t: t.get("weight", 1.0))):
        wanted = pd.to_numeric(ref.get(column), errors="coerce")
        if not np.isfinite(wanted):
            continue
        value = cell.axes.get(axis)  # an axis the study does not vary: the terms say it
        values = {float(value)} if isinstance(value, (int, float)) and np.isfinite(value) else {
            float(read(t)) for t in terms}
        if values != {float(wanted)}:
            return False
    return True


def combination(row: dict) -> list[str] | None:
    """The distillation terms a published row states it trained with (``recipe_terms``, methods
    joined by "+", one per term: ``cwd+cwd+pi+ho``), sorted; None where it does not state them."""
    text = row.get("recipe_terms")
    return sorted(t.strip() for t in text.split("+") if t.strip()) if isinstance(text, str) and text.strip() else None


def _describes(ref: dict, cell: CellRecord, terms, kind: str | None) -> bool:
    """Whether a published row describes a cell (see ``match_references``)."""
    if not terms or not (all(term.get("method") == ref.get("method") for term in terms)
                         or combination(ref) == sorted(str(term.get("method")) for term in terms)):
        return False  # every term of the cell is the row's method (FBKD on four FPN levels: four terms),
        #               or the cell's terms are the combination the row states it trained (recipe_terms)
    dataset = cell.group.facts.dataset
    if dataset and not _norm(ref.get("dataset")).startswith(_norm(dataset)):
        return False
    ref_kind = str(ref.get("location") or "").split(" ")[0].strip().lower()
    kind = kind or cell.group.facts.location_kind   # a cell on both kinds at once is neither's
    if ref_kind in ("feature", "logits") and kind and kind != ref_kind:
        return False
    if not _same_settings(ref, cell, terms):
        return False
    student = cell.axes.get("student.config")  # only where the study varies it
    if _tokens(ref.get("student")) and isinstance(student, str):
        return _tokens(ref["student"]) <= _tokens(Path(student.split("::")[-1]).stem)
    return True


def match_references(references: pd.DataFrame, cells, methods: dict, task: str) -> list[Match]:
    """Each published row beside the measured cells it describes (or none).

    A row matches a cell when its method is the cell's distillation method (the ``method`` of
    every term of the cell), its metric fits the task (mIoU for seg, AP/mAP for det), its dataset starts with
    the run's dataset name, its location (feature / logits) agrees with the cell's where both
    say one, its ``tau`` and ``weight`` (where the row states them) are the cell's, and its student
    appears in the cell's student config name where the study varies it.
    """
    if references.empty:
        return []
    kinds = aggregate.location_kinds(cells)
    rows = []
    for ref in references.to_dict("records"):
        wanted_metric = "miou" if task == "seg" else "ap"
        metric_ok = _norm(ref.get("metric")).endswith(wanted_metric)
        matched = [cell for cell in (cells if metric_ok else ())
                   if _describes(ref, cell, methods.get(cell.method) or (), kinds.get(cell.method, (None, None))[1])]
        rows += [Match(ref, cell) for cell in matched or [None]]
    return rows


def no_published_number(matches, files) -> list[str]:
    """One sentence when the study names reference files that hold no published row yet (a paper
    whose table is an image), so that the report says so rather than showing no comparison."""
    if matches or not files:
        return []
    return [f"No published number: {', '.join(files)} {'holds' if len(files) == 1 else 'hold'} no published row "
            "yet, so no measured number here has a published one beside it. A person can add the rows (method, "
            "location, dataset, metric, value, source and tag per row; studies/README.md describes the columns)."]


def _float(value) -> float:
    return float(value) if is_number(value) else math.nan


def starting_point(reference: dict, cell: CellRecord, metric: str) -> str:
    """Whether the measured setting starts where the published one did, judged from the numbers
    (the reference's own ``tag`` says it in words): the published teacher and student-baseline
    numbers against the measured 95% intervals. ``same`` when every one that can be checked lies
    inside, ``different teacher`` (or student baseline, or both) when one lies outside, so that the
    gains compare and the absolute numbers do not; a side without a published number or with a
    single measured run is unchecked. A cell with runs on a partial dataset split is not
    comparable at all."""
    if cell.group.partial_data:
        return "not comparable: measured on a partial dataset split"
    inside, outside, unchecked = [], [], []
    for side, column, group in (("teacher", "teacher_value", cell.teacher),
                                ("student baseline", "student_value", cell.baseline)):
        agrees, _ = significance.position(_float(reference.get(column)), measured(group, metric))
        (unchecked if agrees is None else inside if agrees else outside).append(side)
    head = ("different " + " and ".join(outside)) if outside else "same" if inside else "unchecked"
    return head + (f"; {' and '.join(unchecked)} unchecked" if unchecked and (inside or outside) else "")


def published_vs_measured(reference: dict, cell: CellRecord | None, metric: str) -> dict:
    """A published row against the measured cell it describes: ``published`` (its number, NaN when
    none), ``measured`` (the cell's Interval,
    None when no cell), ``inside`` (the published number in its 95% interval; None without one),
    ``distance`` (published minus measured mean, in measured stds), ``starting_point`` and ``tag``
    (the reference's comparability tag, as its file words it)."""
    published = _float(reference.get("value"))
    tag = reference.get("tag") if isinstance(reference.get("tag"), str) else None
    if not cell:
        return {"published": published, "measured": None, "inside": None, "distance": math.nan,
                "starting_point": "not measured", "tag": tag}
    here = cell.measured(metric)
    inside, distance = significance.position(published, here)
    return {"published": published, "measured": here, "inside": inside, "distance": distance,
            "starting_point": starting_point(reference, cell, metric), "tag": tag}
