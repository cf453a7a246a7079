"""The ``kdbench`` command: one verb per step. Each verb parses its arguments, calls its one function
in kdbench.app (benchmarks.suites for ``bench``: heavy modules load there, inside the verbs that need
them, so ``--help`` starts fast) and prints what it returns; nothing else."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable

from kdbench import app
from kdbench.errors import UserError

PLUGINS = ("This verb imports the plugins a study or run file names (plugins:), and --plugin modules: a plugin is "
           "code: plan only studies you trust. status, collect and report import none.")
EPILOGS = {"plan": PLUGINS, "launch": PLUGINS, "run": PLUGINS, "losses": PLUGINS,
           "import": "The config is executed as Python (mmengine reads a config by running it, and its _base_ files "
                     "too): import only configs you trust."}


def _shown(text: str) -> str:
    """``text`` on one line, a control or bidirectional-override character escaped (``\\u202e``)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _warn(line: str) -> None:
    print(_shown(line), file=sys.stderr, flush=True)


def _losses_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="also a plugin's losses: a .py file or an importable module (repeatable)")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")


def _losses(args: argparse.Namespace) -> int:
    table = app.losses(args.plugin)
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    width = max(map(len, table))
    for name, info in table.items():
        params = ", ".join(f"{k}={v!r}" for k, v in info["params"].items())
        labels = "".join(f"  [needs {k[6:]}]" for k in info if k[:6] == "needs_" and k != "needs_adapter" and info[k])
        where = "" if info["origin"].startswith("kdbench.losses.") else f"  [plugin: {info['origin']}]"
        print(f"{name:<{width}}  ({params}){labels}{where}")
    return 0


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_file", metavar="RUN.json", help="a run file (see studies/README.md)")
    parser.add_argument("--out", help="output directory (default: the file's 'out', else results/runs/<name>-<run_id>)")


def _run(args: argparse.Namespace) -> int:
    ran = app.run(args.run_file, args.out)
    if ran.error is not None:
        print(f"kdbench run: {ran.name} stopped: {ran.error}", file=sys.stderr)
        return 1
    print(f"kdbench run: {ran.name} complete in {ran.out}: "
          + ", ".join(f"{k} {v:.4g}" for k, v in ran.record["metrics"].items()))
    if ran.teacher_failure:
        print(f"kdbench run: {ran.name} failed its teacher gate: it {ran.teacher_failure}", file=sys.stderr)
    return 0


def _study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY.yaml", help="a study spec (see studies/README.md)")
    parser.add_argument("--results", help="results root (default: the study's results:, its last launch's, results)")
    parser.add_argument("--max-runs", type=int, metavar="N",
                        help="refuse a grid of more than N runs before building it (default 100,000)")


def _study_and(flag: str, help_text: str) -> Callable[[argparse.ArgumentParser], None]:
    return lambda parser: (_study_arguments(parser), parser.add_argument(flag, action="store_true", help=help_text))


def _check_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--no-model-check", action="store_true",
                        help=f"skip checking distilled locations and shapes against the models {what}")
    parser.add_argument("--no-data-check", action="store_true",
                        help=f"skip checking dataset roots and teacher checkpoint files {what}")


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
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
    from kdbench.estimate import format_estimate
    from kdbench.plan import format_plan, plan_json

    if args.show is not None and args.estimate:
        raise UserError("--estimate: not with --show RUN, which prints one run")
    study = app.load(args.study, args.results, args.max_runs)
    if args.config and args.show is None:
        raise UserError("--config: give the run with --show RUN (its name or id)")
    if args.show is not None:
        shown = app.show(study, args.show, args.config)
        print(shown if args.config else json.dumps(shown, indent=2))
        return 0
    found = app.plan(study, not args.no_model_check, not args.no_data_check, args.estimate, _warn)
    if args.json:
        print(plan_json(found.rows) if found.estimate is None else
              json.dumps({"runs": found.rows, "estimate": found.estimate}, indent=2, sort_keys=True))
        return 0
    print(format_plan(study, found.rows))
    if found.estimate is not None:
        print("\n" + format_estimate(study, found.estimate))
    if found.needs:
        print("\n".join(["\nBefore kdbench launch can run this study, it needs:", *(f"- {n}" for n in found.needs)]))
    return 0


