"""The compiled CWD kernel for CPUs (``_cwd_cpu.cpp``): built once at set-up, loaded if present.

``python -m kdbench.losses._native build`` (run by ``tools/setup.sh``) compiles it with
``torch.utils.cpp_extension`` for the widest instruction set of this CPU that ATen's vector code
knows (AVX512 or AVX2 with FMA) into ``<venv>/kdbench-native/<tag>/``, the tag a hash of the
source, the flags and the torch version, and records the CPU's instruction-set flags beside it.

At run time nothing is compiled: ``cwd_cpu()`` imports the built module when it exists for this
source and torch, and when this CPU has every instruction-set flag of the machine that built it
(a venv shared by different nodes never runs an instruction a node lacks). Otherwise, or with
``KDBENCH_CWD_KERNEL=blocked``, it returns None and ``kdbench.losses.cwd`` uses its blocked torch
formulation, which gives the same values to float32 rounding.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from functools import cache
from pathlib import Path

SOURCE = Path(__file__).with_name("_cwd_cpu.cpp")
_ISA = {  # at::vec's instruction sets, widest first: (CPU flags needed, compiler flags)
    "AVX512": ({"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"},
               ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"]),
    "AVX2": ({"avx2", "fma"}, ["-mavx2", "-mfma"]),
}


def _isa() -> tuple[str, set[str], list[str]] | None:
    have = _cpu_flags()
    for name, (needed, flags) in _ISA.items():
        if needed <= have:
            return name, needed, ["-O3", *flags, f"-DCPU_CAPABILITY={name}", f"-DCPU_CAPABILITY_{name}"]
    return None


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            line = next(line for line in handle if line.startswith("flags"))
        return set(line.split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def _tag() -> str:
    import torch

    isa = _isa()
    text = SOURCE.read_bytes() + json.dumps([isa and isa[2], torch.__version__, sys.version_info[:2]]).encode()
    return hashlib.sha256(text).hexdigest()[:16]


def build_dir() -> Path:
    root = os.environ.get("KDBENCH_NATIVE_DIR") or Path(sys.prefix) / "kdbench-native"
    return Path(root) / _tag()


def _name() -> str:
    return f"kdbench_cwd_cpu_{_tag()}"


def build(verbose: bool = False) -> Path:
    """Compile the kernel for this machine; returns the built library's path."""
    from torch.utils.cpp_extension import load

    isa = _isa()
    if isa is None:
        raise RuntimeError("this CPU has neither AVX512 nor AVX2 with FMA")
    folder = build_dir()
    folder.mkdir(parents=True, exist_ok=True)
    load(name=_name(), sources=[str(SOURCE)], extra_cflags=isa[2], build_directory=str(folder), verbose=verbose)
    library = next(folder.glob(f"{_name()}*.so"))
    (folder / "cpu_flags.json").write_text(json.dumps(sorted(isa[1])))
    return library


@cache
def cwd_cpu():
    """The built module (``cwd_forward(S, T, tau, with_direction) -> (kl per row, p_S - p_T or empty)``), or None."""
    if os.environ.get("KDBENCH_CWD_KERNEL", "").lower() == "blocked":
        return None
    try:
        folder = build_dir()
        libraries = sorted(folder.glob(f"{_name()}*.so"))
        needed = set(json.loads((folder / "cpu_flags.json").read_text()))
        if not libraries or not needed <= _cpu_flags():
            return None
        spec = importlib.util.spec_from_file_location(_name(), libraries[0])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except Exception:  # not built, built elsewhere, unreadable: the blocked formulation serves
        return None


def main(argv: list[str]) -> int:
    if argv[:1] != ["build"]:
        print("usage: python -m kdbench.losses._native build", file=sys.stderr)
        return 2
    try:
        library = build(verbose="--verbose" in argv)
    except Exception as error:  # no compiler, no ninja: CWD keeps its blocked formulation
        print(f"kdbench: the compiled CWD kernel was not built ({type(error).__name__}: {error}); "
              f"CWD uses its blocked torch formulation", file=sys.stderr)
        return 1
    cwd_cpu.cache_clear()
    print(f"kdbench: compiled CWD kernel {library} ({'loads' if cwd_cpu() is not None else 'does NOT load'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
