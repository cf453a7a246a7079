#!/usr/bin/env bash
# Install mmcv (the version pinned in requirements/pins.txt) with its compiled ops for the torch
# already installed in the active environment, and say which way it came:
#   1. OpenMMLab's prebuilt wheel, where one exists for this torch and CUDA (or CPU) release:
#      https://download.openmmlab.com/mmcv/dist/<cu121|cpu>/torch<2.1>/index.html (seconds);
#   2. otherwise a source build: with CUDA ops on a machine with nvcc and a GPU (FORCE_CUDA=1;
#      set TORCH_CUDA_ARCH_LIST, e.g. "8.0;9.0", for GPUs other than the one present), CPU ops
#      only elsewhere. ~12 min on 2 CPU cores without CUDA, 15-30 min with.
# The last line names the way taken and whether the CUDA ops are in:
#   install_mmcv: ok, mmcv 2.1.0 from OpenMMLab's prebuilt wheel (...); CUDA ops: 12.1
#   install_mmcv: ok, mmcv 2.1.0 built from source; CUDA ops: not available
# Options: --dry-run (print the wheel index for this torch and the plan, install nothing);
#          MMCV_FROM_SOURCE=1 (skip the wheel). PYTHON picks the interpreter (default python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
mmcv_pin=$(grep -E '^mmcv==' requirements/pins.txt | sed 's/ *#.*//')
"$PY" -c 'import torch' || { echo "install_mmcv: install torch first" >&2; exit 1; }
# OpenMMLab names its wheel folders by torch's major.minor and CUDA version without the dot.
torch_mm=$("$PY" -c 'import torch; print(".".join(torch.__version__.split("+")[0].split(".")[:2]))')
torch_cuda=$("$PY" -c 'import torch; print(torch.version.cuda or "")')
flavour=$([ -n "$torch_cuda" ] && echo "cu${torch_cuda//./}" || echo cpu)
index="https://download.openmmlab.com/mmcv/dist/$flavour/torch$torch_mm/index.html"

if [ "${1:-}" = "--dry-run" ]; then
  echo "install_mmcv: $mmcv_pin for torch $torch_mm ($flavour): would try OpenMMLab's wheel index $index," \
       "else build from source"
  exit 0
fi

report() {  # the way taken, and whether the compiled ops include CUDA's
  "$PY" -c 'import mmcv, sys
from mmcv.ops import get_compiling_cuda_version
print(f"install_mmcv: ok, mmcv {mmcv.__version__} {sys.argv[1]}; CUDA ops: {get_compiling_cuda_version()}")' "$1"
}

if [ "${MMCV_FROM_SOURCE:-0}" != 1 ]; then
  echo "install_mmcv: trying OpenMMLab's prebuilt wheel of $mmcv_pin for torch $torch_mm ($flavour): $index"
  # --only-binary: PyPI has only mmcv's source, so a wheel can only come from OpenMMLab's index.
  if "$PY" -m pip install --only-binary mmcv --no-deps -f "$index" "$mmcv_pin"; then
    report "from OpenMMLab's prebuilt wheel ($index)"
    exit 0
  fi
  echo "install_mmcv: no prebuilt wheel of $mmcv_pin for torch $torch_mm ($flavour): building from source"
fi

if command -v nvcc >/dev/null && "$PY" -c 'import torch,sys; sys.exit(not torch.cuda.is_available())'; then
  # nvcc must be the CUDA major release torch was built with (torch's own extension rule:
  # another major fails, another minor only warns); the same minor is safest.
  nvcc_cuda=$(nvcc --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')
  if [ "${torch_cuda%%.*}" != "${nvcc_cuda%%.*}" ]; then
    echo "install_mmcv: nvcc is CUDA $nvcc_cuda but torch was built with CUDA $torch_cuda;" \
         "install the matching compiler, e.g. conda install -c nvidia cuda-nvcc=$torch_cuda" >&2
    exit 1
  elif [ "$torch_cuda" != "$nvcc_cuda" ]; then
    echo "install_mmcv: warning: nvcc is CUDA $nvcc_cuda, torch's is $torch_cuda (same major: builds)"
  fi
  export FORCE_CUDA=1 MMCV_WITH_OPS=1
  echo "install_mmcv: building $mmcv_pin with CUDA ops ($(nvcc --version | tail -n1))"
else
  echo "install_mmcv: building $mmcv_pin with CPU ops only (no nvcc or no GPU here)"
fi
"$PY" -m pip install "setuptools<70" wheel
MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip install --no-build-isolation "$mmcv_pin"
"$PY" -m pip install "setuptools>=77.0.3"
report "built from source"
