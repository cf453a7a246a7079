#!/usr/bin/env bash
# The main job: the smoke study (studies/smoke.yaml: tiny CPU teacher, student baseline and five
# distillation methods, 3 seeds, 19 runs, about 10 minutes on 2 cores) planned, launched locally
# two runs at a time, collected and rendered as a report. Complete runs are skipped on a rerun, so
# a second `make demo` only re-renders. Ends with the report's path and the CWD-vs-baseline
# sentence, computed from the runs (mean ± std over seeds), never typed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
STUDY=studies/smoke.yaml
RESULTS=${KDBENCH_RESULTS:-results}   # results root (default: results/)
say() { printf '[demo %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
kdbench() { "$PY" -m kdbench.cli "$@"; }

say "kdbench plan $STUDY"
kdbench plan "$STUDY" --results "$RESULTS"
say "kdbench launch $STUDY --executor local --parallel 2   (teacher first, then 18 students)"
kdbench launch "$STUDY" --executor local --parallel 2 --results "$RESULTS"
say "kdbench collect $STUDY"
kdbench collect "$STUDY" --results "$RESULTS"
say "kdbench report $STUDY --format html,md"
out=$(kdbench report "$STUDY" --format html,md --results "$RESULTS")
printf '%s\n' "$out" | grep '^kdbench report:'
html=$(printf '%s\n' "$out" | sed -n 's/^kdbench report: [^:]*: html: //p')
markdown=$(printf '%s\n' "$out" | sed -n 's/^kdbench report: [^:]*: md: //p')
echo
say "report: $(realpath "$html") (markdown: $markdown)"
printf '%s\n' "$out" | grep -v '^kdbench report:'
echo "(tiny CPU models on generated data: a check that the suite works end to end, not evidence about"
echo " full-scale CWD; the paper-scale studies are studies/paper_table2_cityscapes.yaml and friends.)"
