"""The ``kdbench`` command: one verb per step, each a thin wrapper over one function.

Heavy modules (torch, mmseg, mmdet) are imported inside the verbs that need them, so ``--help``
and the verbs that only read specs and results start fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from kdbench.errors import UserError

Verb = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
PLUGIN_NOTE = ("This verb imports the plugins a study or run file names (plugins:), and --plugin modules: "
               "a plugin is code: plan only studies you trust. status, collect and report import none.")


def _losses_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = PLUGIN_NOTE
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="also a plugin's losses: a .py file or an importable module (repeatable)")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")


def _losses(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from kdbench import losses, plugins
    from kdbench.schema import Checker

    plugins.load(Checker("--plugin"), args.plugin, "", Path.cwd())
    table = {name: {"origin": losses.origin(name),
                    "needs_labels": losses.declaration(name).needs_labels,
                    "needs_adapter": losses.declaration(name).needs_adapter,
                    "params": losses.parameters(name)} for name in losses.available()}
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    width = max(map(len, table))
    for name, info in table.items():
        params = ", ".join(f"{k}={v!r}" for k, v in info["params"].items())
        labels = "  [needs labels]" if info["needs_labels"] else ""
        where = "" if info["origin"].startswith("kdbench.losses.") else f"  [plugin: {info['origin']}]"
        print(f"{name:<{width}}  ({params}){labels}{where}")
    return 0


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = PLUGIN_NOTE
    parser.add_argument("run_file", metavar="RUN.json", help="a run file (see studies/README.md)")
    parser.add_argument("--out", help="output directory (default: the file's 'out', else "
                        "results/runs/<name>-<run_id>)")


def _run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from kdbench import store
    from kdbench.spec import load_run

    try:
        run = load_run(args.run_file)
    except UserError as error:  # a launch's worker: recorded, so status and the launch see it failed
        from runners.run import record_load_failure

        record_load_failure(args.run_file, args.out, error)
        raise
    if run.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from runners.run import run_one
    from runners.train import default_out

    out = args.out or run.out or default_out(run)
    try:
        record = run_one(run, out, source=args.run_file)
    except UserError:
        raise
    except Exception as error:  # recorded in error.json by the run, when the disk lets it
        what = str(error) if isinstance(error, store.WriteError) else f"{type(error).__name__}: {error}"
        see = f" (see {out}/error.json)" if (Path(out) / store.ERROR).exists() else ""
        print(f"kdbench run: {run.name} stopped: {what}{see}", file=sys.stderr)
        return 1
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in record["metrics"].items())
    print(f"kdbench run: {run.name} complete in {out}: {metrics}")
    failure = store.teacher_check_failure(store.read_run(out)) if run.role == "teacher" else None
    if failure:
        print(f"kdbench run: {run.name} failed its teacher gate: it {failure}", file=sys.stderr)
    return 0


def _study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY.yaml", help="a study spec (see studies/README.md)")
    parser.add_argument("--results", default="results", help="results root (default: results)")
    parser.add_argument("--max-runs", type=int, metavar="N",
                        help="refuse a grid of more than N runs before building it (default 100,000)")


def _load_study(args: argparse.Namespace):
    """The study of a study verb, its grid limited by --max-runs."""
    from pathlib import Path

    from kdbench.expand import MAX_RUNS, load_study

    if Path(args.study).name.startswith("_"):
        from kdbench.safeio import SPEC_CAP, read_capped

        def text(p: Path) -> str:  # a sibling that is a FIFO or huge is not read
            try:
                return read_capped(p, SPEC_CAP).decode(errors="replace")
            except OSError:
                return ""

        users = sorted(p.name for p in Path(args.study).parent.glob("[!_]*.yaml")
                       if f"defaults: {Path(args.study).name}" in text(p))
        shown = f"; the studies that use it: {', '.join(users)}" if users else ""
        raise UserError(f"{args.study}: a defaults file (its name starts with _), not a study: a study names it "
                        f"with `defaults: {Path(args.study).name}`{shown}")
    if args.max_runs is not None and args.max_runs < 1:
        raise UserError(f"--max-runs: must be >= 1, got {args.max_runs}")
    return load_study(args.study, args.results, MAX_RUNS if args.max_runs is None else args.max_runs)


def _load_study_without_plugins(args: argparse.Namespace):
    """``_load_study`` for a verb that only reads results: the study's plugins are not imported."""
    from kdbench import plugins

    with plugins.not_imported():
        return _load_study(args)


