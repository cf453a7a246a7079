"""The results store as a DataFrame: one row per planned run of a study, whatever its state.

Failed, diverged, corrupt and missing runs stay as rows (their metrics are NaN and their state
says why), so a report can count them; only complete runs with finite metrics are ever averaged
(analysis.aggregate). The frame is cached as ``results/<study>/runs.parquet``, written atomically.

Columns: ``run_id, name, kind, stage, status, detail, task, dataset, teacher_config,
student_config, location, location_kind, kd_method, distils`` (channel-wise or spatial, from the
terms' loss declarations), ``method, seed``, one ``axis:<path>`` column per other grid axis,
``teacher_key`` (the run id of a cell's teacher run), ``baseline_key`` (the axis values its
student baseline is planned per) and ``equal_budget`` (an equal-budget baseline: kdbench.budget),
one column per metric as the run wrote it (``val/mIoU``, ``val/bbox_mAP``, ...), ``cost:<key>``
from final.json's ``cost`` (and ``cost:train_seconds``: its iterations x seconds per iteration),
``data_complete`` / ``data_splits`` from its ``data`` (a dataset read from disk: whether its
splits are the official ones, and their counts), ``per_class`` (its per-class values as JSON text,
where the run recorded them), ``recipe:<key>`` from its recipe card
(a crop as ``HxW``), and ``git_sha`` / ``env`` from env.json.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from kdbench import budget, states, store
from kdbench.errors import UserError
from kdbench.expand import PlannedRun, Study
from kdbench.losses import registry
from kdbench.safeio import clean_leftovers, file_mode
from kdbench.spec import Model, RunSpec
from kdbench.study import is_baseline_axis
from kdbench.vocab import Kind, Stage, primary_metric

RUNS_FILE = "runs.parquet"
RECIPE_KEYS = ("global_batch", "per_process_batch", "processes", "nodes", "iterations", "epochs", "crop", "pipeline",
               "optimizer", "lr", "lr_schedule", "teacher_checkpoint", "teacher_mode", "precision",
               "weight_decay", "val_interval", "select", "student_init", "terms", "grad_clip")
COST_KEYS = ("seconds_per_iter", "teacher_share", "kd_share", "peak_memory_mb", "peak_memory_kind",
             "shared", "parallel", "load_average")   # shared: timed beside other work (runners.contention), 1 or 0
EQUAL_BUDGET = "equal_budget"  # True on the runs that are an equal-budget baseline (kdbench.budget)
AXIS, COST, RECIPE = "axis:", "cost:", "recipe:"  # the prefixes of the frame's axis, cost and recipe columns
TRAIN_SECONDS = COST + "train_seconds"  # iterations x median seconds per iteration (kdbench.budget.training_seconds)


def axis_column(path: str) -> str:
    """The frame's column of a grid axis: ``term.params.tau`` -> ``axis:term.params.tau``."""
    return AXIS + path


def axis_path(column: str) -> str:
    """A grid axis from its column: ``axis:term.params.tau`` -> ``term.params.tau``."""
    return column.removeprefix(AXIS)


def cache_path(study: Study) -> Path:
    return study.directory / RUNS_FILE


