#!/usr/bin/env bash
# The GPU acceptance check (benchmarks/gpu_check.py): the loss suite on the GPU (agreement, time and
# memory ratios, CWD against the memory-bandwidth bound), a 200-iteration PSPNet-R101 -> R18 CWD run
# at the paper's 512x512 crop on a generated Cityscapes-format tree in fp32 and bf16, and a GFL
# R101 -> R50 CWD step; one JSON with the machine. Under 8 minutes on one GPU.
#   tools/gpu_check.sh --out benchmarks/gpu-<name>.json          # on a GPU node
#   tools/gpu_check.sh --device cpu --quick --out /tmp/check.json  # reduced sizes, any machine
# Exit 0: passed; 1: a check failed (the JSON's "problems" say which); 2: bad arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m benchmarks.gpu_check "$@"
