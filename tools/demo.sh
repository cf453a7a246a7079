#!/usr/bin/env bash
# The main job: the smoke study (studies/smoke.yaml: tiny CPU teacher, student baseline and five
# distillation methods, 3 seeds, 19 runs, about 10 minutes on 2 cores) planned, launched locally
# two runs at a time, collected and rendered as a report. Complete runs are skipped on a rerun, so
# a second `make demo` only re-renders. Ends with the report's path and the CWD-vs-baseline
# sentence, computed from the runs (mean ± std over seeds), never typed.
#
# `kdbench report` prints one line per file it wrote, `kdbench report: <study>: <format>: <path>`
# (a study name is letters, digits, '_', '-' or '.', never ':'), then the CWD sentences.
# report_path reads those lines; tests/test_reports.py sources this file and checks it against
# the real command's output, so a change of that format fails a test instead of the demo.
set -euo pipefail

say() { printf '[demo %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# report_path FORMAT: the path `kdbench report` (output on stdin) wrote for FORMAT (html, md);
# fails, saying why, unless exactly one such line names an existing file.
report_path() {
    local format=$1 line rest kind found=() count
    while IFS= read -r line; do
        [[ $line == "kdbench report: "* ]] || continue
        rest=${line#kdbench report: }
        rest=${rest#*: }              # the study name, up to its ': '
        kind=${rest%%: *}
        [[ $kind == "$format" && $rest == *": "* ]] && found+=("${rest#*: }")
    done
    count=${#found[@]}
    if [[ $count -ne 1 ]]; then
        printf 'demo: expected one "kdbench report: <study>: %s: <path>" line, found %d\n' "$format" "$count" >&2
        return 1
    fi
    if [[ ! -f ${found[0]} ]]; then
        printf 'demo: kdbench report named %s, which is not a file\n' "${found[0]}" >&2
        return 1
    fi
    printf '%s\n' "${found[0]}"
}

# report_sentences: the lines of `kdbench report` (stdin) that are not file lines: the CWD verdict.
report_sentences() { grep -v '^kdbench report: ' || true; }

main() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    local py=${1:-.venv/bin/python}
    local study=studies/smoke.yaml
    local results=${KDBENCH_RESULTS:-results}   # results root (default: results/)
    kdbench() { "$py" -m kdbench.cli "$@"; }

    say "kdbench plan $study"
    kdbench plan "$study" --results "$results"
    say "kdbench launch $study --executor local --parallel 2   (teacher first, then 18 students)"
    kdbench launch "$study" --executor local --parallel 2 --results "$results"
    say "kdbench collect $study"
    kdbench collect "$study" --results "$results"
    say "kdbench report $study --format html,md"
    local out html markdown
    out=$(kdbench report "$study" --format html,md --results "$results")
    printf '%s\n' "$out" | grep '^kdbench report: '
    html=$(report_path html <<<"$out")
    markdown=$(report_path md <<<"$out")
    echo
    say "report: $(realpath "$html") (markdown: $markdown)"
    report_sentences <<<"$out"
    echo "(tiny CPU models on generated data: a check that the suite works end to end, not evidence about"
    echo " full-scale CWD; the paper-scale studies are studies/paper_table2_cityscapes.yaml and friends.)"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
