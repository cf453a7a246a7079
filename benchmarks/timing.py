"""Side-by-side timing for the bench suites: every call once per round, rounds interleaved, the
first round (warm-up) dropped, the median of the rest."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def synchronize(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so a timer brackets all of it."""
    if device != "cpu":
        import torch

        torch.cuda.synchronize()


def interleaved_medians(calls: dict[str, Callable[[], None]], repeats: int, sync: Callable[[], None],
                        rotate: bool = False, prepare: Callable[[], None] | None = None) -> dict[str, float]:
    """{name: median seconds} of ``repeats + 1`` rounds, each calling every one of ``calls`` once
    between two ``sync()``; the first round warms up and is dropped. ``rotate`` starts round k at
    the k-th call (modulo their number), so that no call always runs right after another one
    (cache, turbo); ``prepare`` runs untimed before each call."""
    names = list(calls)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats + 1):
        shift = round_index % len(names) if rotate and names else 0
        for name in names[shift:] + names[:shift]:
            if prepare is not None:
                prepare()
            sync()
            start = time.perf_counter()
            calls[name]()
            sync()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values[1:]) for name, values in seconds.items()}
