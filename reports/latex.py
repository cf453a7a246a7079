"""The report's tables as LaTeX: ``results/<study>/report/tables.tex``, one file to ``\\input`` into a
paper (booktabs and graphicx in its preamble), and ``tables_preview.tex``, a document holding the
same tables that compiles on its own (``pdflatex tables_preview.tex``).

Every table goes through one function, ``tabular(caption, columns, rows, label)``: a booktabs
``tabular`` in a ``table`` float, shrunk to the line width when it is wider. The first table is the
paper-style summary built here from the report's records (analysis.records): each row's mean ± std,
each cell's Δ against its student baseline with its 95% interval and its verdict as a mark, and
the published number beside the measured one; then every table the HTML and markdown report shows
(analysis.tables.Table), in the same order, each through ``from_table``, but the list of every run
(hundreds of rows in a large study; ``results.tsv`` holds it).

Text from a spec or a result (method names, class names, config paths, sources) is escaped by
``tex``: LaTeX's special characters become the commands that print them, the symbols the report
uses (±, Δ, —, →, ...) their LaTeX forms, Latin-1's letters stay (pdflatex reads them from UTF-8 in
its default font encoding), and any other character is written as its code point, ``[U+4E2D]``:
the file compiles with pdflatex whatever a plugin dataset names its classes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from analysis import format as fmt
from analysis import stats as significance
from analysis.records import VS_STUDENT, Group, Statistics, measured
from analysis.tables import Table, group_label, setting
from kdbench.store import write_text_atomic

SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\ensuremath{\$}", "&": r"\&", "#": r"\#",
           "%": r"\%", "_": r"\_", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}", "<": r"\textless{}",
           ">": r"\textgreater{}", "|": r"\textbar{}", '"': r"{\ttfamily\char34}"}
SYMBOLS = {"±": r"\ensuremath{\pm}", "Δ": r"\ensuremath{\Delta}", "—": "---", "–": "--", "→": r"\ensuremath{\to}",
           "≤": r"\ensuremath{\leq}", "↑": r"\ensuremath{\uparrow}", "↓": r"\ensuremath{\downarrow}",
           "∼": r"\ensuremath{\sim}", "≥": r"\ensuremath{\geq}", "×": r"\ensuremath{\times}",
           "τ": r"\ensuremath{\tau}", "α": r"\ensuremath{\alpha}", "·": r"\ensuremath{\cdot}", "…": r"\dots{}",
           "\u2212": r"\ensuremath{-}", "°": r"\ensuremath{^\circ}", "µ": r"\ensuremath{\mu}",
           "‘": "`", "’": "'", "“": "``", "”": "''", "\u00a0": "~"}
# Latin-1's letters, which pdflatex prints from UTF-8 in its default font encoding (but eth, thorn and micro)
LATIN = frozenset(c for c in map(chr, range(0xA0, 0x100)) if unicodedata.category(c) in ("Lu", "Ll")) - set("ÐÞðþµ")
LIGATURES = "-`',!?"   # the fonts join these with a following one ("--" a dash, "!`" an inverted "!")
# The verdict of a Δ, as the mark the summary table puts after it (explained in its caption).
MARKS = {significance.GAIN: r"\ensuremath{^{\uparrow}}", significance.LOSS: r"\ensuremath{^{\downarrow}}",
         significance.NOISE: r"\ensuremath{^{\sim}}"}
PACKAGES = ("booktabs", "graphicx")
# \kdbenchfit{TABULAR}: the tabular as it is, or shrunk to the line width when it is wider.
FIT = (r"\ifdefined\kdbenchbox\else\newsavebox{\kdbenchbox}\fi" "\n"
       r"\providecommand{\kdbenchfit}[1]{\sbox{\kdbenchbox}{#1}\ifdim\wd\kdbenchbox>\linewidth"
       r"\resizebox{\linewidth}{!}{\usebox{\kdbenchbox}}\else\usebox{\kdbenchbox}\fi}")
_NUMERIC = re.compile(r"^[-+]?\d")


@dataclass(frozen=True)
class Tex:
    """A table cell that is LaTeX already (a Δ with its mark): written as it is."""

    text: str


def tex(text) -> str:
    """``text`` as LaTeX that prints it literally, on one line."""
    text = str(text)
    out = []
    for i, char in enumerate(text):
        if char in SPECIAL:
            out.append(SPECIAL[char])
        elif char in SYMBOLS:
            out.append(SYMBOLS[char])
        elif char in "\r\n\t" or (ord(char) < 32 or 127 <= ord(char) < 160):
            out.append(" ")
        elif ord(char) > 127 and char not in LATIN:
            out.append(f"[U+{ord(char):04X}]")
        else:
            out.append(char)
        if char in LIGATURES and i + 1 < len(text) and text[i + 1] in LIGATURES:
            out.append("{}")
    return "".join(out)


def _cell(value) -> str:
    return value.text if isinstance(value, Tex) else tex(value)


def _align(rows: Sequence[Sequence], column: int) -> str:
    """``r`` for a column of numbers (every shown value starts with a digit or a sign), else ``l``."""
    shown = [str(row[column]) for row in rows
             if column < len(row) and not isinstance(row[column], Tex) and str(row[column]) != fmt.MISSING]
    return "r" if column and shown and all(_NUMERIC.match(s) for s in shown) else "l"


def _row(cells: Sequence[str]) -> str:
    """One row of LaTeX cells; ``{}`` first where it would start with ``[`` or ``*``, which the rule
    or line break before it would read as its own argument."""
    line = " & ".join(cells)
    return ("{}" if line[:1] in "[*" else "") + line + r" \\"


def tabular(caption: str, columns: Sequence[str], rows: Sequence[Sequence], label: str) -> str:
    """One table: a booktabs ``tabular`` (a header row, then ``rows``: plain text, escaped, or
    ``Tex``) in a ``table`` float with its caption and ``\\label{tab:LABEL}``."""
    width = len(columns)
    lines = [r"\begin{table}[htbp]", r"\centering", r"\small", rf"\caption{{{tex(caption)}}}",
             rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:._-]', '-', label)}}}",
             r"\kdbenchfit{\begin{tabular}{" + "".join(_align(rows, i) for i in range(width)) + "}",
             r"\toprule", _row([tex(c) for c in columns]), r"\midrule"]
    for row in rows:
        padded = list(row) + [""] * (width - len(row))
        lines.append(_row([_cell(v) for v in padded[:width]]))
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}", ""]
    return "\n".join(lines)


def from_table(table: Table) -> str:
    """A report table (analysis.tables.Table) through ``tabular``, its best cells bold."""
    rows = [[Tex(rf"\textbf{{{tex(c.text)}}}") if c.best else c.text for c in row] for row in table.rows]
    caption = f"{table.title}." + (f" {table.caption}" if table.caption else "")
    return tabular(caption, table.header, rows, f"kdbench:{table.key}")


def _stat(group: Group | None, metric: str) -> str:
    found = measured(group, metric)
    return fmt.mean_std(found.mean, found.std, found.n)


def summary_table(found: Statistics, notes: Sequence[str] = ()) -> str:
    """The paper-style table: teacher and student rows, then each cell with its mean ± std, Δ vs
    its student baseline with the 95% interval and the verdict's mark, and the published number;
    ``notes``: sentences the caption ends with (why a table or a published number is missing)."""
    metric = found.metric
    name = fmt.metric_label(metric)
    published: dict[int, list[str]] = {}
    for match in found.matches:
        if match.cell is not None and fmt.is_number(match.reference.get("value")):
            published.setdefault(id(match.cell), []).append(fmt.number(match.reference["value"]))
    columns = ["Method", f"{name} (mean ± std)", "Δ vs student [95% interval]"]
    columns += ["Published"] if published else []
    rows: list[list] = []
    for kind, groups in (("teacher", found.teachers), ("student", found.baselines)):
        for group in groups:
            rows.append([group_label(kind, group.run_names[0], len(groups)), _stat(group, metric), fmt.MISSING]
                        + ([fmt.MISSING] if published else []))
    for cell in found.cells:
        tested = cell.test(VS_STUDENT, metric)
        delta = f"{fmt.signed(cell.delta(metric))} {fmt.interval(tested.low, tested.high, sign=True)}"
        line = [setting(cell), _stat(cell.group, metric), Tex(tex(delta) + MARKS.get(tested.verdict, ""))]
        rows.append(line + ([" / ".join(published.get(id(cell), [])) or fmt.MISSING] if published else []))
    tested = found.family(VS_STUDENT, metric).tested
    caption = (f"Summary. {name}: mean ± sample std over seeds (n = complete runs). Δ: the cell's mean minus its "
               "student baseline's, with its 95% interval (paired by seed, else Welch). Mark: ↑ a gain and ↓ a "
               f"loss beyond noise (Holm-corrected p < {significance.ALPHA:g} across the study's "
               f"{fmt.count_noun(tested, 'tested cell')}), ∼ within noise; no mark: no test (a side with one "
               "run or none).")
    if published:
        caption += " Published: the number the study's reference files give for that cell."
    return tabular(" ".join([caption, *notes]), columns, rows, "kdbench:summary")


def document(found: Statistics, tables: Sequence[Table], study: str, notes: Sequence[str] = ()) -> str:
    """What ``tables.tex`` holds: the summary table (its caption ending with ``notes``), then every
    table of the report."""
    head = [f"% The tables of the kdbench report of study {tex(study)} (written by kdbench report --format latex).",
            f"% \\input{{tables.tex}} needs \\usepackage{{{','.join(PACKAGES)}}} in the preamble.", FIT, ""]
    return "\n".join(head + [summary_table(found, notes)] + [from_table(t) for t in tables])


def preview(body: str) -> str:
    """A document that compiles on its own with pdflatex: the preamble and ``body``."""
    return "\n".join([r"\documentclass{article}", r"\usepackage[utf8]{inputenc}",
                      rf"\usepackage{{{','.join(PACKAGES)}}}", r"\usepackage[margin=2cm]{geometry}",
                      r"\begin{document}", body, r"\clearpage", r"\end{document}", ""])


def write_latex(out: Path, found: Statistics, tables: Sequence[Table], study: str, notes: Sequence[str] = ()) -> Path:
    """Write ``tables.tex`` and ``tables_preview.tex`` into ``out``, each atomically; the first's path."""
    body = document(found, tables, study, notes)
    write_text_atomic(out / "tables_preview.tex", preview(body))
    write_text_atomic(out / "tables.tex", body)
    return out / "tables.tex"