def _launch_arguments(parser: argparse.ArgumentParser) -> None:
    _study_arguments(parser)
    parser.add_argument("--executor", default="local", help="local (default: subprocesses here) or slurm")
    for flag, what in (("--dry-run", "show what would be submitted; submit nothing"),
                       ("--retry-failed", "resubmit failed, diverged and kd_inactive runs"),
                       ("--ignore-teacher-check", "run the students of a teacher that scored off its teacher.expect"),
                       ("--no-progress", "no progress bar"),
                       ("--no-fetch", "do not download the runs' weight files here first (SLURM jobs never download: "
                                      "a file not in the cache then refuses the launch)")):
        parser.add_argument(flag, action="store_true", help=what)
    parser.add_argument("--parallel", type=int, help="local: runs at a time (default 1)")
    for flag, what in (("--partition", "SLURM partition (default: the study's, else the cluster's)"),
                       ("--account", "SLURM account to charge (default: the study's resources.account)"),
                       ("--qos", "SLURM quality of service (default: the study's resources.qos)"),
                       ("--reservation", "SLURM reservation (default: the study's resources.reservation)")):
        parser.add_argument(flag, help=what)
    for flag, what in (("--gpus", "GPUs per run (per node with --nodes)"),
                       ("--nodes", "SLURM: nodes per run (one task per GPU on each)"), ("--cpus", "CPUs per task"),
                       ("--mem-gb", "memory per run, GB"), ("--time-min", "time limit per job, minutes"),
                       ("--array-parallelism", "SLURM: array tasks running at once (default 64)")):
        parser.add_argument(flag, type=int, help=what)
    _check_arguments(parser, "before submitting")


def _launch(args: argparse.Namespace) -> int:
    from runners.launch.launcher import LaunchOptions

    resources = ("partition", "gpus", "cpus", "mem_gb", "time_min", "account", "qos", "reservation", "nodes")
    options = LaunchOptions(
        executor=args.executor, dry_run=args.dry_run, retry_failed=args.retry_failed, parallel=args.parallel,
        resources={key: getattr(args, key) for key in resources}, array_parallelism=args.array_parallelism,
        progress=not args.no_progress, model_check=not args.no_model_check, data_check=not args.no_data_check,
        ignore_teacher_check=args.ignore_teacher_check, fetch=not args.no_fetch)
    launched = app.launch(args.study, args.results, options, args.max_runs)
    study = launched.study
    if args.dry_run:
        for d in launched.decisions:
            print(f"{d.planned.run_id}  {d.planned.name:<30} {d.planned.stage:<8} {d.state:<9} {d.action}")
        if launched.described:
            print("\n".join(["", *launched.described]))
    counts = launched.counts
    others = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "submit")
    print(f"kdbench launch: {study.name}: {'would submit' if args.dry_run else 'submitted'} "
          f"{counts.get('submit', 0)}" + (f"; {others}" if others else ""))
    if launched.complete is not None:
        bad = launched.ended_badly and f", {launched.ended_badly} failed or diverged (kdbench status {args.study})"
        print(f"kdbench launch: {launched.complete} of {len(study.runs)} runs complete{bad or ''}")
    for row in launched.failed:  # the launch fails with them: exit 1
        print(f"kdbench launch: {row.name} {row.state}: {row.reason or '-'}", file=sys.stderr)
    for waiting in study.waiting:
        print(f"kdbench launch: {waiting.stage}: planned later: {waiting.why}")
    return 1 if launched.failed else 0


def _fetch(args: argparse.Namespace) -> int:
    study = app.load(args.study, args.results, args.max_runs)
    fetched, cache = app.fetch(study, progress=not args.no_progress)
    for file, how in fetched:
        print(f"{how:<10}  {file.name}  ({file.reference})")
    counts = ", ".join(f"{n} {how}" for how, n in sorted(Counter(how for _, how in fetched).items()))
    print(f"kdbench fetch: {study.name}: {len(fetched)} weight file(s) in {cache}" + (f" ({counts})" if counts else ""))
    return 0


def _status(args: argparse.Namespace) -> int:
    from kdbench.states import format_status

    study = app.load(args.study, args.results, args.max_runs, plugins=False)
    print(app.tensorboard(study) if args.tensorboard else format_status(study, app.status(study)))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    study = app.load(args.study, args.results, args.max_runs, plugins=False)
    return print(f"kdbench cancel: {study.name}: cancelled {len(app.cancel(study))} run(s)") or 0


def _collect(args: argparse.Namespace) -> int:
    from analysis.collect import cache_path

    study = app.load(args.study, args.results, args.max_runs, plugins=False)
    frame = app.collect(study)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(frame["status"].value_counts().items()))
    where = cache_path(study)
    written = f" -> {where}" if where.exists() else " (no results directory yet: nothing written)"
    print(f"kdbench collect: {study.name}: {len(frame)} runs ({counts}){written}")
    return 0


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    _study_arguments(parser)
    parser.add_argument("--format", default="html,md",
                        help="comma-separated: html (one index.html), md (README.md + PNGs), latex (tables.tex)")
    parser.add_argument("--json", action="store_true",
                        help="print the statistics (intervals, Δ tests, verdicts, seeds needed) as a JSON object")


def _report(args: argparse.Namespace) -> int:
    formats = app.report_formats(args.format)   # before the spec is read
    study = app.load(args.study, args.results, args.max_runs, plugins=False)
    found = app.report(study, formats, statistics=args.json)
    if args.json:
        print(json.dumps({"study": study.name, "written": {k: str(p) for k, p in found.written.items()},
                          "headline": found.headline, "lines": found.lines, **found.statistics},
                         indent=2, ensure_ascii=False))
        return 0
    print("\n".join([*(f"kdbench report: {study.name}: {kind}: {path}" for kind, path in found.written.items()),
                     found.headline, *(f"  - {line}" for line in found.lines)]))
    return 0


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", choices=["mmrazor"], help="what the config is: mmrazor (an MMRazor 1.x "
                        "SingleTeacherDistill + ConfigurableDistiller config)")
    parser.add_argument("config", metavar="CONFIG.py", help="the config file (its _base_ files beside it)")
    parser.add_argument("--study", action="store_true", help="write a study (YAML) instead of a run file (JSON)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write FILE (default: print to stdout)")
    parser.add_argument("--gpus", type=int, metavar="N", help="GPUs of the recipe: the global batch is N x the "
                        "config's images per GPU (default: from the name's NxbM, else 8)")


