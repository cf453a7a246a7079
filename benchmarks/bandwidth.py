"""A GPU's memory bandwidth, and how close a kernel comes to the bound it sets (the loss suite's GPU
rows)."""

from __future__ import annotations

import statistics
import time

# Peak DRAM bandwidth in GB/s from the vendors' data sheets, matched by substring of the device name
# (the first match wins, so the more specific names come first).
PEAK_BANDWIDTH_GBPS = [
    ("GH200", 4000.0), ("H200", 4800.0), ("H100 NVL", 3900.0), ("H100 PCIe", 2000.0), ("H100", 3350.0),
    ("A100-SXM4-80GB", 2039.0), ("A100 80GB PCIe", 1935.0), ("A100", 1555.0), ("A10G", 600.0), ("A10", 600.0),
    ("L40S", 864.0), ("L40", 864.0), ("L4", 300.0), ("V100", 900.0), ("T4", 320.0),
    ("RTX 4090", 1008.0), ("RTX 3090", 936.0),
]


def peak_bandwidth(device_name: str) -> float | None:
    """The data-sheet peak bandwidth (GB/s) of a GPU by its name; None when it is not in the table."""
    return next((gbps for key, gbps in PEAK_BANDWIDTH_GBPS if key in device_name), None)


def device_bandwidth() -> dict:
    """The GPU's peak bandwidth (data-sheet table by name) and a measured device-to-device copy
    (1 GiB, bytes read + written over the median time); the table's figure when the name is known."""
    import torch

    name = torch.cuda.get_device_name(0)
    table = peak_bandwidth(name)
    source = torch.empty(1 << 28, dtype=torch.float32, device="cuda")
    target = torch.empty_like(source)
    times = []
    for _ in range(6):
        torch.cuda.synchronize()
        start = time.perf_counter()
        target.copy_(source)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    measured = 2 * source.numel() * source.element_size() / statistics.median(times[1:]) / 1e9
    del source, target
    return {"device": name, "table_GBps": table, "copy_GBps": measured,
            "GBps": table if table is not None else measured,
            "source": "data sheet" if table is not None else "measured copy"}


def bandwidth_fields(shape: tuple, seconds: float, bandwidth: dict) -> dict:
    """CWD: the bytes that must move (read S and T, write the gradient, float32) at the device's
    bandwidth, over the measured forward + backward time."""
    import math

    moved = 3 * math.prod(shape) * 4
    bound = moved / (bandwidth["GBps"] * 1e9)
    return {"bytes_moved": moved, "bandwidth_GBps": bandwidth["GBps"], "bandwidth_source": bandwidth["source"],
            "bandwidth_bound_s": bound, "bandwidth_fraction": bound / seconds}
