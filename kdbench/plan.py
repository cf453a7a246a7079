"""``kdbench plan``: the grid of a study, with each run's state in the results store."""

from __future__ import annotations

import json
from collections import Counter

from kdbench import store
from kdbench.expand import Study
from kdbench.table import text_table
from kdbench.vocab import Stage


def plan_rows(study: Study, weights: dict[str, str] | None = None) -> list[dict]:
    """One row per planned run: id, name, stage, kind, its state in the store, what it depends on,
    its axis values and resources; with ``weights`` (run id -> ``cached``, ``absent 1 of 2`` or
    ``none``: whether the weight files it downloads are in the cache), that too."""
    scanned = store.scan(study.directory, [p.run_id for p in study.runs])
    resources = vars(study.resources)
    rows = [{"run_id": p.run_id, "name": p.name, "stage": p.stage, "kind": p.kind,
             "status": scanned[p.run_id].state, "depends_on": list(p.depends_on), "params": p.params,
             "resources": resources} for p in study.runs]
    if weights is not None:
        for row in rows:
            row["weights"] = weights[row["run_id"]]
    return rows


def format_plan(study: Study, rows: list[dict]) -> str:
    text = study.resources.text()
    weights = bool(rows) and "weights" in rows[0]
    lines = text_table(("run_id", "name", "stage", "status", *(("weights",) if weights else ()), "resources"),
                       [(r["run_id"], r["name"], r["stage"], r["status"], *((r["weights"],) if weights else ()), text)
                        for r in rows])
    counts = Counter((r["stage"], r["status"]) for r in rows)
    lines.append("")
    for stage in dict.fromkeys(r["stage"] for r in rows):
        by_status = ", ".join(f"{n} {status}" for (s, status), n in sorted(counts.items()) if s == stage)
        total = sum(n for (s, _), n in counts.items() if s == stage)
        lines.append(f"{stage}: {total} runs ({by_status})")
    lines += [f"{w.stage}: planned later: {w.why}" for w in study.waiting]
    lines += [f"{Stage.BUDGET}: {b['warning']}" for b in (study.records.get(Stage.BUDGET) or {}).get("budgets", [])
              if b.get("warning")]   # an equal budget from runs timed beside other work (kdbench.budget)
    lines.append(f"study {study.name}: {len(rows)} runs" + (" so far" if study.waiting else ""))
    return "\n".join(lines)


def plan_json(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2, sort_keys=True)
