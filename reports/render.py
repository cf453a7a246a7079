"""Render a study's report: ``results/<study>/report/index.html`` (one self-contained file, figures
embedded as base64 PNG, jinja2 autoescape on) and ``results/<study>/report/README.md`` (GitHub
markdown, figures as PNG files beside it).

Everything that comes from a spec or a result (names, methods, errors) is escaped: in HTML by
jinja2's autoescape, in markdown by ``md`` and ``md_start`` below. Every number is formatted by analysis.format.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import jinja2

from analysis import (
    aggregate,
    budgets,
    chance,
    fairness,
    perclass,
    perclass_plot,
    plots,
    recipes,
    references,
    settings,
    tables,
    versus_tables,
)
from analysis import format as fmt
from analysis import stats as significance
from analysis.collect import collect, collect_curves
from analysis.records import VS_STUDENT, CellRecord, Group, Statistics, measured
from analysis.summary import summarise
from kdbench.expand import Study
from kdbench.safeio import clean_leftovers
from kdbench.store import write_bytes_atomic, write_text_atomic
from reports.comparisons import two_seeds_line, versus_heading, versus_lines
from reports.statistics import family_sentence
from reports.tuning import tuning_tables

TEMPLATES = Path(__file__).parent / "templates"
FORMATS = ("html", "md", "latex")
DEFAULT_FORMATS = ("html", "md")
# What GitHub markdown would read as markup: HTML, emphasis, code, links, tables, headings, strikethrough,
# math ($...$), and the two bare-URL autolinks of GFM (scheme "://" and "www.").
_MD_SPECIAL = re.compile(r"[\\`*_\[\]|#<>&~$]|:(?=//)|(?<=www)\.", re.IGNORECASE)
_MD_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
_LINE_ENDING = re.compile(r"\r\n?|\n")  # CommonMark's line endings: a bare \r ends a table row too
_LIST_MARKER = re.compile(r"^(\d{1,9})?([-+.)])")  # "- ", "+ ", "1. ", "1) ", and "---" (a rule)


def md(text) -> str:
    """Text that GitHub markdown shows literally, on one line: HTML characters as entities, markdown
    ones backslash-escaped, line endings as spaces."""
    escaped = _MD_SPECIAL.sub(lambda m: _MD_ENTITIES.get(m[0], "\\" + m[0]), str(text))
    return _LINE_ENDING.sub(" ", escaped)


def md_start(text) -> str:
    """``md`` for text that begins a paragraph or a list item, where a leading ``-``, ``+`` or ``1.``
    would start a list (or ``---`` a rule) and leading spaces a code block."""
    return _LIST_MARKER.sub(r"\1\\\2", md(str(text).lstrip()), count=1)


CODE = Path(__file__).resolve().parent  # where the report's code lives (runs record the sha of theirs)
DIRTY = "+dirty"


def _git(where: Path, *args: str) -> str | None:
    """A git command's output, or None where there is no git, no repository, or it fails."""
    try:
        out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_sha(where: Path = CODE) -> str:
    """The commit checked out at ``where``, with ``+dirty`` when the working tree has uncommitted
    changes (``git status --porcelain`` says anything); ``unknown`` without git or a repository."""
    sha = (_git(where, "rev-parse", "HEAD") or "").strip()
    if not sha:
        return "unknown"
    status = _git(where, "status", "--porcelain")
    return sha + DIRTY if status and status.strip() else sha


def _same_commit(a: str, b: str) -> bool:
    """Two shas name one commit: one is a prefix of the other (short shas), ``+dirty`` aside."""
    a, b = a.removesuffix(DIRTY), b.removesuffix(DIRTY)
    return bool(a) and bool(b) and (a.startswith(b) or b.startswith(a))


