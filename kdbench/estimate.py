"""``kdbench plan STUDY --estimate``: how much compute a study's training will take.

Each run's cost is its iterations times the seconds one iteration takes, times the GPUs it holds
(GPU-hours) or, on CPUs, the CPUs it holds (CPU-hours). The seconds per iteration come from the
complete runs under the results root with the same model pair (the trained model, and the teacher
of a distilled run), input size, batch size and device (``final.json``'s ``cost.seconds_per_iter``,
their median), else from a short probe of the training step measured here (runners.probe), and
the estimate says which. Complete runs that recorded them (``cost.startup_seconds``: from the
process's start to training, ``cost.evaluation_seconds`` over ``cost.evaluations``) add each run's
start-up and its evaluations (one per ``val_interval`` and one at the end) at their medians; the
totals show both apart. A probe measures neither: the estimate says so.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from kdbench import store
from kdbench.expand import PlannedRun, Study
from kdbench.spec import TOP_KEYS, RunSpec, parse_run
from kdbench.table import text_table
from kdbench.vocab import State


@dataclass(frozen=True)
class Speed:
    seconds_per_iter: float
    device: str                     # cuda | cpu: where it was measured
    source: str                     # "3 recorded runs" | "probe here (cpu, 3 steps)"
    startup_seconds: float | None = None      # median of the recorded runs' start-up; None: not measured
    evaluation_seconds: float | None = None   # median seconds of one evaluation; None: not measured


def evaluations(run: RunSpec) -> int:
    """How many times a run evaluates: every ``val_interval`` iterations and at the end (once, for
    a run that only evaluates)."""
    iterations, interval = run.schedule.iterations, run.schedule.val_interval
    if not iterations or not interval:
        return 1
    return iterations // interval + (1 if iterations % interval else 0)


def _overhead(cost: dict) -> tuple[float | None, float | None]:
    """A recorded run's start-up seconds and seconds per evaluation, where it measured them."""
    startup, seconds, count = cost.get("startup_seconds"), cost.get("evaluation_seconds"), cost.get("evaluations")
    per_eval = seconds / count if store.is_finite_number(seconds) and store.is_finite_number(count) and count > 0 \
        else None
    return (startup if store.is_finite_number(startup) else None), per_eval


def _median(values: list) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


def target_device(run: RunSpec, gpus: int) -> str:
    """Where a run of this study will train: on a GPU when the study asks for one."""
    return "cpu" if run.device == "cpu" or gpus == 0 else "cuda"


def speed_key(run: RunSpec, device: str) -> str:
    """What a run's seconds per iteration depend on: the model pair, input, batch and device."""
    teacher = run.teacher if run.distill else None
    trained = run.trained
    size = list(run.schedule.crop) if run.schedule.crop else [run.dataset.name, run.dataset.params.get("size")]
    return json.dumps([run.task, trained.config, trained.overrides, teacher and teacher.config,
                       teacher and teacher.overrides, size, run.schedule.batch_size, device], sort_keys=True)


def pair_text(run: RunSpec) -> str:
    """``student <- teacher`` for a distilled run, else the trained model's config."""
    short = lambda config: Path(config.split("::")[-1]).stem  # noqa: E731
    return f"{short(run.student.config)} <- {short(run.teacher.config)}" if run.distill else short(run.trained.config)


def recorded(results: str | Path) -> dict[str, Speed]:
    """The median seconds per iteration of complete runs under ``results``, by ``speed_key``
    (every study's run folders, and ``results/runs/``), leaving out those timed beside other work
    (``cost.shared``, runners.contention: slower than they are) unless every one was."""
    found: dict[str, list[tuple[bool, float, tuple]]] = {}
    for final_path in Path(results).glob("*/*/" + store.FINAL):
        run_dir = final_path.parent
        files = store.read_run(run_dir)
        cost = ((files.final or {}).get("cost") or {}) if files.state == State.COMPLETE else {}
        seconds = cost.get("seconds_per_iter")
        if not store.is_finite_number(seconds) or seconds <= 0:
            continue
        try:
            spec = store.read_json(os.path.join(run_dir, store.SPEC))   # the resolved run, and its id
            run = parse_run({k: v for k, v in spec.items() if k in TOP_KEYS}, str(run_dir / store.SPEC), ())
            device = store.read_json(os.path.join(run_dir, store.ENV)).get("device")
        except (OSError, ValueError, AttributeError):   # a run recorded by an older or foreign version
            continue
        if device in ("cpu", "cuda"):
            found.setdefault(speed_key(run, device), []).append((cost.get("shared") is True, seconds, _overhead(cost)))
    return {key: _speed(key, runs) for key, runs in found.items()}


def _speed(key: str, runs: list[tuple[bool, float, tuple]]) -> Speed:
    used = [r for r in runs if not r[0]] or runs   # those timed beside other work left out, unless all were
    left_out = f" ({len(runs) - len(used)} timed beside other work left out)" if len(used) < len(runs) else ""
    source = f"{len(used)} recorded run{'s' if len(used) > 1 else ''}{left_out}"
    measured = [r for r in used if r[2] != (None, None)] or runs   # start-up, evaluation: where measured
    return Speed(statistics.median(r[1] for r in used), json.loads(key)[-1], source,
                 _median([r[2][0] for r in measured]), _median([r[2][1] for r in measured]))