def _finite_or_nan(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return math.nan
    return float(value)


def _config_name(model: Model | None) -> str | None:
    return None if model is None else Path(model.config.split("::")[-1]).stem


def _places(run: RunSpec) -> list[str]:
    return [place for term in run.distill for place in term.student_location]


def _locations(run: RunSpec) -> str | None:
    return "; ".join(_places(run)) or None


def is_logits(location: str) -> bool:
    """Whether a student location is a score map: mmseg's classifier ``conv_seg`` or a detection
    head's classification branch (``gfl_cls``, ``retina_cls``, ``conv_cls``, ...); anything else
    (a backbone stage, ``decode_head.bottleneck``, an FPN level) is a feature map."""
    last = location.rsplit(".", 1)[-1]
    return last == "conv_seg" or last.endswith("cls")


def location_kind(run: RunSpec) -> str | None:
    """``logits``, ``feature`` or ``feature + logits``: what a run's distillation terms tap, from their
    student locations (never from the method's name); None without distillation."""
    kinds = {"logits" if is_logits(place) else "feature" for place in _places(run)}
    return " + ".join(sorted(kinds)) or None


def kd_methods(run: RunSpec) -> str | None:
    """The distillation terms' ``method`` (``cwd``, ``pi``, ...), in term order, ``; ``-joined."""
    return "; ".join(term.method for term in run.distill) or None


def term_kind(method: str, params: dict) -> str | None:
    """What a term's loss distils with these parameters, as its declaration says
    (``LossParams.distils``: ``channel-wise``, ``spatial``), or None: never from a name."""
    try:
        return registry.check_params(method, params).distils()
    except UserError:  # a plugin that is not loaded here, or parameters it no longer takes
        return None


def distils(run: RunSpec, known: dict | None = None) -> str | None:
    """``channel-wise``, ``spatial`` or ``channel-wise + spatial``: what a run's distillation terms'
    losses distil (``term_kind``); None without distillation or where a term's loss declares
    neither. ``known``: answers already found, by (method, parameters)."""
    known = {} if known is None else known
    kinds = set()
    for term in run.distill:
        key = (term.method, repr(sorted(term.params.items())))
        if key not in known:
            known[key] = term_kind(term.method, dict(term.params))
        kinds.add(known[key])
    return None if not kinds or None in kinds else " + ".join(sorted(kinds))


def recorded_distils(files: store.RunFiles) -> str | None:
    """What a complete run's terms distil as the run recorded it at training time (final.json
    ``terms``: each term's ``distils``), for a loss whose code is not imported here (a plugin:
    collect and report run no plugin code)."""
    terms = (files.final or {}).get("terms") if files.state == "complete" else None
    kinds = {term.get("distils") for term in terms or ()}
    if not kinds or not all(isinstance(kind, str) for kind in kinds):
        return None
    return " + ".join(sorted(kinds))


def _key(params: dict, keep) -> str:
    """Which teacher / baseline a run belongs to: the axis values that pick it, as sorted JSON."""
    return json.dumps({k: v for k, v in params.items() if keep(k)}, sort_keys=True, default=str)


def _detail(state: str, files: store.RunFiles, reason: str | None = None) -> str | None:
    """One line saying why a run has no result (``files``: its directory as scan read it: its
    error.json, or why it is corrupt; ``reason``: kdbench.status's reason for a blocked run,
    ``teacher <run id> failed``)."""
    if state in store.ERROR_STATES or state == "corrupt":
        return store.error_line(files) or "final.json or error.json is unreadable"
    return {"missing": "never started",
            "interrupted": "started, stopped without a result (a relaunch resumes it)",
            "running": f"its job is running{_said(reason)}",
            "pending": f"its job waits in the queue{_said(reason)}",
            "blocked": f"{reason or 'its teacher did not complete'}: "
                       + ("its job ended without starting" if files.job else "never submitted")}.get(state)


def _said(reason: str | None) -> str:
    return f" ({reason})" if reason else ""


def _teacher_setting(run: RunSpec) -> str:
    """What identifies the teacher a run uses: its teacher section (checkpoint aside) and dataset."""
    teacher = None if run.teacher is None else (run.teacher.config, run.teacher.overrides, run.teacher.trusted)
    return repr((teacher, run.dataset))


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
         reason: str | None = None, known: dict | None = None) -> dict:
    """One run's row; ``files``: its directory as ``store.scan`` read it; ``reason``: why
    kdbench.states says it is blocked; ``known``: the terms' kinds found so far (``distils``)."""
    run = planned.run
    row = {
        "run_id": planned.run_id, "name": planned.name, "kind": planned.kind, "stage": planned.stage,
        "status": state, "detail": _detail(state, files, reason), "task": run.task,
        "dataset": run.dataset.name,
        "teacher_config": _config_name(run.teacher), "student_config": _config_name(run.student),
        "location": _locations(run), "location_kind": location_kind(run), "kd_method": kd_methods(run),
        "distils": distils(run, known) or recorded_distils(files),
        "method": planned.params.get("method") if planned.kind == "cell" else None,
        "seed": run.seed,
        "teacher_key": teacher_key,
        "baseline_key": _key(planned.params, is_baseline_axis),
    }
    for key, value in planned.params.items():
        if key not in ("method", "seed"):
            row[axis_column(key)] = value
    if state == "complete":
        final = files.final or {}
        for key, value in (final.get("metrics") or {}).items():
            row[key] = _finite_or_nan(value)
        for key, value in (final.get("recipe") or {}).items():  # the recipe card, one text or number per field
            if key in RECIPE_KEYS:
                row[RECIPE + key] = "x".join(str(v) for v in value) if isinstance(value, list) else value
        data = final.get("data")
        if isinstance(data, dict):  # a dataset read from disk: its splits, and whether they are the official ones
            row["data_complete"] = data.get("complete") is True
            row["data_splits"] = json.dumps({"name": data.get("name"), "splits": data.get("splits")}, sort_keys=True)
        if isinstance(final.get(store.PER_CLASS), dict):  # each class's values, as JSON text (analysis.perclass)
            row[store.PER_CLASS] = json.dumps(final[store.PER_CLASS], sort_keys=True)
        cost = final.get("cost") or {}
        for key in COST_KEYS:
            value = cost.get(key)
            value = float(value) if key == "shared" and isinstance(value, bool) else value
            row[COST + key] = (value if isinstance(value, str) else None) if key == "peak_memory_kind" \
                else _finite_or_nan(value)
        row[TRAIN_SECONDS] = _finite_or_nan(budget.training_seconds(final))
    env = store.read_json(run_dir / store.ENV, run_dir.parent) if store.ENV in files.names else None
    if isinstance(env, dict):
        row["git_sha"] = env.get("git_sha") if isinstance(env.get("git_sha"), str) else None
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