def _check_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--no-model-check", action="store_true",
                        help=f"skip checking distilled locations and shapes against the models {what}")
    parser.add_argument("--no-data-check", action="store_true",
                        help=f"skip checking dataset roots and teacher checkpoint files {what}")


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = PLUGIN_NOTE
    _study_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON list of runs instead of a table")
    parser.add_argument("--estimate", action="store_true",
                        help="also estimate the compute per stage and in all (GPU-hours, or CPU-hours on CPUs), from "
                             "complete runs of the same models under --results, else from a short probe measured here")
    parser.add_argument("--show", metavar="RUN",
                        help="print one run (its name or id) resolved, as JSON, each value with where it comes from")
    parser.add_argument("--config", action="store_true",
                        help="with --show: the complete mmengine config the run trains with instead")
    _check_arguments(parser, "(e.g. planning on a machine without the data)")


def _plan(args: argparse.Namespace) -> int:
    from kdbench.plan import format_plan, plan_json, plan_rows

    if args.show is not None and args.estimate:
        raise UserError("--estimate: not with --show RUN, which prints one run")
    study = _load_study(args)
    if args.config and args.show is None:
        raise UserError("--config: give the run with --show RUN (its name or id)")
    if args.show is not None:
        import json

        from kdbench.origins import find_run, show

        planned = find_run(study, args.show)
        if args.config:
            from runners.run_config import run_config

            print(run_config(planned.run))
        else:
            print(json.dumps(show(study, planned), indent=2))
        return 0
    needs: list[str] = []  # what a launch would still need: listed below the grid, not refused
    if not (args.no_model_check and args.no_data_check):
        from runners.preflight import check_study

        check_study(study, models=not args.no_model_check, files=not args.no_data_check, needs=needs)
    weights = None
    if not args.no_data_check:  # are the weight files each run downloads in the cache?
        from runners.preflight import study_weights
        from runners.weights import missing, presence

        by_run = study_weights(study)
        weights = {run_id: presence(files) for run_id, files in by_run.items()}
        absent = {file.name: file for files in by_run.values() for file in missing(files)}
        if absent:
            needs.append(f"{len(absent)} weight file(s) to download on a host with internet: kdbench fetch "
                         f"{args.study} ({', '.join(sorted(f.url for f in absent.values()))})")
    rows = plan_rows(study, weights)
    estimate = _estimate(study, rows) if args.estimate else None
    if args.json:
        import json

        print(plan_json(rows) if estimate is None else json.dumps({"runs": rows, "estimate": estimate}, indent=2,
                                                                   sort_keys=True))
    else:
        print(format_plan(study, rows))
        if estimate is not None:
            from kdbench.estimate import format_estimate

            print("\n" + format_estimate(study, estimate))
        if needs:
            print("\nBefore kdbench launch can run this study, it needs:")
            print("\n".join(f"- {need}" for need in needs))
    return 0


def _estimate(study, rows: list[dict]) -> list[dict]:
    """``plan --estimate``'s rows (kdbench.estimate), from recorded or probed speeds."""
    from kdbench.estimate import estimate_rows

    return estimate_rows(study, _speeds(study), {r["run_id"]: r["status"] for r in rows})


def _speeds(study) -> dict:
    """Seconds per iteration by model pair: recorded under the results root, else probed here."""
    from kdbench.estimate import needed, recorded

    speeds = recorded(study.results)
    missing = needed(study, speeds)
    if missing:
        from runners.probe import probe

        print(f"kdbench plan: probing {len(missing)} training step(s) here (no complete run of the same models "
              f"under {study.results})", file=sys.stderr, flush=True)
        for key, planned in missing.items():
            try:
                speeds[key] = probe(planned.run, study.resources.cpus, study.resources.gpus)
            except Exception as error:  # noqa: BLE001  (the plan stands; that model pair goes unestimated)
                print(f"kdbench plan: the probe of {planned.name} failed: {type(error).__name__}: "
                      f"{_shown(str(error).splitlines()[0] if str(error) else '')}", file=sys.stderr)
    return speeds


