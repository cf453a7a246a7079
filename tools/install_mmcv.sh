#!/usr/bin/env bash
# Build and install mmcv (the version pinned in requirements/pins.txt) with its compiled ops
# against the torch already installed in the active environment. On a machine with nvcc and a
# GPU the CUDA ops are built too (FORCE_CUDA=1); set TORCH_CUDA_ARCH_LIST (e.g. "8.0;9.0") to
# build for GPUs other than the one present. Takes ~12 min on 2 CPU cores without CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
mmcv_pin=$(grep -E '^mmcv==' requirements/pins.txt | sed 's/ *#.*//')
"$PY" -c 'import torch' || { echo "install_mmcv: install torch first" >&2; exit 1; }
if command -v nvcc >/dev/null && "$PY" -c 'import torch,sys; sys.exit(not torch.cuda.is_available())'; then
  # nvcc must be the CUDA major release torch was built with (torch's own extension rule:
  # another major fails, another minor only warns); the same minor is safest.
  torch_cuda=$("$PY" -c 'import torch; print(torch.version.cuda)')
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
"$PY" -c 'import mmcv.ops; print("install_mmcv: ok, mmcv", __import__("mmcv").__version__)'
