"""What each ``kdbench`` verb does, one public function per verb, returning data: the CLI
(kdbench.cli) parses arguments and prints what these return; the tests and benchmarks/ call them
as the CLI does. This is the one layer that composes the others (runners, analysis, reports).

Every module but the vocabulary is imported inside the functions that need it, so ``kdbench --help``
and the verbs that only read specs and results start fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kdbench import roots
from kdbench.errors import UserError
from kdbench.vocab import FINISHED, NOT_COMPLETED, Action, State

if TYPE_CHECKING:
    from kdbench.expand import Study


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- studies --------------------------------------------------------------------------------------
def load(path: str | Path, results: str | Path | None = "results", max_runs: int | None = None,
         plugins: bool = True) -> Study:
    """The study at ``path``, planned for ``results`` (kdbench.stages.load_study; None: the study's
    own root, kdbench.roots, which a verb that reads results says on stderr); a defaults file
    (its name starts with ``_``) is refused, naming the studies that use it. ``plugins``: whether
    the study's plugins are imported (a verb that only reads results, status, collect, report and
    cancel, imports none: a plugin is code)."""
    from kdbench import plugins as plugin_modules
    from kdbench.expand import MAX_RUNS
    from kdbench.safeio import SPEC_CAP, read_capped
    from kdbench.stages import load_study

    def text(p: Path) -> str:  # a sibling that is a FIFO or huge is not read
        try:
            return read_capped(p, SPEC_CAP).decode(errors="replace")
        except OSError:
            return ""

    path = Path(path)
    if path.name.startswith("_"):
        users = sorted(p.name for p in path.parent.glob("[!_]*.yaml") if f"defaults: {path.name}" in text(p))
        shown = f"; the studies that use it: {', '.join(users)}" if users else ""
        raise UserError(f"{path}: a defaults file (its name starts with _), not a study: a study names it "
                        f"with `defaults: {path.name}`{shown}")
    if max_runs is not None and max_runs < 1:
        raise UserError(f"--max-runs: must be >= 1, got {max_runs}")
    with contextlib.nullcontext() if plugins else plugin_modules.not_imported():
        study = load_study(path, results, MAX_RUNS if max_runs is None else max_runs)
    if results is None and not plugins:   # a verb that reads results: say which root, and why (kdbench.roots)
        _say_root(study)
    return study


def _say_root(study: Study) -> None:
    _warn(f"kdbench: {study.name}: results root {study.results} ({study.root_source})")


@dataclass
class Plan:
    rows: list[dict]                              # kdbench.plan.plan_rows
    needs: list[str] = field(default_factory=list)  # what a launch would still need, one line each
    estimate: list[dict] | None = None            # kdbench.estimate.estimate_rows, when asked for


def plan(study: Study, model_check: bool = True, data_check: bool = True, estimate: bool = False,
         warn: Callable[[str], None] = _warn) -> Plan:
    """The study's runs with their states; what a launch would still need (checked against the
    models and the files unless told not to; listed, not refused); with ``estimate``, the compute
    per stage (from complete runs of the same models, else probed here)."""
    from kdbench.plan import plan_rows

    needs: list[str] = []
    if model_check or data_check:
        from runners.preflight import check_study

        check_study(study, models=model_check, files=data_check, needs=needs)
    weights = None
    if data_check:  # are the weight files each run downloads in the cache?
        from runners.preflight import study_weights
        from runners.weights import missing, presence

        by_run = study_weights(study)
        weights = {run_id: presence(files) for run_id, files in by_run.items()}
        absent = {file.name: file for files in by_run.values() for file in missing(files)}
        if absent:
            needs.append(f"{len(absent)} weight file(s) to download on a host with internet: kdbench fetch "
                         f"{study.path} ({', '.join(sorted(f.url for f in absent.values()))})")
    rows = plan_rows(study, weights)
    found = None
    if estimate:
        from kdbench.estimate import estimate_rows

        found = estimate_rows(study, _speeds(study, warn), {r["run_id"]: r["status"] for r in rows})
    return Plan(rows, needs, found)


def _speeds(study: Study, warn: Callable[[str], None]) -> dict:
    """Seconds per iteration by model pair: recorded under the results root, else probed here."""
    from kdbench.estimate import needed, recorded

    speeds = recorded(study.results)
    missing = needed(study, speeds)
    if missing:
        from runners.probe import probe

        warn(f"kdbench plan: probing {len(missing)} training step(s) here (no complete run of the same models "
             f"under {study.results})")
        for key, planned in missing.items():
            try:
                speeds[key] = probe(planned.run, study.resources.cpus, study.resources.gpus)
            except Exception as error:  # noqa: BLE001  (the plan stands; that model pair goes unestimated)
                first = str(error).splitlines()[0] if str(error) else ""
                warn(f"kdbench plan: the probe of {planned.name} failed: {type(error).__name__}: {first}")
    return speeds


def show(study: Study, run: str, config: bool = False) -> dict | str:
    """One run (its name or id) resolved, each value with where it comes from; with ``config``,
    the complete mmengine config it trains with instead."""
    from kdbench.origins import find_run
    from kdbench.origins import show as shown

    planned = find_run(study, run)
    if config:
        from runners.run_config import run_config

        return run_config(planned.run)
    return shown(study, planned)


# -- launching ------------------------------------------------------------------------------------
@dataclass
class Launched:
    study: Study                  # as planned after the launch (its later stages from the new results)
    decisions: list               # runners.launch.executor.Decision, one per run decided
    counts: dict[str, int]        # how many runs got each action
    described: list[str]          # a dry run: what the executor would hand the scheduler
    complete: int | None = None   # a local launch: runs complete after it
    ended_badly: int = 0          # ... and runs failed, diverged or corrupt
    failed: list = field(default_factory=list)  # ... and the runs it submitted that failed (RunStatus)


def launch(path: str | Path, results: str | Path, options, max_runs: int | None = None) -> Launched:
    """Check the options (before the spec: every problem at once), load the study once, build its
    one executor and launch (runners.launch.launcher); a local launch also counts what completed."""
    from kdbench.stages import reload
    from runners.launch.launcher import check_flags, executor_for, summary
    from runners.launch.launcher import launch as launched

    check_flags(options)
    study = load(path, results, max_runs)
    if results is None:   # where this launch writes, and why (kdbench.roots)
        _say_root(study)
    executor = executor_for(study, options)
    decisions = launched(study, options, executor)
    described = executor.describe(study, decisions) if options.dry_run else []
    if not options.dry_run:   # status, collect and report of this study read here unless told otherwise
        roots.remember(path, study.results)
    result = Launched(study, decisions, summary(decisions), described)
    if options.executor == "local" and not options.dry_run:
        result.study = reload(study)   # with the later stages its runs' results planned
        rows = status(result.study)
        states = [row.state for row in rows]
        result.complete = states.count(State.COMPLETE)
        result.ended_badly = sum(s in FINISHED and s != State.COMPLETE for s in states)
        submitted = {d.planned.run_id for d in decisions if d.action == Action.SUBMIT}
        result.failed = [r for r in rows if r.run_id in submitted and r.state in NOT_COMPLETED]
    return result


def fetch(study: Study, progress: bool = True) -> tuple[list[tuple], Path]:
    """Download and verify the weight files the study's runs need: (file, how) for each, and the
    cache that holds them."""
    from runners.preflight import study_weights
    from runners.weights import cache_dir
    from runners.weights import fetch as fetched

    return fetched([file for files in study_weights(study).values() for file in files], progress=progress), cache_dir()


def status(study: Study) -> list:
    """Each run's state (kdbench.states.RunStatus), from the results store and the executors."""
    from runners.launch.jobs import status as states

    return states(study)