def _launch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = PLUGIN_NOTE
    _study_arguments(parser)
    parser.add_argument("--executor", default="local", help="local (default: subprocesses here) or slurm")
    parser.add_argument("--dry-run", action="store_true", help="show what would be submitted; submit nothing")
    parser.add_argument("--retry-failed", action="store_true", help="resubmit failed, diverged and kd_inactive runs")
    parser.add_argument("--ignore-teacher-check", action="store_true",
                        help="run the students of a teacher that scored off its teacher.expect")
    parser.add_argument("--parallel", type=int, help="local: runs at a time (default 1)")
    parser.add_argument("--partition", help="SLURM partition (default: the study's, else the cluster's)")
    parser.add_argument("--account", help="SLURM account to charge (default: the study's resources.account)")
    parser.add_argument("--qos", help="SLURM quality of service (default: the study's resources.qos)")
    parser.add_argument("--reservation", help="SLURM reservation (default: the study's resources.reservation)")
    parser.add_argument("--gpus", type=int, help="GPUs per run (per node with --nodes)")
    parser.add_argument("--nodes", type=int, help="SLURM: nodes per run (one task per GPU on each)")
    parser.add_argument("--cpus", type=int, help="CPUs per task")
    parser.add_argument("--mem-gb", type=int, help="memory per run, GB")
    parser.add_argument("--time-min", type=int, help="time limit per job, minutes")
    parser.add_argument("--array-parallelism", type=int, help="SLURM: array tasks running at once (default 64)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-fetch", action="store_true",
                        help="do not download the runs' weight files here first (SLURM jobs never download: "
                             "a file not in the cache then refuses the launch)")
    _check_arguments(parser, "before submitting")


def _launch(args: argparse.Namespace) -> int:
    from runners.launch.launcher import LaunchOptions, check_flags, check_options, describe, launch, summary

    for flag, value, executor in (("--parallel", args.parallel, "local"),
                                  ("--array-parallelism", args.array_parallelism, "slurm")):
        if value is not None and args.executor != executor and args.executor in ("local", "slurm"):
            raise UserError(f"{flag}: applies to --executor {executor} only, not {args.executor}")
    options = LaunchOptions(
        executor=args.executor, dry_run=args.dry_run, retry_failed=args.retry_failed,
        parallel=1 if args.parallel is None else args.parallel,
        resources={"partition": args.partition, "gpus": args.gpus, "cpus": args.cpus, "mem_gb": args.mem_gb,
                   "time_min": args.time_min, "account": args.account, "qos": args.qos,
                   "reservation": args.reservation, "nodes": args.nodes},
        array_parallelism=64 if args.array_parallelism is None else args.array_parallelism,
        progress=not args.no_progress, model_check=not args.no_model_check, data_check=not args.no_data_check,
        ignore_teacher_check=args.ignore_teacher_check, fetch=not args.no_fetch)
    check_flags(options)  # every option before any work or output, the spec's problems after
    study = _load_study(args)
    executor = check_options(study, options)
    decisions = launch(study, options)
    checked = None
    if args.dry_run and args.executor == "slurm":
        from runners.launch.slurm import reachable

        checked = reachable()
        if checked:  # the dry run refuses what the launch would refuse
            executor.check()
    if args.dry_run:
        for d in decisions:
            print(f"{d.planned.run_id}  {d.planned.name:<30} {d.planned.stage:<8} {d.state:<9} {d.action}")
        if args.executor == "slurm":
            note = ("the resources fit the cluster's nodes" if checked else
                    "no SLURM controller answers here: the resources are not checked against its nodes")
            print("\n".join(["", "would submit to SLURM:", *describe(study, decisions, executor), f"({note})"]))
    counts = summary(decisions)
    verb = "would submit" if args.dry_run else "submitted"
    others = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "submit")
    print(f"kdbench launch: {study.name}: {verb} {counts.get('submit', 0)}" + (f"; {others}" if others else ""))
    failed = []
    if args.executor == "local" and not args.dry_run:
        from kdbench import store
        from kdbench.expand import reload
        from runners.launch.jobs import status

        study = reload(study)  # with the later stages its runs' results planned
        rows = status(study)
        states = [r.state for r in rows]
        bad = sum(s in (*store.ERROR_STATES, "corrupt") for s in states)
        print(f"kdbench launch: {states.count('complete')} of {len(states)} runs complete"
              + (f", {bad} failed or diverged (kdbench status {args.study})" if bad else ""))
        submitted = {d.planned.run_id for d in decisions if d.action == "submit"}
        failed = [r for r in rows if r.run_id in submitted and r.state in (*store.ERROR_STATES, "corrupt", "blocked")]
        for row in failed:  # the launch fails with them: exit 1
            print(f"kdbench launch: {row.name} {row.state}: {row.reason or '-'}", file=sys.stderr)
    for waiting in study.waiting:
        print(f"kdbench launch: {waiting.stage}: planned later: {waiting.why}")
    return 1 if failed else 0


