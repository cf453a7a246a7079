"""Peak extra memory of a loss case's two formulations (see benchmarks/losses.py): the tensor
memory a call allocates beyond its inputs (and the gradient buffer, in place before the call), at
its highest: on a CPU from the profiler's record of every allocation, on a GPU
``torch.cuda.max_memory_allocated`` above what is allocated before the call."""

from __future__ import annotations

import contextlib
import os
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


@contextlib.contextmanager
def _stderr_silenced():
    """The profiler's C++ side prints a line to stderr at each start and stop (not through Python):
    file descriptor 2 points at /dev/null meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_cpu(case: Case, shape: tuple) -> dict:
    """Peak extra memory of a case's two formulations on the CPU: the largest sum of the tensor
    memory allocated and not yet freed during one call (forward + backward), from torch's profiler
    record of every allocation and free. As on a GPU it counts what the loss holds, not what the C
    library keeps mapped, so a difference of a few pages is a difference, not the resident set's
    noise (the kernel updates a process's resident-set counters lazily, up to 64 pages a thread).
    Memory a compiled kernel takes outside torch's allocator is not in it: the CWD kernel's row
    buffers, two rows per thread (64 KiB on the feature map at 2 threads)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for name in ("kdbench", "reference"):
        formulations(case)[name](make_inputs(case, scaled(shape, 0.25)))  # lazy initialisation first
        sides = formulations(case)
        inputs = make_inputs(case, shape)
        inputs["preds_S"].grad = torch.zeros_like(inputs["preds_S"])  # the same on both sides: not counted
        with _stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as trace:
            sides[name](inputs)
        events = sorted((event for event in trace.profiler.kineto_results.events() if event.name() == "[memory]"),
                        key=lambda event: event.start_ns())
        held = peak = 0
        for event in events:
            held += event.nbytes()
            peak = max(peak, held)
        out[f"{name}_bytes"] = peak
        del inputs, sides
    return out
