"""The loss suite: the CWD kernel against the straightforward formulation of the same math.

The reference is MMRazor's ``ChannelWiseDivergence`` written in plain torch autograd (ANCHORS.md
section 2). For each shape: agreement of value and gradient (1e-5 relative), forward + backward
time (median of interleaved repeats, reference and kdbench alternating), and peak extra memory
(the peak resident set above the resident set with the inputs in place, each formulation in a
fresh subprocess: CPU torch has no allocator statistics, so the kernel's peak-RSS mark, reset
through /proc/self/clear_refs just before the call, is read).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

# The paper's shapes: logits (N, 19 classes, H/8, W/8 of a 512x1024 crop) and the PSP head's feature
# map (N, 512, 64, 64 of a 512x512 crop).
SHAPES = {"logits": (8, 19, 64, 128), "feature_map": (8, 512, 64, 64)}
TAU, WEIGHT = 4.0, 3.0


def reference_cwd(preds_S, preds_T, tau: float, loss_weight: float):
    import torch.nn.functional as F

    n, c, h, w = preds_S.shape
    s = preds_S.reshape(-1, h * w) / tau
    t = preds_T.detach().reshape(-1, h * w) / tau
    p_t = F.softmax(t, dim=1)
    return loss_weight * (p_t * F.log_softmax(t, dim=1) - p_t * F.log_softmax(s, dim=1)).sum() * tau**2 / (n * c)


def _ours(preds_S, preds_T, tau, loss_weight):
    from kdbench.losses import channel_wise_divergence

    return channel_wise_divergence(preds_S, preds_T, tau) * loss_weight


FORMULATIONS = {"kdbench": _ours, "reference": reference_cwd}


def scaled(shape: tuple, scale: float) -> tuple:
    n, c, h, w = shape
    return (n, c, max(2, int(h * scale)), max(2, int(w * scale)))


def _inputs(shape, seed=0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    preds_S = (torch.randn(shape, generator=generator) * 3).requires_grad_()
    preds_T = torch.randn(shape, generator=generator) * 3
    return preds_S, preds_T


def agreement(shape) -> dict:
    preds_S, preds_T = _inputs(shape)
    values, grads = {}, {}
    for name, fn in FORMULATIONS.items():
        preds_S.grad = None
        value = fn(preds_S, preds_T, TAU, WEIGHT)
        value.backward()
        values[name], grads[name] = float(value.detach()), preds_S.grad.clone()
    scale = float(grads["reference"].abs().max())
    return {
        "value_rel_diff": abs(values["kdbench"] - values["reference"]) / abs(values["reference"]),
        "grad_max_abs_diff_over_max": float((grads["kdbench"] - grads["reference"]).abs().max()) / scale,
    }


def timing(shape, repeats: int) -> dict:
    preds_S, preds_T = _inputs(shape)
    seconds: dict[str, list[float]] = {name: [] for name in FORMULATIONS}
    for _ in range(repeats + 1):  # the first round warms up and is dropped
        for name, fn in FORMULATIONS.items():
            preds_S.grad = None
            start = time.perf_counter()
            fn(preds_S, preds_T, TAU, WEIGHT).backward()
            seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values[1:]) for name, values in seconds.items()}
    return {"kdbench_s": median["kdbench"], "reference_s": median["reference"],
            "time_ratio": median["kdbench"] / median["reference"]}


_MEMORY_PROBE = """
import json, sys, torch
from kdbench.bench.losses import FORMULATIONS, TAU, WEIGHT, _inputs

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
torch.set_num_threads(int(sys.argv[3]))
preds_S, preds_T = _inputs(tuple(json.loads(sys.argv[2])))
preds_S.grad = torch.zeros_like(preds_S)  # the gradient buffer is the same for both: not counted
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset the peak-RSS mark (VmHWM) to the current resident set
before = status("VmRSS")
FORMULATIONS[sys.argv[1]](preds_S, preds_T, TAU, WEIGHT).backward()
print(json.dumps(status("VmHWM") - before))
"""


def peak_extra_memory(shape, threads: int) -> dict:
    out = {}
    for name in FORMULATIONS:
        result = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, name, json.dumps(list(shape)), str(threads)],
                                capture_output=True, text=True, check=True)
        out[f"{name}_bytes"] = int(json.loads(result.stdout.strip().splitlines()[-1]))
    out["memory_ratio"] = out["kdbench_bytes"] / out["reference_bytes"] if out["reference_bytes"] > 0 else None
    return out


def run(scale: float = 1.0, repeats: int = 5) -> list[dict]:
    import torch

    rows = []
    for label, shape in SHAPES.items():
        shape = scaled(shape, scale)
        row = {"suite": "losses", "method": "cwd", "input": label, "shape": list(shape), "tau": TAU,
               "loss_weight": WEIGHT, "scale": scale}
        row.update(agreement(shape))
        row.update(timing(shape, repeats))
        row.update(peak_extra_memory(shape, torch.get_num_threads()))
        row["agrees"] = row["value_rel_diff"] <= 1e-5 and row["grad_max_abs_diff_over_max"] <= 1e-5
        memory = row["memory_ratio"]
        row["targets"] = {"time_ratio<=0.5": row["time_ratio"] <= 0.5,
                          "memory_ratio<=0.5": None if memory is None else memory <= 0.5}
        rows.append(row)
    return rows