def _fetch_arguments(parser: argparse.ArgumentParser) -> None:
    _study_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fetch(args: argparse.Namespace) -> int:
    from collections import Counter

    study = _load_study(args)
    from runners.preflight import study_weights
    from runners.weights import cache_dir, fetch

    files = [file for run_files in study_weights(study).values() for file in run_files]
    fetched = fetch(files, progress=not args.no_progress)
    for file, how in fetched:
        print(f"{how:<10}  {file.name}  ({file.reference})")
    counts = ", ".join(f"{n} {how}" for how, n in sorted(Counter(how for _, how in fetched).items()))
    print(f"kdbench fetch: {study.name}: {len(fetched)} weight file(s) in {cache_dir()}"
          + (f" ({counts})" if counts else ""))
    return 0


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    _study_arguments(parser)
    parser.add_argument("--tensorboard", action="store_true",
                        help="print the command that shows every run of the study in TensorBoard, by name")


def _status(args: argparse.Namespace) -> int:
    study = _load_study_without_plugins(args)
    if args.tensorboard:
        from runners.tracking import tensorboard_command

        print(tensorboard_command(study))
        return 0
    from kdbench.states import format_status
    from runners.launch.jobs import status

    print(format_status(study, status(study)))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    study = _load_study_without_plugins(args)
    from runners.launch.jobs import cancel

    print(f"kdbench cancel: {study.name}: cancelled {len(cancel(study))} run(s)")
    return 0


def _collected(study):
    """The study's rows (analysis.collect) with each run's state as the executors see its job."""
    from analysis.collect import collect
    from kdbench import store
    from runners.launch.jobs import status

    scanned = store.scan(study.directory, [p.run_id for p in study.runs])
    return collect(study, scanned, status(study, scanned))


def _collect(args: argparse.Namespace) -> int:
    study = _load_study_without_plugins(args)
    from analysis.collect import cache_path

    frame = _collected(study)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(frame["status"].value_counts().items()))
    where = cache_path(study)
    print(f"kdbench collect: {study.name}: {len(frame)} runs ({counts})"
          + (f" -> {where}" if where.exists() else " (no results directory yet: nothing written)"))
    return 0


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    _study_arguments(parser)
    parser.add_argument("--format", default="html,md",
                        help="comma-separated: html (one self-contained index.html), md (README.md + PNGs)")
    parser.add_argument("--json", action="store_true",
                        help="print the statistics (intervals, Δ tests, verdicts, seeds needed) as a JSON object")


def _report(args: argparse.Namespace) -> int:
    from reports.render import FORMATS, render_report

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"--format: unknown {', '.join(unknown) or '(none)'}; valid: {', '.join(FORMATS)}")
    study = _load_study_without_plugins(args)
    frame = _collected(study)
    written, headline, lines = render_report(study, frame, formats)  # one pass over the results
    if args.json:
        import json

        from reports.statistics import study_statistics

        print(json.dumps({"study": study.name, "written": {k: str(p) for k, p in written.items()},
                          "headline": headline, "lines": lines, **study_statistics(study, frame)},
                         indent=2, ensure_ascii=False))
        return 0
    for kind, path in written.items():
        print(f"kdbench report: {study.name}: {kind}: {path}")
    print("\n".join([headline, *(f"  - {line}" for line in lines)]))
    return 0


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("The config is executed as Python (mmengine reads a config by running it, and its _base_ "
                     "files too): import only configs you trust.")
    parser.add_argument("source", choices=["mmrazor"], help="what the config is: mmrazor (an MMRazor 1.x "
                        "SingleTeacherDistill + ConfigurableDistiller config)")
    parser.add_argument("config", metavar="CONFIG.py", help="the config file (its _base_ files beside it)")
    parser.add_argument("--study", action="store_true", help="write a study (YAML) instead of a run file (JSON)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write FILE (default: print to stdout)")
    parser.add_argument("--gpus", type=int, metavar="N", help="GPUs of the recipe: the global batch is N x the "
                        "config's images per GPU (default: from the name's NxbM, else 8)")