def tensorboard(study: Study) -> str:
    """The command that shows every run of the study in TensorBoard, by name."""
    from runners.tracking import tensorboard_command

    return tensorboard_command(study)


def cancel(study: Study) -> list[str]:
    """Cancel the study's pending and running jobs (and its pending continuation); their run ids."""
    from runners.launch.jobs import cancel as cancelled

    return cancelled(study)


# -- results --------------------------------------------------------------------------------------
def collect(study: Study, write: bool = True):
    """The study's rows (analysis.collect), each run's state as the executors see its job; with
    ``write``, kept as ``results/<study>/runs.parquet`` when the study has a results directory."""
    from analysis.collect import collect as collected
    from kdbench import store
    from runners.launch.jobs import status as states

    scanned = store.scan(study.directory, [p.run_id for p in study.runs])
    return collected(study, scanned, states(study, scanned), write=write)


@dataclass
class Report:
    written: dict[str, Path]      # format -> the file written
    headline: str
    lines: list[str]
    statistics: dict | None = None  # with ``statistics``: reports.statistics.statistics_json


def report_formats(text: str) -> tuple[str, ...]:
    """``--format``'s comma-separated formats, each one the report renders."""
    from reports.render import FORMATS

    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"--format: unknown {', '.join(unknown) or '(none)'}; valid: {', '.join(FORMATS)}")
    return formats


def report(study: Study, formats: tuple[str, ...] = ("html", "md"), statistics: bool = False) -> Report:
    """Render the study's report in ``formats`` (``report_formats``) from its results, in one pass
    over them: the statistics are computed once (analysis.summary.summarise) and every format reads
    them; with ``statistics``, the same numbers as JSON too (what ``report --json`` prints)."""
    from analysis.summary import summarise
    from reports.render import render_report

    frame = collect(study)
    found = summarise(study, frame)
    written, headline, lines = render_report(study, frame, formats, found)
    as_json = None
    if statistics:
        from reports.statistics import statistics_json

        as_json = statistics_json(found)
    return Report(written, headline, lines, as_json)