def run_shas(frame) -> list[dict]:
    """The commits the runs recorded (env.json), most runs first: [{"sha", "runs"}]."""
    if "git_sha" not in frame:
        return []
    counts = frame["git_sha"][frame["git_sha"].map(lambda v: isinstance(v, str) and bool(v))].value_counts()
    return [{"sha": sha, "runs": int(n)} for sha, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def provenance_notes(report_sha: str, shas: list[dict]) -> list[str]:
    """What a reader must know about the code behind the numbers: runs from several commits, runs
    from another commit than the report's, and uncommitted changes at report time."""
    notes = []
    listed = ", ".join(f"{s['sha']} ({fmt.count_noun(s['runs'], 'run')})" for s in shas)
    if len(shas) > 1:
        notes.append(f"The runs were made from {len(shas)} different commits: {listed}.")
    known = report_sha != "unknown"
    if known and shas and not all(_same_commit(report_sha, s["sha"]) for s in shas):
        others = sum(s["runs"] for s in shas if not _same_commit(report_sha, s["sha"]))
        mismatched = ", ".join(s["sha"] for s in shas if not _same_commit(report_sha, s["sha"]))
        notes.append(f"{fmt.count_noun(others, 'run')} recorded another commit ({mismatched}) than the code at "
                     f"report time ({report_sha.removesuffix(DIRTY)}).")
    if report_sha.endswith(DIRTY):
        notes.append("The working tree had uncommitted changes at report time (+dirty): the report's code is not "
                     "exactly any commit.")
    return notes


def _environments(frame) -> list[dict]:
    """The distinct environments (versions, device) the runs recorded, with how many runs each."""
    counts: dict[str, int] = {}
    for text in frame.get("env", []) if "env" in frame else []:
        if isinstance(text, str):
            counts[text] = counts.get(text, 0) + 1
    return [{"env": json.loads(text), "runs": n} for text, n in counts.items()]


def sweep_note(frame) -> str:
    """One line saying why there are no sweep figures, when the study varies no numeric term axis."""
    if plots.sweep_axes(frame[frame["kind"] == "cell"]):
        return ""
    return ("No sweep figures: this study varies no τ or α (no numeric term axis such as term.params.tau or "
            "term.weight with two or more values), so there is nothing to plot a metric against.")


VERDICT_WORDS = {significance.GAIN: "a gain", significance.NOISE: "within noise", significance.LOSS: "a loss"}


def _gap_words(cell: CellRecord, metric: str) -> str:
    """``; it closes 35.7% of the teacher-student gap (95% interval [26.8%, 44.6%], the teacher
    taken as fixed)``, or nothing without a gap to close."""
    gap = cell.gap(metric)
    if not fmt.is_number(gap.share):
        return ""
    interval = fmt.percent_interval(gap.low, gap.high)
    return (f"; it closes {fmt.percent(gap.share)} of the teacher-student gap"
            + (f" (95% interval {interval}, the teacher taken as fixed)" if interval != fmt.MISSING else ""))


def _mean_std(group: Group | None, metric: str) -> str:
    found = measured(group, metric)
    return fmt.mean_std(found.mean, found.std, found.n)


def _cwd_line(verdict: dict, metric: str) -> str:
    """One CWD cell's sentence: its verdict, Δ with its 95% interval and test, and the two sides."""
    cell, label = verdict["cell"], fmt.metric_label(metric)
    name = tables.setting(cell)
    sides = f"{_mean_std(cell.group, metric)} vs {_mean_std(cell.baseline, metric)}"
    if not verdict["comparable"]:
        return f"{name}: cannot be compared ({label} {sides} of the student baseline)."
    delta = f"Δ {fmt.signed(verdict['gap'])} {label} vs the student baseline"
    if verdict["verdict"] not in VERDICT_WORDS:
        return f"{name}: {delta} ({sides}); no interval and no verdict: a single run on a side (n = 1)."
    tested = cell.test(VS_STUDENT, metric)
    test = "paired by seed" if tested.test == "paired" else "Welch"
    interval = fmt.interval(tested.low, tested.high, sign=True)
    line = (f"{name}: {VERDICT_WORDS[verdict['verdict']]}, {delta}, 95% interval {interval} ({test}, "
            f"Holm-corrected p {fmt.p_value(tested.p_holm)}); {sides}")
    line += _gap_words(cell, metric)
    needed, runs = tested.seeds_needed, tested.runs
    if verdict["verdict"] == significance.NOISE and fmt.is_number(needed) and fmt.is_number(runs) and needed <= runs:
        # Enough seeds for this Δ at 95% on its own: the correction for the other cells is what
        # leaves it within noise, and "needs 3 seeds, has 3" would read as a contradiction.
        line += (f"; at 95% on its own it would resolve with these {fmt.integer(runs)} seeds: Holm's correction "
                 "across the study's cells leaves it within noise (more seeds narrow its interval)")
    elif verdict["verdict"] == significance.NOISE and fmt.seed_count(needed, significance.MAX_SEEDS) != fmt.MISSING:
        line += (f"; a Δ this size needs {fmt.seed_count(needed, significance.MAX_SEEDS)} seeds to resolve "
                 f"(power {significance.POWER:g}), it has {runs}")
    return line + "."


def cwd_sentences(verdicts: list[dict], metric: str, tested: int = 0) -> tuple[str, list[str]]:
    """The plain answer to "did CWD beat the student baseline?", computed from the cells' tests
    (``tested``: the cells Holm's correction ran over)."""
    if not verdicts:
        return ("This study has no CWD cell (no cell whose distillation terms all have method: cwd): "
                "nothing to compare."), []
    counts = Counter(v["verdict"] for v in verdicts)
    judged = sum(counts[v] for v in VERDICT_WORDS)
    losses = counts[significance.LOSS]
    others = [(counts[significance.NOISE], "within noise"), (losses, "loss" if losses == 1 else "losses"),
              (counts[significance.NO_INTERVAL], "without an interval (a single run on a side)"),
              (counts[significance.NOT_COMPARED], "without complete runs on both sides")]
    rest = "".join(f"; {n} {what}" for n, what in others if n)
    if judged:
        headline = (f"CWD beat the student baseline in {counts[significance.GAIN]} of "
                    f"{fmt.count_noun(judged, 'tested CWD cell')} (a gain beyond noise at 95%, Holm-corrected across "
                    f"the study's {fmt.count_noun(tested, 'tested cell')}){rest}.")
    else:
        headline = f"No CWD cell could be tested{rest}."
    return headline, [_cwd_line(v, metric) for v in verdicts]


def _collapsed_runs(group: Group, whose: str) -> str:
    """``2 of 3 complete runs of the student baseline predict a single class everywhere``."""
    count = group.collapsed
    return (f"{count} of {fmt.count_noun(group.complete, 'complete run')} of {whose} "
            f"{'predicts' if count == 1 else 'predict'} a single class everywhere (mAcc = 100 / classes evaluated)")


def collapse_warnings(found: Statistics) -> list[str]:
    """One warning per teacher, student baseline or cell with runs that predict a single class
    everywhere (analysis.aggregate.collapsed), with how many of its complete runs do."""
    warnings = []
    for group in found.teachers:
        if group.collapsed:
            warnings.append(f"warning: {_collapsed_runs(group, 'the teacher')}; the students distil from a "
                            "collapsed teacher.")
    count = len(found.baselines)
    for group in found.baselines:
        if group.collapsed:
            which = "" if count < 2 else f" ({tables.group_label('student', group.run_names[0], count)})"
            warnings.append(f"warning: {_collapsed_runs(group, 'the student baseline' + which)}; the comparison is "
                            "against a collapsed baseline.")
    for cell in found.cells:
        if cell.group.collapsed:
            warnings.append(f"warning: {_collapsed_runs(cell.group, tables.setting(cell))}.")
    return warnings


def partial_data_warnings(frame) -> list[str]:
    """One warning per partial dataset split that complete runs used (final.json ``data``): their
    numbers are not comparable with published ones."""
    if "data_complete" not in frame:
        return []
    done = frame[frame["status"] == "complete"]
    partial = done[done["data_complete"].astype("boolean").eq(False).fillna(False)]
    warnings = []
    for text, group in partial.groupby("data_splits", sort=True):
        data = json.loads(text)
        counts = ", ".join(f"{name} {split['images']} of {split['official']}"
                           for name, split in (data.get("splits") or {}).items())
        runs = "every complete run" if len(group) == len(done) else \
            f"{fmt.count_noun(len(group), 'complete run')} ({', '.join(sorted(group['name'])[:5])}" \
            f"{', ...' if len(group) > 5 else ''})"
        warnings.append(f"warning: {runs} used a partial {data.get('name')} split ({counts} images): "
                        "these numbers are not comparable with published ones.")
    return warnings


def _tables(found: Statistics, frame, data_warnings: list[str]) -> tuple[list[tables.Table], list[str]]:
    """The report's tables (those with a value to show) and a sentence per table left out."""
    built = [tables.results_table(found), tables.significance_table(found)]
    built += [t for t in [versus_tables.other_metrics_table(found)] if t]   # every other metric, below
    if found.cells:
        built += [tables.gap_table(found), tables.mmrazor_table(found)]
        built += [t for t in [tables.table2(found), tables.location_table(found)] if t]
        built += versus_tables.versus_tables(found)   # channel-wise vs the best spatial cell, compare: pairs
        built += tables.ablation_tables(found)
    built += perclass.report_tables(found.per_class, found.task, found.metric)
    built += [t for t in [tables.reference_table(found)] if t]
    built.append(tables.cost_table(found))
    if found.equal_budget:  # equal_budget: each cell against the student trained as long (kdbench.budget)
        built += [t for t in [budgets.comparison_table(found), budgets.basis_table(list(found.budgets))] if t]
    built += [t for t in [tables.recipe_table(found)] if t]
    built = [fairness.label_optimistic(t, found) for t in built]  # a best-on-val cell says so in every table
    for table in built if data_warnings else ():
        if table.key == "references":
            table.caption += (" Measured on a partial dataset split (see the warning above): not comparable with "
                              "the published numbers.")
    metrics = list(found.metrics)
    built = [chance.with_chance_row(t, metrics, chance.levels(frame, metrics)) if t.key == "results" else t
             for t in built]
    kept, left_out = tables.shown(built)
    return kept, left_out + ([] if found.per_class else [perclass.NO_PER_CLASS])


def build_context(study: Study, frame, found: Statistics) -> dict:
    """Everything the templates show, from the study, its runs' rows (analysis.collect) and their
    statistics (analysis.summary)."""
    metrics, metric = list(found.metrics), found.metric
    data_warnings = partial_data_warnings(frame) + recipes.comparability_notes(found.matches)
    built, left_out = _tables(found, frame, data_warnings)
    left_out += references.no_published_number(found.matches, list(study.spec.references))
    headline, cwd_lines = cwd_sentences(aggregate.cwd_verdicts(found.cells, metric), metric,
                                        found.family(VS_STUDENT, metric).tested)
    headline = " ".join(part for part in (headline, family_sentence(found)) if part)   # which cells Holm ran over
    text = Path(study.path).read_text()
    report_sha, shas = git_sha(), run_shas(frame)
    groups = settings.group_settings(frame)
    counts = frame["status"].value_counts().to_dict()
    return {
        "study": study.name, "description": str(study.spec.raw.get("description") or "").strip(),
        "metric": fmt.metric_label(metric), "tables": built, "tables_left_out": left_out,
        "figures": plots.all_figures(frame, found, collect_curves(study, frame)) + perclass_plot.figures(found),
        "sweep_note": sweep_note(frame), "problems": tables.problems_table(frame),
        "runs": tables.runs_table(frame, metrics),
        "counts": ", ".join(f"{n} {state}" for state, n in sorted(counts.items())), "total": len(frame),
        "cwd_headline": headline, "cwd_lines": cwd_lines + [line for line in [two_seeds_line(found)] if line],
        "versus_heading": versus_heading(found), "versus_lines": versus_lines(found),
        "warnings": collapse_warnings(found) + data_warnings + chance.near_chance_warnings(frame, metrics),
        "spec_path": str(study.path), "spec_text": text, "spec_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "git_sha": report_sha, "run_git_shas": shas, "provenance_notes": provenance_notes(report_sha, shas),
        "environments": _environments(frame), "settings": settings.settings_table(groups),
        "tuning": tuning_tables(study, list(found.tuning)),
        "fairness": fairness.audit_table(found),  # which comparisons are like for like (analysis.fairness)
        "settings_notes": settings.settings_notes(frame, groups),
        "results": str(study.directory),
        "generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["md"] = md
    env.filters["md_start"] = md_start
    env.filters["count_noun"] = fmt.count_noun
    env.filters["b64"] = lambda data: base64.b64encode(data).decode("ascii")
    return env


def render(study: Study, formats=DEFAULT_FORMATS) -> dict[str, Path]:
    """Write the report in the given formats; returns {format: path}."""
    return render_report(study, formats=formats)[0]


def render_report(study: Study, frame=None, formats=DEFAULT_FORMATS,
                  found: Statistics | None = None) -> tuple[dict[str, Path], str, list[str]]:
    """Write the report in the given formats and return, from the same pass over the results,
    ({format: path}, the CWD-vs-baseline headline, lines (one sentence per CWD cell, then the
    collapse warnings)). ``frame``: the study's rows (analysis.collect), collected here when not
    given; ``found``: their statistics (analysis.summary.summarise), computed here when not given
    (a caller that also prints them, ``kdbench report --json``, passes the ones it prints)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        from kdbench.errors import UserError

        raise UserError(f"--format: unknown {', '.join(unknown)}; valid: {', '.join(FORMATS)}")
    frame = collect(study) if frame is None else frame
    found = summarise(study, frame) if found is None else found
    context = build_context(study, frame, found)
    out = study.directory / "report"
    out.mkdir(parents=True, exist_ok=True)
    clean_leftovers(out, older_than=3600)  # a killed report's temporary files (another may be writing now)
    env = _environment()
    from reports.publish import write_published

    written = write_published(study, frame, found, out)  # metafile.yml and results.tsv, whatever the formats
    if "html" in formats:
        written["html"] = _write(out / "index.html", env.get_template("report.html.j2").render(**context))
    if "md" in formats:
        for figure in context["figures"]:
            write_bytes_atomic(out / f"{figure.key}.png", figure.png)
        written["md"] = _write(out / "README.md", env.get_template("report.md.j2").render(**context))
    if "latex" in formats:  # every table of the report, as booktabs tabulars (reports.latex)
        from reports.latex import write_latex

        shown = [*context["tuning"], *context["tables"], *([context["problems"]] if context["problems"].rows else []),
                 context["settings"]]
        written["latex"] = write_latex(out, found, shown, study.name, context["tables_left_out"])
    return written, context["cwd_headline"], context["cwd_lines"] + context["versus_lines"] + context["warnings"]


def _write(path: Path, text: str) -> Path:
    """Through a unique, exclusively created temporary file (never a planted link), then renamed."""
    write_text_atomic(path, text)
    return path
