"""A study's cells in the formats the field publishes, written beside the report:

- ``metafile.yml``: OpenMMLab's model-index style (the ``Collections`` / ``Models`` files of
  mmseg, mmdet and MMRazor): one model per cell with its teacher, student, distillation, the mean
  of each metric over the cell's complete seeds, its config (the first complete seed's resolved
  run, ``spec.json``) and its weights (that run's ``model_final.pth``).
- ``results.tsv``: one row per cell, like torchdistill's benchmark tables: the same facts, flat,
  with each metric's mean, sample std and n, the student baseline's and teacher's means and the gap.

Numbers are written raw (no rounding); a metric no complete run gave is empty (``null`` in YAML).
Paths are the results root as given (``results/<study>/<run id>/...``), as OpenMMLab's metafiles
give paths from the repository's root.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import yaml

from analysis import aggregate
from analysis import format as fmt
from kdbench.expand import Study
from kdbench.store import write_text_atomic

METAFILE, TSV = "metafile.yml", "results.tsv"
TASKS = {"seg": "Semantic Segmentation", "det": "Object Detection"}


def _number(value):
    """A float for YAML and TSV, None where there is no number (NaN: no complete run)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return float(value) if isinstance(value, float) else value


def _first_complete(runs: dict[str, tuple[str, str]], names: list[str]) -> str | None:
    """The run id of the first of ``names`` (seed order) that is complete; ``runs``: name ->
    (run id, status)."""
    return next((runs[n][0] for n in names if n in runs and runs[n][1] == "complete"), None)


def cell_records(study: Study, frame: pd.DataFrame) -> list[dict]:
    """One flat record per cell: names, models, axis values, metric statistics, paths."""
    table = aggregate.cells(frame)
    if not len(table):
        return []
    metrics = aggregate.metrics_of(frame)
    axes = [c for c in table.columns if c.startswith("axis:")]
    runs = dict(zip(frame["name"], zip(frame["run_id"], frame["status"])))  # one pass: 10k-run grids
    records = []
    for cell in table.to_dict("records"):
        names = list(cell["run_names"])
        best = _first_complete(runs, names)
        ids = [runs[n][0] for n in names]
        record = {"cell": re.sub(r"_s\d+$", "", names[0]), "method": cell["method"], "kd_method": cell["kd_method"],
                  "teacher": cell["teacher_config"], "student": cell["student_config"], "dataset": cell["dataset"],
                  "location": cell["location"], **{a[5:]: _number(cell[a]) for a in axes},
                  "runs": int(cell["planned"]), "complete": int(cell["complete"])}
        for metric in metrics:
            label = fmt.metric_label(metric)
            record.update({f"{label}_mean": _number(cell[f"{metric}|mean"]),
                           f"{label}_std": _number(cell[f"{metric}|std"]), f"{label}_n": int(cell[f"{metric}|n"]),
                           f"baseline_{label}_mean": _number(cell[f"baseline|{metric}|mean"]),
                           f"delta_{label}": _number(cell[f"{metric}|delta"]),
                           f"teacher_{label}_mean": _number(cell[f"teacher|{metric}|mean"])})
        record["seconds_per_iter"] = _number(cell.get("cost:seconds_per_iter|mean"))
        record["config"] = str(study.directory / best / "spec.json") if best else None
        record["checkpoint"] = str(study.directory / best / "model_final.pth") if best else None
        record["run_ids"] = ",".join(ids)
        records.append(record)
    return records


def metafile(study: Study, frame: pd.DataFrame, records: list[dict]) -> dict:
    """The OpenMMLab model index of the study's cells."""
    metrics = [fmt.metric_label(m) for m in aggregate.metrics_of(frame)]
    task = TASKS.get(aggregate.task_of(frame), aggregate.task_of(frame))
    models = []
    for r in records:
        values = {}
        for label in metrics:
            values.update({label: r[f"{label}_mean"], f"{label} std": r[f"{label}_std"],
                           f"{label} n": r[f"{label}_n"]})
        values.update({f"student baseline {metrics[0]}": r[f"baseline_{metrics[0]}_mean"],
                       f"delta {metrics[0]}": r[f"delta_{metrics[0]}"],
                       f"teacher {metrics[0]}": r[f"teacher_{metrics[0]}_mean"]})
        axes = {k: v for k, v in r.items() if k.startswith(("term.", "schedule.", "teacher.", "student.", "dataset."))}
        models.append({
            "Name": r["cell"], "In Collection": study.name, "Config": r["config"],
            "Metadata": {"Teacher": r["teacher"], "Student": r["student"], "Distillation": r["kd_method"],
                         "Method": r["method"], "Location": r["location"], "Training Data": r["dataset"],
                         **({"Axes": axes} if axes else {}), "Seeds": r["runs"], "Complete runs": r["complete"],
                         "Run ids": r["run_ids"].split(",")},
            "Results": [{"Task": task, "Dataset": r["dataset"], "Metrics": values}],
            "Weights": r["checkpoint"],
        })
    collection = {"Name": study.name, "Metadata": {"Training Data": sorted({r["dataset"] for r in records})},
                  "README": "README.md"}
    return {"Collections": [collection], "Models": models}


def write_published(study: Study, frame: pd.DataFrame, out: Path) -> dict[str, Path]:
    """``metafile.yml`` and ``results.tsv`` in ``out`` (the report's directory); {kind: path}."""
    records = cell_records(study, frame)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: 3x faster on a 10k-run grid
    text = yaml.dump(metafile(study, frame, records), Dumper=dumper, sort_keys=False, allow_unicode=True, width=120)
    write_text_atomic(out / METAFILE, text)
    columns = list(records[0]) if records else ["cell"]
    write_text_atomic(out / TSV, pd.DataFrame(records, columns=columns).to_csv(sep="\t", index=False))
    return {"metafile": out / METAFILE, "tsv": out / TSV}