def _equal_budget_runs(study: Study, frame: pd.DataFrame) -> pd.Series:
    """Which rows are equal-budget baselines (kdbench.budget): the twins, and a student baseline
    whose budget came out at its own iterations (its twin would be the very same run)."""
    recorded = (study.records.get(Stage.BUDGET) or {}).get("budgets", [])  # kdbench.stages.EqualBudget
    own = {b["baseline_run_id"] for b in recorded if b["run"] == b["baseline"]}
    return (frame["kind"] == Kind.STUDENT_BUDGET) | frame["run_id"].isin(own)


def collect(study: Study, scanned: dict[str, store.RunFiles] | None = None,
            statuses: list[states.RunStatus] | None = None, write: bool = True) -> pd.DataFrame:
    """One row per planned run; with ``write``, also kept as ``results/<study>/runs.parquet``.

    ``scanned``: the study's run directories as ``store.scan`` read them (read here when not given);
    ``statuses``: each run's state with its job's liveness (the CLI asks the executors,
    runners.launch.jobs.status); without them a run with no result and no live job counts as
    interrupted, as it would with its job gone.
    """
    scanned = store.scan(study.directory, [p.run_id for p in study.runs]) if scanned is None else scanned
    statuses = states.run_states(study, scanned, {}) if statuses is None else statuses
    by_id = {row.run_id: row for row in statuses}
    teacher_keys = _teacher_keys(study)
    known: dict = {}
    rows = [_row(p, study.directory / p.run_id, by_id[p.run_id].state, teacher_keys[p.run_id], scanned[p.run_id],
                 by_id[p.run_id].reason, known) for p in study.runs]
    frame = pd.DataFrame(rows)
    for column in frame.columns:
        if column.startswith((AXIS, RECIPE)):  # a recipe field a damaged final.json mixes types in, too
            frame[column] = _tidy_axis(frame[column])
        elif isinstance(frame[column].dtype, pd.StringDtype):
            # Plain Python strings: the tables read the frame row by row (to_dict), which walks an
            # arrow-backed string column element by element, several times slower.
            frame[column] = frame[column].astype(object)
    frame["seed"] = pd.to_numeric(frame["seed"]).astype("Int64")
    frame[EQUAL_BUDGET] = _equal_budget_runs(study, frame)
    # A complete run whose main metric is missing or not finite cannot be averaged: say so.
    primary = primary_metric(frame["task"].dropna().iloc[0] if frame["task"].notna().any() else None)
    if primary not in frame.columns:
        frame[primary] = math.nan
    bad = (frame["status"] == "complete") & frame[primary].isna()
    frame.loc[bad, "status"] = "corrupt"
    frame.loc[bad, "detail"] = f"{primary} missing or not finite in final.json"
    if write and study.directory.is_dir():
        write_parquet_atomic(frame, cache_path(study))
    return frame


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Readers see the old file or the whole new one (a unique temporary file + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path.parent, older_than=3600)  # a killed collect's temporary files
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, file_mode())  # the umask's mode, not mkstemp's 0600: a group shares the root
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def collect_curves(study: Study, frame: pd.DataFrame) -> pd.DataFrame:
    """Validation metrics over training, long format: one row per (run, evaluation, metric)."""
    root = study.directory
    rows = []
    for record in frame[frame["kind"].isin(("cell", "student_baseline"))].itertuples():  # not teachers, tune runs
        label = record.method if isinstance(record.method, str) else "student baseline"
        for entry in store.read_jsonl(root / record.run_id / store.METRICS, root):
            step = _finite_or_nan(entry.get("iter"))
            for key, value in entry.items():
                if key != "iter" and not math.isnan(_finite_or_nan(value)) and not math.isnan(step):
                    rows.append({"run_id": record.run_id, "method": label, "seed": record.seed,
                                 "status": record.status, "iter": step, "metric": key, "value": float(value)})
    return pd.DataFrame(rows, columns=["run_id", "method", "seed", "status", "iter", "metric", "value"])
