"""Which evaluation a run reports (``schedule.select``), and both candidates for final.json.

``last``: the run's last evaluation (kdbench's default). ``best``: the evaluation with the highest
primary metric (val/mIoU, val/bbox_mAP) among every one made during training, as the CIRKD-lineage
segmentation code reports (it validates every few hundred iterations and keeps the best
checkpoint): a maximum over checkpoints chosen on the validation set itself, so an optimistic
number. final.json records both, each with its iteration, whichever the run reports.
"""

from __future__ import annotations

import math

from kdbench.store import PER_CLASS
from kdbench.vocab import primary_metric


def _score(evaluation: dict, metric: str) -> float:
    value = evaluation.get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf


def best_evaluation(evaluations: list[dict], metric: str) -> dict | None:
    """The evaluation with the highest ``metric``; on a tie the earliest. None without one that has it."""
    scored = [e for e in evaluations if isinstance(e.get("iter"), int) and _score(e, metric) > -math.inf]
    return max(scored, key=lambda e: (_score(e, metric), -e["iter"])) if scored else None


def _metrics(evaluation: dict) -> dict:
    """An evaluation's metrics: each a number (its per-class values aside)."""
    return {k: v for k, v in evaluation.items() if k not in ("iter", PER_CLASS)}


def _entry(evaluation: dict) -> dict:
    entry = {"iter": evaluation["iter"], "metrics": _metrics(evaluation)}
    if PER_CLASS in evaluation:   # each class's values of that evaluation (runners.metrics)
        entry[PER_CLASS] = evaluation[PER_CLASS]
    return entry


def selection(select: str, task: str, last: dict | None, evaluations: list[dict]) -> tuple[dict, dict | None]:
    """(the metrics the run reports, final.json's ``selection`` record or None without an evaluation).

    ``last``: the run's last evaluation (``{"iter": N, metric: value, ...}``); ``evaluations``:
    every one recorded (metrics.jsonl). The record: ``select``, the ``metric`` that chooses,
    ``last`` and ``best`` (each ``{"iter", "metrics"}``, and ``per_class`` where the evaluation
    recorded each class's values)."""
    if not last:
        return {}, None
    metric = primary_metric(task)
    best = best_evaluation([*evaluations, last], metric) or last
    chosen = best if select == "best" else last
    record = {"select": select, "metric": metric, "last": _entry(last), "best": _entry(best)}
    return _metrics(chosen), record