# -- runs, losses, data, imports -------------------------------------------------------------------
@dataclass
class Ran:
    name: str
    out: str
    record: dict | None = None    # final.json, when the run completed
    error: str | None = None      # why it stopped, when it did not
    teacher_failure: str | None = None  # a complete teacher that failed its teacher gate: why


def run(run_file: str, out: str | None = None) -> Ran:
    """Execute one run file (runners.run.run_one) into ``out`` (default: the file's, else
    results/runs/<name>-<run_id>). A spec problem raises; a run that stops is reported, not raised."""
    from kdbench import store
    from kdbench.spec import load_run

    try:
        spec = load_run(run_file)
    except UserError as error:  # a launch's worker: recorded, so status and the launch see it failed
        from runners.run import record_load_failure

        record_load_failure(run_file, out, error)
        raise
    if spec.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from runners.run import run_one
    from runners.train import default_out

    out = out or spec.out or default_out(spec)
    try:
        record = run_one(spec, out, source=run_file)
    except UserError:
        raise
    except Exception as error:  # recorded in error.json by the run, when the disk lets it
        what = str(error) if isinstance(error, store.WriteError) else f"{type(error).__name__}: {error}"
        see = f" (see {out}/error.json)" if (Path(out) / store.ERROR).exists() else ""
        return Ran(spec.name, out, error=what + see)
    failure = store.teacher_check_failure(store.read_run(out)) if spec.role == "teacher" else None
    return Ran(spec.name, out, record, teacher_failure=failure)


def losses(plugins: list[str]) -> dict[str, dict]:
    """Every distillation loss (with those of ``plugins``): where it comes from, what it needs and
    its parameters with their defaults."""
    from kdbench import losses as registry
    from kdbench import plugins as loaded
    from kdbench.losses.params import INPUTS
    from kdbench.schema import Checker

    loaded.load(Checker("--plugin"), plugins, "", Path.cwd())
    return {name: {"origin": registry.origin(name),
                   **{needed: getattr(registry.declaration(name), needed) for needed in INPUTS},
                   "needs_adapter": registry.declaration(name).needs_adapter,
                   "needs_heads": registry.declaration(name).needs_heads,
                   "params": registry.parameters(name)} for name in registry.available()}


@dataclass
class DataCheck:
    lines: list[str]              # what was done and what the check found
    problem: str | None = None    # what a run's preflight would refuse, if anything


def data(action: str, name: str, root: str, workers: int | None = None, progress: bool = True) -> DataCheck:
    """``check`` a dataset's folders as a run's preflight does, or ``prepare`` a raw download first."""
    from runners.data import layout

    if name not in layout.LAYOUTS:
        raise UserError(f"NAME: {name!r} is not a dataset kdbench reads from disk; valid: "
                        f"{', '.join(layout.LAYOUTS)} (fashion_scenes is generated on first use)")
    if not Path(root).is_dir():
        raise UserError(f"ROOT: {root!r} is not a directory")
    if workers is not None and workers < 1:
        raise UserError(f"--workers: must be >= 1, got {workers}")
    lines = []
    if action == "prepare":
        if name == "cityscapes":
            from runners.data.cityscapes import prepare

            converted, already = prepare(root, workers, progress=progress)
            lines.append(f"kdbench data prepare: cityscapes: converted {converted} label maps to train ids"
                         f" ({already} already converted)")
        elif name == "voc":  # SBD's class maps and the augmented lists (runners.data.voc)
            from runners.data.voc import prepare as prepare_voc

            converted, already = prepare_voc(root, workers, progress=progress)
            lines.append(f"kdbench data prepare: voc: converted {converted} SBD class maps into SegmentationClassAug "
                         f"({already} already converted); ImageSets/Segmentation/aug.txt and trainaug.txt written")
        else:
            lines.append(f"kdbench data prepare: {name} needs no conversion; its check:")
    found = layout.check(name, root)
    lines += layout.describe(found)
    return DataCheck(lines, found.problem())


def import_config(source: str, config: str, gpus: int | None = None, as_study: bool = False,
                  output: str | None = None) -> str:
    """Another tool's config (``source``: mmrazor) as a kdbench run file (JSON) or study (YAML),
    checked to be valid (runners.mmrazor_study.import_text; its notes go to stderr); written to
    ``output`` when given. The text."""
    from kdbench import store
    from runners.mmrazor_study import import_text

    if source != "mmrazor":
        raise UserError(f"SOURCE: {source!r} is not valid; valid: mmrazor")
    if gpus is not None and gpus < 1:
        raise UserError(f"--gpus: must be >= 1, got {gpus}")
    text = import_text(config, gpus, as_study, output)
    if output is not None:
        store.write_text_atomic(output, text)
    return text