def needed(study: Study, speeds: dict[str, Speed]) -> dict[str, PlannedRun]:
    """The runs to probe: one per speed key that no recorded run gives (a run that trains); the
    probe's ``Speed`` is then stored under that key."""
    missing: dict[str, PlannedRun] = {}
    for planned in study.runs:
        key = speed_key(planned.run, target_device(planned.run, study.resources.gpus))
        if planned.run.schedule.iterations and key not in speeds:
            missing.setdefault(key, planned)
    return missing


def estimate_rows(study: Study, speeds: dict[str, Speed], states: dict[str, str]) -> list[dict]:
    """One row per stage and model pair: runs (all, still to run), iterations, seconds per
    iteration and its source, compute in hours (all, still to run) and its unit."""
    resources = study.resources
    groups: dict[tuple, dict] = {}
    for planned in study.runs:
        run = planned.run
        key = speed_key(run, target_device(run, resources.gpus))
        speed = speeds.get(key)
        unit = "GPU-h" if speed and speed.device == "cuda" else "CPU-h"
        holds = max(1, resources.gpus) if unit == "GPU-h" else resources.cpus
        row = groups.setdefault((planned.stage, pair_text(run), unit, speed), {
            "stage": planned.stage, "models": pair_text(run), "runs": 0, "left": 0, "iterations": 0,
            "seconds_per_iter": speed.seconds_per_iter if speed else None, "source": speed.source if speed else
            "evaluation only" if not run.schedule.iterations else "no estimate", "hours": 0.0, "hours_left": 0.0,
            "unit": unit, "startup_seconds": speed and speed.startup_seconds,
            "evaluation_seconds": speed and speed.evaluation_seconds, "startup_hours": 0.0, "evaluation_hours": 0.0})
        hours = run.schedule.iterations * (speed.seconds_per_iter if speed else 0.0) * holds / 3600
        startup = (row["startup_seconds"] or 0.0) * holds / 3600
        evaluation = evaluations(run) * (row["evaluation_seconds"] or 0.0) * holds / 3600
        row["runs"] += 1
        row["iterations"] += run.schedule.iterations
        row["hours"] += hours
        row["startup_hours"] += startup
        row["evaluation_hours"] += evaluation
        if states.get(planned.run_id) != State.COMPLETE:
            row["left"] += 1
            row["hours_left"] += hours + startup + evaluation
    return list(groups.values())


def format_estimate(study: Study, rows: list[dict]) -> str:
    seconds = lambda value: "-" if value is None else f"{value:.3g}"  # noqa: E731
    lines = text_table(("stage", "models", "runs", "left", "iterations", "s/iter", "start-up s", "s/eval", "source",
                        "compute", "left"),
                       [(r["stage"], r["models"], r["runs"], r["left"], r["iterations"], seconds(r["seconds_per_iter"]),
                         seconds(r["startup_seconds"]), seconds(r["evaluation_seconds"]), r["source"],
                         f"{_all(r):.3g} {r['unit']}", f"{r['hours_left']:.3g} {r['unit']}") for r in rows])
    lines.append("")
    for stage in dict.fromkeys(r["stage"] for r in rows):
        lines.append(f"{stage}: {_total([r for r in rows if r['stage'] == stage])}")
    unknown = sum(r["runs"] for r in rows if r["source"] == "no estimate")
    lines.append(f"study {study.name}: {_total(rows)} ({_parts(rows)}"
                 + (f"; {unknown} run(s) without an estimate)" if unknown else ")"))
    return "\n".join(lines)


def _all(row: dict) -> float:
    return row["hours"] + row["startup_hours"] + row["evaluation_hours"]


def _total(rows: list[dict]) -> str:
    units = dict.fromkeys(r["unit"] for r in rows)
    total = " + ".join(f"{sum(_all(r) for r in rows if r['unit'] == u):.3g} {u}" for u in units)
    left = " + ".join(f"{sum(r['hours_left'] for r in rows if r['unit'] == u):.3g} {u}" for u in units)
    return f"{total} in all, {left} still to run"


def _parts(rows: list[dict]) -> str:
    """The totals' parts: training steps, start-up and evaluation, or why the last two are missing."""
    measured = [r for r in rows if r["startup_seconds"] is not None or r["evaluation_seconds"] is not None]
    if not measured:
        return ("training steps only: start-up and evaluation are added once complete runs of these models "
                "under the results root have measured them")
    units = dict.fromkeys(r["unit"] for r in rows)
    part = lambda key: " + ".join(f"{sum(r[key] for r in rows if r['unit'] == u):.3g} {u}" for u in units)  # noqa: E731
    text = f"training steps {part('hours')}, start-up {part('startup_hours')}, evaluation {part('evaluation_hours')}"
    unmeasured = sum(r["runs"] for r in rows if r not in measured and r["source"] != "no estimate")
    return text + (f"; start-up and evaluation not measured for {unmeasured} run(s)" if unmeasured else "")
