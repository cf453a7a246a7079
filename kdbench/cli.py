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


def _losses_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")


def _losses(args: argparse.Namespace) -> int:
    import inspect
    import json

    from kdbench import losses

    table = {}
    for name in losses.available():
        params = losses.parameters(name)
        table[name] = {
            "class": losses.get(name).__name__,
            "needs_labels": bool(getattr(losses.get(name), "needs_labels", False)),
            "params": {
                k: (None if v is inspect.Parameter.empty else v) for k, v in params.items()
            },
        }
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    width = max(map(len, table))
    for name, info in table.items():
        params = ", ".join(f"{k}={v!r}" for k, v in info["params"].items())
        labels = "  [needs labels]" if info["needs_labels"] else ""
        print(f"{name:<{width}}  {info['class']}({params}){labels}")
    return 0


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_file", metavar="RUN.json", help="a run file (see studies/README.md)")
    parser.add_argument("--out", help="output directory (default: the file's 'out', else "
                        "results/runs/<name>-<run_id>)")


def _run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from kdbench import store
    from kdbench.runspec import load_run

    run = load_run(args.run_file)
    if run["device"] == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from runners.train import default_out, execute

    out = args.out or run["out"] or default_out(run)
    if store.run_state(out) != "complete":  # preflight: checkpoint, data, locations, shapes; nothing written
        from runners.preflight import check_run
        from runners.train import record_preflight_failure

        try:
            check_run(run, args.run_file)
        except UserError as error:
            record_preflight_failure(run, out, error)  # only in a run directory made by a launch
            raise
    try:
        record = execute(run, out)
    except UserError:
        raise
    except Exception as error:  # recorded in error.json by execute(), when the disk lets it
        what = str(error) if isinstance(error, store.WriteError) else f"{type(error).__name__}: {error}"
        see = f" (see {out}/error.json)" if (Path(out) / store.ERROR).exists() else ""
        print(f"kdbench run: {run['name']} stopped: {what}{see}", file=sys.stderr)
        return 1
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in record["metrics"].items())
    print(f"kdbench run: {run['name']} complete in {out}: {metrics}")
    return 0


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY.yaml", help="a study spec (see studies/README.md)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of runs instead of a table")
    parser.add_argument("--results", default="results", help="results root (default: results)")
    parser.add_argument("--no-model-check", action="store_true",
                        help="skip checking distilled locations and shapes against the models (cached after the "
                             "first plan)")
    parser.add_argument("--no-data-check", action="store_true",
                        help="skip checking dataset roots and teacher checkpoint files (planning on a machine "
                             "without the data)")


def _plan(args: argparse.Namespace) -> int:
    from kdbench.plan import format_plan, plan_json, plan_rows
    from kdbench.study import load_study

    study = load_study(args.study, args.results)
    if not (args.no_model_check and args.no_data_check):
        from runners.preflight import check_study

        check_study(study, models=not args.no_model_check, files=not args.no_data_check)
    rows = plan_rows(study, args.results)
    print(plan_json(rows) if args.json else format_plan(study, rows))
    return 0


def _study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY.yaml", help="a study spec (see studies/README.md)")
    parser.add_argument("--results", default="results", help="results root (default: results)")


def _launch_arguments(parser: argparse.ArgumentParser) -> None:
    _study_arguments(parser)
    parser.add_argument("--executor", default="local", help="local (default: subprocesses here) or slurm")
    parser.add_argument("--dry-run", action="store_true", help="show what would be submitted; submit nothing")
    parser.add_argument("--retry-failed", action="store_true", help="resubmit failed and diverged runs")
    parser.add_argument("--parallel", type=int, default=1, help="local: runs at a time (default 1)")
    parser.add_argument("--partition", help="SLURM partition (default: the study's, else the cluster's)")
    parser.add_argument("--gpus", type=int, help="GPUs per run")
    parser.add_argument("--cpus", type=int, help="CPUs per task")
    parser.add_argument("--mem-gb", type=int, help="memory per run, GB")
    parser.add_argument("--time-min", type=int, help="time limit per job, minutes")
    parser.add_argument("--array-parallelism", type=int, help="SLURM: array tasks running at once")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-model-check", action="store_true",
                        help="skip checking distilled locations and shapes against the models before submitting")
    parser.add_argument("--no-data-check", action="store_true",
                        help="skip checking dataset roots and teacher checkpoint files before submitting")


