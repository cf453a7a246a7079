"""``kdbench plan``: the grid of a study, with each run's state in the results store."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from kdbench import store
from kdbench.study import Study
from kdbench.table import text_table


def resources_text(resources: dict) -> str:
    parts = [f"{resources['gpus']} gpu", f"{resources['cpus']} cpu", f"{resources['mem_gb']}G",
             f"{resources['time_min']}m"]
    if resources.get("partition"):
        parts.append(resources["partition"])
    return " ".join(parts)


def plan_rows(study: Study, results_root: str | Path = "results") -> list[dict]:
    with store.gc_paused():  # thousands of rows and result files read, no cycles
        return _plan_rows(study, results_root)


def _plan_rows(study: Study, results_root: str | Path) -> list[dict]:
    rows = []
    root = os.path.join(os.fspath(results_root), study.name)
    present = store.list_names(root)  # one listing: a run never started costs no lookup
    for planned in study.runs:
        state = store.run_state(os.path.join(root, planned.run_id)) if planned.run_id in present else "missing"
        rows.append({
            "run_id": planned.run_id,
            "name": planned.name,
            "stage": planned.stage,
            "kind": planned.kind,
            "status": state,
            "depends_on": planned.depends_on,
            "params": planned.params,
            "resources": study.resources,
        })
    return rows


def format_plan(study: Study, rows: list[dict]) -> str:
    lines = text_table(("run_id", "name", "stage", "status", "resources"),
                       [(r["run_id"], r["name"], r["stage"], r["status"], resources_text(r["resources"]))
                        for r in rows])
    counts = Counter((r["stage"], r["status"]) for r in rows)
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    lines.append("")
    for stage in stages:
        by_status = ", ".join(f"{n} {status}" for (s, status), n in sorted(counts.items()) if s == stage)
        total = sum(n for (s, _), n in counts.items() if s == stage)
        lines.append(f"{stage}: {total} runs ({by_status})")
    lines.append(f"study {study.name}: {len(rows)} runs")
    return "\n".join(lines)


def plan_json(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2, sort_keys=True)