def _import(args: argparse.Namespace) -> int:
    import json

    import yaml

    from kdbench.spec import parse_run
    from runners.mmrazor_import import as_study, convert

    if args.gpus is not None and args.gpus < 1:
        raise UserError(f"--gpus: must be >= 1, got {args.gpus}")
    run = convert(args.config, args.gpus)
    parse_run(run, args.config)  # what is written is a valid run
    text = (yaml.safe_dump(as_study(run), sort_keys=False, width=120) if args.study
            else json.dumps(run, indent=2) + "\n")
    if args.output is None:
        sys.stdout.write(text)
        return 0
    from kdbench.store import write_text_atomic

    write_text_atomic(args.output, text)
    print(f"kdbench import: {args.config} -> {args.output}", file=sys.stderr)
    return 0


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("check", "prepare"),
                        help="check: what a run's preflight sees (splits, counts, missing pieces); prepare: convert a "
                             "raw download into what mmseg/mmdet read (resumable; a second call does nothing)")
    parser.add_argument("name", metavar="NAME", help="the dataset: cityscapes or coco")
    parser.add_argument("root", metavar="ROOT", help="its folder, as a run's dataset.root names it")
    parser.add_argument("--workers", type=int, help="prepare: maps converted at a time (default: the cores, up to 8)")
    parser.add_argument("--no-progress", action="store_true", help="prepare: no progress bar")


def _data(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runners.data import layout

    if args.name not in layout.LAYOUTS:
        raise UserError(f"NAME: {args.name!r} is not a dataset kdbench reads from disk; valid: "
                        f"{', '.join(layout.LAYOUTS)} (fashion_scenes is generated on first use)")
    if not Path(args.root).is_dir():
        raise UserError(f"ROOT: {args.root!r} is not a directory")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers: must be >= 1, got {args.workers}")
    if args.action == "prepare":
        if args.name == "cityscapes":
            from runners.data.cityscapes import prepare

            converted, already = prepare(args.root, args.workers, progress=not args.no_progress)
            print(f"kdbench data prepare: cityscapes: converted {converted} label maps to train ids"
                  f" ({already} already converted)")
        else:
            print(f"kdbench data prepare: {args.name} needs no conversion; its check:")
    found = layout.check(args.name, args.root)
    print("\n".join(layout.describe(found)))
    problem = found.problem()
    if problem:
        raise UserError(problem)
    return 0


SUITES = ("grid", "data", "losses", "step")  # grid and data first: as on a login node, in a process without torch


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="all", choices=[*SUITES, "all"],
                        help="losses: every KD loss against a plain-autograd reference of the same math; step: a KD "
                             "training step against student step + teacher forward; grid: plan/status/collect/"
                             "report at 1k and 10k runs, and CLI start-up; data: the dataset preflight on Cityscapes "
                             "and COCO trees of the official size, uncached and cached (default: all)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure and the machine as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables and the machine as markdown")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="losses: spatial scale of the paper's shapes (default 1.0 = the paper's shapes)")
    parser.add_argument("--methods", help="losses: comma-separated methods (default: every registered loss)")
    parser.add_argument("--cases", help="step: comma-separated cases (default: all; see benchmarks/step.py)")
    parser.add_argument("--sizes", default="1000,10000", help="grid: comma-separated grid sizes (default 1000,10000)")
    parser.add_argument("--precisions", help="step: comma-separated of fp32,bf16,fp16 (default: fp32 on a CPU, "
                                             "all three on a GPU)")