def _launch(args: argparse.Namespace) -> int:
    from kdbench.launch import LaunchOptions, decide, launch
    from kdbench.study import load_study

    study = load_study(args.study, args.results)
    if not (args.no_model_check and args.no_data_check):  # preflight: nothing submitted or written before it
        from runners.preflight import check_study

        check_study(study, models=not args.no_model_check, files=not args.no_data_check)
    if args.parallel < 1:
        raise UserError(f"--parallel: must be >= 1, got {args.parallel}")
    options = LaunchOptions(
        executor=args.executor, dry_run=args.dry_run, retry_failed=args.retry_failed,
        parallel=args.parallel, results=args.results, progress=not args.no_progress,
        resources={"partition": args.partition, "gpus": args.gpus, "cpus": args.cpus,
                   "mem_gb": args.mem_gb, "time_min": args.time_min,
                   "array_parallelism": args.array_parallelism},
    )
    if args.dry_run:
        for decision in decide(study, options):
            print(f"{decision.planned.run_id}  {decision.planned.name:<30} {decision.planned.stage:<8} "
                  f"{decision.state:<9} {decision.action}")
    counts = launch(study, options)
    verb = "would submit" if args.dry_run else "submitted"
    others = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "submit")
    print(f"kdbench launch: {study.name}: {verb} {counts.get('submit', 0)}" + (f"; {others}" if others else ""))
    if args.executor == "local" and not args.dry_run:
        from kdbench.status import run_states

        states = [r["state"] for r in run_states(study, args.results)]
        bad = sum(s in ("failed", "diverged", "corrupt") for s in states)
        print(f"kdbench launch: {states.count('complete')} of {len(states)} runs complete"
              + (f", {bad} failed or diverged (kdbench status {args.study})" if bad else ""))
    return 0


def _status(args: argparse.Namespace) -> int:
    from kdbench.status import format_status, run_states
    from kdbench.study import load_study

    study = load_study(args.study, args.results)
    print(format_status(study, run_states(study, args.results)))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from kdbench.status import cancel
    from kdbench.study import load_study

    study = load_study(args.study, args.results)
    cancelled = cancel(study, args.results)
    print(f"kdbench cancel: {study.name}: cancelled {len(cancelled)} run(s)")
    return 0


def _collect(args: argparse.Namespace) -> int:
    from analysis.collect import cache_path, collect
    from kdbench.study import load_study

    study = load_study(args.study, args.results)
    frame = collect(study, args.results)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(frame["status"].value_counts().items()))
    where = cache_path(study, args.results)
    print(f"kdbench collect: {study.name}: {len(frame)} runs ({counts})"
          + (f" -> {where}" if where.exists() else " (no results directory yet: nothing written)"))
    return 0


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    _study_arguments(parser)
    parser.add_argument("--format", default="html,md",
                        help="comma-separated: html (one self-contained index.html), md (README.md + PNGs)")


def _report(args: argparse.Namespace) -> int:
    from kdbench.study import load_study
    from reports.render import render_report

    study = load_study(args.study, args.results)
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    written, headline, lines = render_report(study, args.results, formats)  # one pass over the results
    for kind, path in written.items():
        print(f"kdbench report: {study.name}: {kind}: {path}")
    print("\n".join([headline, *(f"  - {line}" for line in lines)]))
    return 0


SUITES = ("losses", "step", "grid")


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="all", choices=[*SUITES, "all"],
                        help="losses: every KD loss against a plain-autograd reference of the same math; step: a KD "
                             "training step against student step + teacher forward; grid: plan/status/collect/"
                             "report at 1k and 10k runs, and CLI start-up (default: all)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure and the machine as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables and the machine as markdown")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="losses: spatial scale of the paper's shapes (default 1.0 = the paper's shapes)")
    parser.add_argument("--methods", help="losses: comma-separated methods (default: every registered loss)")
    parser.add_argument("--cases", help="step: comma-separated cases (default: all; see kdbench/bench/step.py)")
    parser.add_argument("--sizes", default="1000,10000", help="grid: comma-separated grid sizes (default 1000,10000)")


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


def _bench(args: argparse.Namespace) -> int:
    import importlib

    from kdbench.bench.machine import machine
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
    calls = {
        "losses": lambda m: m.run(scale=args.scale, repeats=args.repeats, methods=_csv(args.methods, "--methods"),
                                  progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True)),
        "step": lambda m: m.run(repeats=args.repeats, cases=_csv(args.cases, "--cases")),
        "grid": lambda m: m.run(sizes=tuple(sizes)),
    }
    suites = SUITES if args.suite == "all" else (args.suite,)
    rows: list[dict] = []
    tables: dict[str, str] = {}
    for suite in suites:
        module = importlib.import_module(f"kdbench.bench.{suite}")
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
        from kdbench.bench.machine import markdown

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
    "status": ("each run's state, from the results store and the scheduler", _study_arguments, _status),
    "cancel": ("cancel a study's pending and running jobs", _study_arguments, _cancel),
    "collect": ("gather a study's results into results/<study>/runs.parquet", _study_arguments, _collect),
    "report": ("render a study's report (HTML and markdown) from its results", _report_arguments, _report),
    "plan": ("show the runs of a study, their stages and states", _plan_arguments, _plan),
    "run": ("execute one run described by a JSON file", _run_arguments, _run),
    "losses": ("list the distillation losses and their parameters", _losses_arguments, _losses),
}


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
    except UserError as error:
        print(f"kdbench {args.verb}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"kdbench {args.verb}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # a full disk, a read-only results directory: one line, no traceback
        print(f"kdbench {args.verb}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
