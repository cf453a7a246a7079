"""Peak extra memory of a loss case's two formulations (see benchmarks/losses.py): on a CPU the
peak resident set above the resident set with the inputs (and the gradient buffer) in place, read
from /proc in one subprocess with glibc's mmap threshold pinned so that every tensor of 64 KiB or
more is returned to the system when freed (CPU torch has no allocator statistics); on a GPU
``torch.cuda.max_memory_allocated`` above what is allocated before the call."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.loss_cases import Case, formulations, make_inputs, scaled


def peak_cuda(case: Case, shape: tuple) -> dict:
    import torch

    out = {}
    for name in ("kdbench", "reference"):
        # Lazy initialisation (cuBLAS, cuDNN workspaces) first: it is not the loss's memory.
        formulations(case, "cuda")[name](make_inputs(case, scaled(shape, 0.25), "cuda"))
        sides = formulations(case, "cuda")
        inputs = make_inputs(case, shape, "cuda")
        inputs["preds_S"].grad = torch.zeros_like(inputs["preds_S"])  # the same on both sides: not counted
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        sides[name](inputs)
        torch.cuda.synchronize()
        out[f"{name}_bytes"] = torch.cuda.max_memory_allocated() - before
        del inputs, sides
    return out


_MEMORY_PROBE = """
import json, sys, torch
from benchmarks.loss_cases import CASES, formulations, make_inputs, scaled

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

torch.set_num_threads(int(sys.argv[1]))
by_key = {case.key: case for case in CASES}
for job in json.loads(sys.argv[2]):
    case, shape = by_key[job["key"]], tuple(job["shape"])
    result = {"key": job["key"]}
    for name in ("kdbench", "reference"):
        formulations(case)[name](make_inputs(case, scaled(shape, 0.25)))  # lazy initialisation first
        sides = formulations(case)
        inputs = make_inputs(case, shape)
        inputs["preds_S"].grad = torch.zeros_like(inputs["preds_S"])  # the same on both sides: not counted
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset the peak-RSS mark (VmHWM) to the current resident set
        before = status("VmRSS")
        sides[name](inputs)
        # The kernel syncs per-thread RSS counters lazily (up to 64 pages a thread): a peak read a
        # few pages below the start is that noise, on an input too small to move the resident set.
        result[name + "_bytes"] = max(0, status("VmHWM") - before)
        del sides, inputs
    print(json.dumps(result), flush=True)
"""


def peak_cpu(jobs: list[dict], threads: int) -> dict[str, dict]:
    """Peak extra resident memory of each job's two formulations, in one subprocess."""
    if not jobs:
        return {}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    result = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(threads), json.dumps(jobs)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"bench losses: the memory probe failed: {result.stderr.strip()[-2000:]}")
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {row.pop("key"): row for row in rows}
