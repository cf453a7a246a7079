"""The results store as a DataFrame: one row per planned run of a study, whatever its state.

Failed, diverged, corrupt and missing runs stay as rows (their metrics are NaN and their state
says why), so a report can count them; only complete runs with finite metrics are ever averaged
(analysis.aggregate). The frame is cached as ``results/<study>/runs.parquet``, written atomically.

Columns: ``run_id, name, kind, stage, status, detail, task, dataset, teacher_config,
student_config, location, location_kind, kd_method, method, seed``, one ``axis:<path>`` column per other grid axis,
``teacher_key`` (the run id of a cell's teacher run) and ``baseline_key`` (the axis values its
student baseline is planned per),
one column per metric as the run wrote it (``val/mIoU``, ``val/bbox_mAP``, ...), ``cost:<key>``
from final.json's ``cost``, and ``git_sha`` / ``env`` from env.json.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from kdbench import store
from kdbench.study import TERM_PREFIX, PlannedRun, Study

RUNS_FILE = "runs.parquet"
COST_KEYS = ("seconds_per_iter", "teacher_share", "kd_share", "peak_memory_mb", "peak_memory_kind")


def cache_path(study: Study, results: str | Path) -> Path:
    return Path(results) / study.name / RUNS_FILE


def _finite_or_nan(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return math.nan
    return float(value)


def _config_name(section: dict | None) -> str | None:
    config = (section or {}).get("config")
    if not isinstance(config, str):
        return None
    return Path(config.split("::")[-1]).stem


def _places(run: dict) -> list[str]:
    places = []
    for term in run.get("distill") or []:
        where = term.get("student_location")
        places.extend(where if isinstance(where, list) else [where])
    return [str(p) for p in places]


def _locations(run: dict) -> str | None:
    return "; ".join(_places(run)) or None


def is_logits(location: str) -> bool:
    """Whether a student location is a score map: mmseg's classifier ``conv_seg`` or a detection
    head's classification branch (``gfl_cls``, ``retina_cls``, ``conv_cls``, ...); anything else
    (a backbone stage, ``decode_head.bottleneck``, an FPN level) is a feature map."""
    last = location.rsplit(".", 1)[-1]
    return last == "conv_seg" or last.endswith("cls")


def location_kind(run: dict) -> str | None:
    """``logits``, ``feature`` or ``feature + logits``: what a run's distillation terms tap, from their
    student locations (never from the method's name); None without distillation."""
    kinds = {"logits" if is_logits(place) else "feature" for place in _places(run)}
    return " + ".join(sorted(kinds)) or None


def kd_methods(run: dict) -> str | None:
    """The distillation terms' ``method`` (``cwd``, ``pi``, ...), in term order, ``; ``-joined."""
    return "; ".join(str(term.get("method")) for term in run.get("distill") or []) or None


def _key(params: dict, keep) -> str:
    """Which teacher / baseline a run belongs to: the axis values that pick it, as sorted JSON."""
    return json.dumps({k: v for k, v in params.items() if keep(k)}, sort_keys=True, default=str)


def _is_baseline_axis(key: str) -> bool:
    """The axes a student baseline is planned per (kdbench.study: all but method, term.* and teacher*)."""
    return key not in ("method", "seed") and not key.startswith((TERM_PREFIX, "teacher"))


def _detail(state: str, error: dict | None, reason: str | None = None) -> str | None:
    """One line saying why a run has no result (``error``: its error.json as scan read it, or None;
    ``reason``: kdbench.status's reason for a blocked run, ``teacher <run id> failed``)."""
    if state in ("failed", "diverged"):
        error = error or {}
        if state == "diverged":
            return f"diverged at step {error.get('step', '?')} (loss {error.get('key', '?')})"
        text = str(error.get("error") or error.get("traceback") or "").strip().splitlines()
        return text[-1][:300] if text else "failed"
    return {"corrupt": "final.json or error.json is unreadable", "missing": "never started",
            "interrupted": "started, stopped without a result (a relaunch resumes it)",
            "running": "its job is pending or running",
            "blocked": f"{reason or 'its teacher did not complete'}: its job ended without starting"}.get(state)


def _teacher_setting(run: dict) -> str:
    """What identifies the teacher a run uses: its teacher section (checkpoint aside) and dataset."""
    teacher = {k: v for k, v in (run.get("teacher") or {}).items() if k != "checkpoint"}
    return json.dumps({"teacher": teacher, "dataset": run.get("dataset")}, sort_keys=True, default=str)


def _teacher_keys(study: Study) -> dict[str, str | None]:
    """run id -> the run id of its teacher run: the one a cell depends on (a teacher trained in the
    study), else the teacher run with the same teacher and dataset (a checkpoint evaluated)."""
    by_setting = {_teacher_setting(p.run): p.run_id for p in study.runs if p.kind == "teacher"}
    keys = {}
    for planned in study.runs:
        if planned.kind == "teacher":
            keys[planned.run_id] = planned.run_id
        elif planned.kind == "cell":
            keys[planned.run_id] = planned.depends_on[0] if planned.depends_on else by_setting.get(
                _teacher_setting(planned.run))
        else:
            keys[planned.run_id] = None
    return keys


def _row(planned: PlannedRun, run_dir: Path, state: str, teacher_key: str | None, files: store.RunFiles,
         reason: str | None = None) -> dict:
    """One run's row; ``files``: its directory as kdbench.status.scan read it; ``reason``: why
    kdbench.status says it is blocked."""
    run = planned.run
    row = {
        "run_id": planned.run_id, "name": planned.name, "kind": planned.kind, "stage": planned.stage,
        "status": state, "detail": _detail(state, files.error, reason), "task": run.get("task"),
        "dataset": (run.get("dataset") or {}).get("name"),
        "teacher_config": _config_name(run.get("teacher")), "student_config": _config_name(run.get("student")),
        "location": _locations(run), "location_kind": location_kind(run), "kd_method": kd_methods(run),
        "method": planned.params.get("method") if planned.kind == "cell" else None,
        "seed": run.get("seed"),
        "teacher_key": teacher_key,
        "baseline_key": _key(planned.params, _is_baseline_axis),
    }
    for key, value in planned.params.items():
        if key not in ("method", "seed"):
            row[f"axis:{key}"] = value
    if state == "complete":
        final = files.final or {}
        for key, value in (final.get("metrics") or {}).items():
            row[key] = _finite_or_nan(value)
        cost = final.get("cost") or {}
        for key in COST_KEYS:
            value = cost.get(key)
            row[f"cost:{key}"] = value if key == "peak_memory_kind" else _finite_or_nan(value)
    env = store.read_json(run_dir / store.ENV) if store.ENV in files.names else None
    if isinstance(env, dict):
        row["git_sha"] = env.get("git_sha")
        row["env"] = json.dumps({k: v for k, v in env.items() if k not in ("hostname",)}, sort_keys=True)
    return row


def _tidy_axis(column: pd.Series) -> pd.Series:
    """Parquet needs one type per column: numbers stay numbers, anything mixed becomes JSON text."""
    present = [v for v in column if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pd.to_numeric(column)
    if all(isinstance(v, str) for v in present):
        return column.astype(object)
    return column.map(lambda v: None if v is None else json.dumps(v, sort_keys=True, default=str))


def primary_metric_of(task: str | None) -> str:
    return "val/bbox_mAP" if task == "det" else "val/mIoU"


def collect(study: Study, results: str | Path = "results", write: bool = True) -> pd.DataFrame:
    """One row per planned run; with ``write``, also cached as ``results/<study>/runs.parquet``."""
    from kdbench.status import run_states_of, scan

    root = Path(results) / study.name
    scanned = scan(study, results)  # each run directory listed once, each file read once
    status_rows = run_states_of(study, scanned)
    states = {row["run_id"]: row["state"] for row in status_rows}
    reasons = {row["run_id"]: row.get("reason") for row in status_rows}
    teacher_keys = _teacher_keys(study)
    with store.gc_paused():
        rows = [_row(p, root / p.run_id, states.get(p.run_id, "missing"), teacher_keys[p.run_id],
                     scanned[p.run_id][0], reasons.get(p.run_id)) for p in study.runs]
    frame = pd.DataFrame(rows)
    for column in frame.columns:
        if column.startswith("axis:"):
            frame[column] = _tidy_axis(frame[column])
    frame["seed"] = pd.to_numeric(frame["seed"]).astype("Int64")
    # A complete run whose main metric is missing or not finite cannot be averaged: say so.
    primary = primary_metric_of(frame["task"].dropna().iloc[0] if frame["task"].notna().any() else None)
    if primary not in frame.columns:
        frame[primary] = math.nan
    bad = (frame["status"] == "complete") & frame[primary].isna()
    frame.loc[bad, "status"] = "corrupt"
    frame.loc[bad, "detail"] = f"{primary} missing or not finite in final.json"
    if write and root.is_dir():
        write_parquet_atomic(frame, cache_path(study, results))
    return frame


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Readers see the old file or the whole new one (temporary file + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def collect_curves(study: Study, results: str | Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Validation metrics over training, long format: one row per (run, evaluation, metric)."""
    root = Path(results) / study.name
    rows = []
    for record in frame[frame["kind"] != "teacher"].itertuples():
        label = record.method if isinstance(record.method, str) else "student baseline"
        for entry in store.read_jsonl(root / record.run_id / store.METRICS):
            step = _finite_or_nan(entry.get("iter"))
            for key, value in entry.items():
                if key != "iter" and not math.isnan(_finite_or_nan(value)) and not math.isnan(step):
                    rows.append({"run_id": record.run_id, "method": label, "seed": record.seed,
                                 "status": record.status, "iter": step, "metric": key, "value": float(value)})
    return pd.DataFrame(rows, columns=["run_id", "method", "seed", "status", "iter", "metric", "value"])
