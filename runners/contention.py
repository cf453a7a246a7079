"""Whether a run was timed while other work shared its machine: its seconds per iteration are then
the machine's, not the method's, and the report says so beside them (analysis.tables.cost_table).

A local launch tells each run how many runs it starts at once (``KDBENCH_PARALLEL``); the run reads
the 1-minute load average while it trains, every ``LOAD_PERIOD_S`` (the kernel's update period).
``final.json``'s ``cost`` records both, with the CPU count and the run's own threads, and
``shared``: the launch ran more than one run at a time, or the load beyond the run's own threads
was at least one busy core (and at least a quarter of the machine's cores). A SLURM job's
neighbours on its node are not known to the launch: there the load alone decides. The load average
trails by about a minute, so a run's first minute carries some of what ran before it.
"""

from __future__ import annotations

import os
import statistics

PARALLEL_ENV = "KDBENCH_PARALLEL"   # set by the local executor (runners.launch.local): runs at a time
LOAD_PERIOD_S = 5.0  # Linux recomputes the load average every 5 seconds


def launch_parallel() -> int | None:
    """The launch's runs at a time, when a local launch started this run."""
    text = os.environ.get(PARALLEL_ENV, "")
    return int(text) if text.isdigit() and int(text) > 0 else None


def load_now() -> float | None:
    """The 1-minute load average, where the system gives one."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


def is_shared(parallel: int | None, load: float | None, threads: int, cpus: int) -> bool:
    """More than one run at a time, or other work worth a busy core (and a quarter of the machine)."""
    if parallel is not None and parallel > 1:
        return True
    return load is not None and load - threads >= max(1.0, cpus / 4)


def record(loads: list[float], threads: int) -> dict:
    """What ``final.json``'s ``cost`` records about the machine while the run was timed."""
    parallel, cpus = launch_parallel(), os.cpu_count() or 1
    load = statistics.median(loads) if loads else None
    return {"parallel": parallel, "load_average": load, "cpus": cpus, "threads": threads,
            "shared": is_shared(parallel, load, threads, cpus)}