def _csv(text: str | None, flag: str, cast=str) -> list | None:
    if text is None:
        return None
    try:
        values = [cast(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected a comma-separated list, got {text!r}") from None
    if not values:
        raise UserError(f"{flag}: empty list")
    return values


def _check_names(names: list[str] | None, flag: str, suite: str, chosen: str) -> None:
    """``--cases`` (step) and ``--methods`` (losses): known names, and a suite that runs them."""
    import importlib

    if names is None:
        return
    if chosen not in (suite, "all"):
        raise UserError(f"{flag}: applies to --suite {suite} (or all), not {chosen}")
    from kdbench import losses
    from kdbench.schema import did_you_mean

    valid = [case[0] for case in importlib.import_module("benchmarks.step").CASES] if suite == "step" \
        else losses.available()
    unknown = next((name for name in names if name not in valid), None)
    if unknown is not None:
        what = "step case" if suite == "step" else "method"
        raise UserError(f"{flag}: unknown {what} {unknown!r}{did_you_mean(unknown, valid)}; valid: {', '.join(valid)}")


def _bench(args: argparse.Namespace) -> int:
    import importlib

    from benchmarks.machine import machine
    from kdbench.store import write_json_atomic, write_text_atomic

    if not 0 < args.scale <= 1 or args.repeats < 1:
        raise UserError("--scale must be in (0, 1] and --repeats >= 1")
    from pathlib import Path

    for flag, target in (("--json", args.json), ("--markdown", args.markdown)):
        if target and not Path(target).resolve().parent.is_dir():  # found now, not after minutes of timing
            raise UserError(f"{flag}: {target}: its directory does not exist")
    sizes = _csv(args.sizes, "--sizes", int)
    if any(n < 1 for n in sizes):
        raise UserError(f"--sizes: grid sizes must be >= 1, got {args.sizes}")
    precisions = _csv(args.precisions, "--precisions")
    from kdbench.spec import PRECISIONS

    if precisions and not set(precisions) <= set(PRECISIONS):
        raise UserError(f"--precisions: {args.precisions!r}; valid: {', '.join(PRECISIONS)}")
    _check_names(_csv(args.cases, "--cases"), "--cases", "step", args.suite)   # before any suite prints a line
    _check_names(_csv(args.methods, "--methods"), "--methods", "losses", args.suite)
    calls = {
        "losses": lambda m: m.run(scale=args.scale, repeats=args.repeats, methods=_csv(args.methods, "--methods"),
                                  progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True)),
        "step": lambda m: m.run(repeats=args.repeats, cases=_csv(args.cases, "--cases"), precisions=precisions),
        "grid": lambda m: m.run(sizes=tuple(sizes)),
        "data": lambda m: m.run(repeats=args.repeats),
    }
    suites = SUITES if args.suite == "all" else (args.suite,)
    rows: list[dict] = []
    tables: dict[str, str] = {}
    for suite in suites:
        module = importlib.import_module(f"benchmarks.{suite}")
        print(f"== kdbench bench --suite {suite}", flush=True)
        suite_rows = calls[suite](module)
        tables[suite] = module.format_rows(suite_rows)
        print(tables[suite], flush=True)
        rows.extend(suite_rows)
    facts = machine() if args.json or args.markdown else None  # one look at the machine for both files
    if args.json:
        write_json_atomic(args.json, {"machine": facts, "suites": list(suites), "results": rows})
        print(f"kdbench bench: wrote {args.json}")
    if args.markdown:
        from benchmarks.machine import markdown

        write_text_atomic(args.markdown, markdown(facts, tables, " ".join(["kdbench bench", *sys.argv[2:]])))
        print(f"kdbench bench: wrote {args.markdown}")
    disagree = [r for r in rows if r.get("agrees") is False]
    for row in disagree:
        print(f"kdbench bench: {row.get('method')} on {row.get('input')} does not agree with its reference",
              file=sys.stderr)
    return 1 if disagree else 0


VERBS: dict[str, Verb] = {
    "bench": ("performance benchmarks, as ratios measured side by side", _bench_arguments, _bench),
    "launch": ("run or submit a study's runs that still need doing", _launch_arguments, _launch),
    "fetch": ("download and verify the weight files a study's runs need", _fetch_arguments, _fetch),
    "status": ("each run's state, from the results store and the scheduler", _status_arguments, _status),
    "cancel": ("cancel a study's pending and running jobs", _study_arguments, _cancel),
    "collect": ("gather a study's results into results/<study>/runs.parquet", _study_arguments, _collect),
    "report": ("render a study's report (HTML and markdown) from its results", _report_arguments, _report),
    "plan": ("show the runs of a study, their stages and states", _plan_arguments, _plan),
    "run": ("execute one run described by a JSON file", _run_arguments, _run),
    "losses": ("list the distillation losses and their parameters", _losses_arguments, _losses),
    "data": ("check a dataset's folders as a run's preflight does, or prepare a raw download",
             _data_arguments, _data),
    "import": ("turn another tool's config into a kdbench run or study (mmrazor)", _import_arguments, _import),
}


def _shown(text: str) -> str:
    """``text`` as one line that shows what it holds: a newline, a control or a bidirectional-override
    character quoted from a spec is escaped (``\\u202e``), so it cannot hide or reorder the rest."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdbench",
        description="Knowledge distillation for dense prediction: studies, runs, reports.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name, (help_text, add_arguments, _) in VERBS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return VERBS[args.verb][2](args) or 0
    except UserError as error:  # every problem found, one line each
        for each in error.errors:
            print(f"kdbench {args.verb}: error: {_shown(str(each))}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"kdbench {args.verb}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # a full disk, a read-only results directory: one line, no traceback
        print(f"kdbench {args.verb}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
