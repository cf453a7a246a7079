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

from analysis import format as fmt
from analysis.records import Statistics, measured
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


def cell_records(study: Study, frame: pd.DataFrame, found: Statistics) -> list[dict]:
    """One flat record per cell: names, models, axis values, metric statistics, paths."""
    runs = dict(zip(frame["name"], zip(frame["run_id"], frame["status"])))  # one pass: 10k-run grids
    records = []
    for cell in found.cells:
        names, facts = list(cell.group.run_names), cell.group.facts
        best = _first_complete(runs, names)
        record = {"cell": re.sub(r"_s\d+$", "", names[0]), "method": cell.method, "kd_method": facts.kd_method,
                  "teacher": facts.teacher_config, "student": facts.student_config, "dataset": facts.dataset,
                  "location": facts.location, **{path: _number(value) for path, value in cell.axes.items()},
                  "runs": cell.group.planned, "complete": cell.group.complete}
        for metric in found.metrics:
            label, here = fmt.metric_label(metric), cell.measured(metric)
            record.update({f"{label}_mean": _number(here.mean), f"{label}_std": _number(here.std), f"{label}_n": here.n,
                           f"baseline_{label}_mean": _number(measured(cell.baseline, metric).mean),
                           f"delta_{label}": _number(cell.delta(metric)),
                           f"teacher_{label}_mean": _number(measured(cell.teacher, metric).mean)})
        seconds = cell.group.costs["seconds_per_iter"]
        record["seconds_per_iter"] = None if seconds is None else _number(seconds.mean)
        record["config"] = str(study.directory / best / "spec.json") if best else None
        record["checkpoint"] = str(study.directory / best / "model_final.pth") if best else None
        record["run_ids"] = ",".join(runs[n][0] for n in names)
        records.append(record)
    return records


def metafile(study: Study, found: Statistics, records: list[dict]) -> dict:
    """The OpenMMLab model index of the study's cells."""
    metrics = [fmt.metric_label(m) for m in found.metrics]
    task = TASKS.get(found.task, found.task)
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


def write_published(study: Study, frame: pd.DataFrame, found: Statistics, out: Path) -> dict[str, Path]:
    """``metafile.yml`` and ``results.tsv`` in ``out`` (the report's directory), from the study's
    rows (analysis.collect) and their statistics (analysis.summary); {kind: path}."""
    records = cell_records(study, frame, found)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: 3x faster on a 10k-run grid
    text = yaml.dump(metafile(study, found, records), Dumper=dumper, sort_keys=False, allow_unicode=True, width=120)
    write_text_atomic(out / METAFILE, text)
    columns = list(records[0]) if records else ["cell"]
    write_text_atomic(out / TSV, pd.DataFrame(records, columns=columns).to_csv(sep="\t", index=False))
    return {"metafile": out / METAFILE, "tsv": out / TSV}