def _import(args: argparse.Namespace) -> int:
    text = app.import_config(args.source, args.config, args.gpus, args.study, args.output)
    if args.output is None:
        sys.stdout.write(text)
    else:
        print(f"kdbench import: {args.config} -> {args.output}", file=sys.stderr)
    return 0


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("check", "prepare"),
                        help="check: what a run's preflight sees (splits, counts, missing pieces); prepare: convert a "
                             "raw download into what mmseg/mmdet read (resumable; a second call does nothing)")
    parser.add_argument("name", metavar="NAME", help="the dataset: cityscapes, coco, voc or ade20k")
    parser.add_argument("root", metavar="ROOT", help="its folder, as a run's dataset.root names it")
    parser.add_argument("--workers", type=int, help="prepare: maps converted at a time (default: the cores, up to 8)")
    parser.add_argument("--no-progress", action="store_true", help="prepare: no progress bar")


def _data(args: argparse.Namespace) -> int:
    found = app.data(args.action, args.name, args.root, args.workers, progress=not args.no_progress)
    print("\n".join(found.lines))
    if found.problem:
        raise UserError(found.problem)
    return 0


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    from benchmarks.suites import SUITES

    parser.add_argument("--suite", default="all", choices=[*SUITES, "all"],
                        help="losses (each KD loss vs a plain reference), step (a KD step vs student step + teacher "
                             "forward), grid (the verbs at 1k and 10k runs), data (the dataset preflight); default all")
    parser.add_argument("--json", metavar="FILE", help="also write every figure and the machine as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables and the machine as markdown")
    for flag, kind, default, what in (
            ("--repeats", int, 5, "timed repeats per measurement (median)"),
            ("--scale", float, 1.0, "losses: spatial scale of the paper's shapes (default 1.0 = the paper's shapes)"),
            ("--methods", str, None, "losses: comma-separated methods (default: every registered loss)"),
            ("--cases", str, None, "step: comma-separated cases (default: all; see benchmarks/step.py)"),
            ("--sizes", str, "1000,10000", "grid: comma-separated grid sizes (default 1000,10000)"),
            ("--precisions", str, None, "step: comma-separated of fp32,bf16,fp16 (default: fp32 on a CPU, all "
                                        "three on a GPU)")):
        parser.add_argument(flag, type=kind, default=default, help=what)


def _bench(args: argparse.Namespace) -> int:
    from benchmarks.suites import bench

    rows = bench(args.suite, args.scale, args.repeats, args.sizes, args.precisions, args.cases, args.methods,
                 args.json, args.markdown, " ".join(["kdbench bench", *sys.argv[2:]]),
                 say=lambda line: print(line, flush=True), progress=lambda line: _warn(f"  {line}"))
    disagree = [r for r in rows if r.get("agrees") is False]
    for row in disagree:
        print(f"kdbench bench: {row.get('method')} on {row.get('input')} does not agree with its reference",
              file=sys.stderr)
    return 1 if disagree else 0


VERBS: dict[str, tuple[str, Callable, Callable[[argparse.Namespace], int]]] = {
    "bench": ("performance benchmarks, as ratios measured side by side", _bench_arguments, _bench),
    "launch": ("run or submit a study's runs that still need doing", _launch_arguments, _launch),
    "fetch": ("download and verify the weight files a study's runs need",
              _study_and("--no-progress", "no progress bar"), _fetch),
    "status": ("each run's state, from the results store and the scheduler", _study_and(
        "--tensorboard", "print the command that shows every run of the study in TensorBoard, by name"), _status),
    "cancel": ("cancel a study's pending and running jobs", _study_arguments, _cancel),
    "collect": ("gather a study's results into results/<study>/runs.parquet", _study_arguments, _collect),
    "report": ("render a study's report (HTML and markdown) from its results", _report_arguments, _report),
    "plan": ("show the runs of a study, their stages and states", _plan_arguments, _plan),
    "run": ("execute one run described by a JSON file", _run_arguments, _run),
    "losses": ("list the distillation losses and their parameters", _losses_arguments, _losses),
    "data": ("check a dataset's folders as a run's preflight does, or prepare a raw download", _data_arguments, _data),
    "import": ("turn another tool's config into a kdbench run or study (mmrazor)", _import_arguments, _import),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdbench", description="Knowledge distillation for dense prediction: "
                                                                 "studies, runs, reports.")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name, (help_text, add_arguments, _) in VERBS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOGS.get(name)))
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
