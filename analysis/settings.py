"""What else, beside the seed, can make two runs of one spec give different numbers, read from
each run's env.json: the CPU thread count (float sums are reduced in another order), PyTorch's
deterministic algorithms and cuDNN/cuBLAS flags (GPU kernels that use atomics or autotuning), the
device and its model, the instruction sets the CPU kernels dispatch to (ATen's CPU capability,
oneDNN's ISA), and the library versions.

The report lists these per group of runs that it averages (the teacher, each student baseline,
each cell) and flags a group whose runs recorded different values: its spread then mixes seed
noise with that difference. A run resumed under other settings than its earlier attempts (a
requeue onto another kind of node) is flagged too.
"""

from __future__ import annotations

import json

import pandas as pd

from analysis import aggregate
from analysis import format as fmt
from analysis.collect import axis_path
from analysis.tables import Cell, Table, group_label
from analysis.tables import label as cell_label

# env.json key -> how the report names it. Threads, the deterministic flag and the device get
# their own columns; every key is compared within a group.
SETTINGS = {
    "threads": "CPU threads", "deterministic": "deterministic algorithms", "device": "device",
    "device_name": "device model", "torch": "torch", "mmcv": "mmcv", "mmengine": "mmengine", "mmseg": "mmseg",
    "mmdet": "mmdet", "python": "python", "matmul_precision": "float32 matmul precision",
    "cudnn_benchmark": "cuDNN autotuner", "cudnn_deterministic": "cuDNN deterministic",
    "cudnn_allow_tf32": "cuDNN TF32", "cublas_workspace_config": "cuBLAS workspace",
    "cpu_model": "CPU model", "cpu_capability": "ATen CPU capability", "onednn_isa": "oneDNN ISA",
}
NOT_RECORDED = "not recorded"


def _recorded(text) -> dict | None:
    """A run's settings from its env.json (the frame's ``env`` column), or None without one."""
    if not isinstance(text, str):
        return None
    env = json.loads(text)
    return {key: env.get(key) for key in SETTINGS}


def _complete_settings(rows: pd.DataFrame) -> list[dict]:
    """The settings of the complete runs among ``rows`` that recorded env.json: only those enter a mean."""
    if "env" not in rows:
        return []
    complete = rows[rows["status"] == "complete"]
    return [s for s in map(_recorded, complete["env"]) if s is not None]


def _shown(value) -> str:
    return NOT_RECORDED if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _groups(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per group of runs the report averages: teachers, student baselines, cells,
    labelled as the results table labels them."""
    found = []
    axes = [a for a in aggregate.axes_of(frame) if a != "method"]
    for kind, keys in (("teacher", ["teacher_key"]), ("student_baseline", ["baseline_key"]),
                       ("cell", aggregate.axes_of(frame) + ["baseline_key", "teacher_key"])):
        part = frame[frame["kind"] == kind]
        if not len(part):
            continue
        grouped = list(part.groupby(keys, dropna=False, sort=False))
        for _, rows in grouped:
            first = rows.iloc[0].to_dict()
            if kind == "cell":
                label = cell_label(first["method"], {axis_path(a): first[a] for a in axes})
            else:
                label = group_label("teacher" if kind == "teacher" else "student", first["name"], len(grouped))
            found.append((label, rows))
    return found


def group_settings(frame: pd.DataFrame) -> list[dict]:
    """Per group of runs: ``label``, ``runs`` (how many of its complete runs recorded env.json), ``deterministic``
    (``yes``, ``no``, ``mixed (k of n)`` or ``not recorded``), ``threads`` and ``device`` (their
    distinct values), and ``differs``: setting -> the distinct values, for each setting its runs
    recorded differently."""
    out = []
    for label, rows in _groups(frame):
        recorded = _complete_settings(rows)
        values = {key: sorted({_shown(s[key]) for s in recorded}) for key in SETTINGS}
        on = sum(1 for s in recorded if s["deterministic"] is True)
        if not recorded or all(s["deterministic"] is None for s in recorded):
            deterministic = NOT_RECORDED
        else:
            deterministic = "yes" if on == len(recorded) else "no" if on == 0 else f"mixed ({on} of {len(recorded)})"
        out.append({"label": label, "runs": len(recorded), "deterministic": deterministic,
                    "threads": values["threads"], "device": values["device"],
                    "differs": {key: v for key, v in values.items() if len(v) > 1}})
    return out


def _differences(differs: dict) -> str:
    return "; ".join(f"{SETTINGS[key]} ({', '.join(values)})" for key, values in differs.items())


def settings_table(groups: list[dict]) -> Table:
    """One row per group: runs with env.json, deterministic, threads, device, what differs."""
    table = Table("run-settings", "Numerics settings per cell",
                  ["Runs of", "complete runs recorded", "deterministic", "CPU threads", "device", "runs differ in"],
                  caption="From the env.json of each complete run (the runs a mean is taken over). Deterministic: "
                          "schedule.deterministic (PyTorch's deterministic "
                          "algorithms with cuDNN's deterministic mode and cuBLAS's fixed workspace; it matters on "
                          "GPUs). A row whose runs differ in a setting mixes that difference into its spread.")
    for group in groups:
        table.rows.append([Cell(group["label"]), Cell(fmt.integer(group["runs"])), Cell(group["deterministic"]),
                           Cell(", ".join(group["threads"]) or fmt.MISSING),
                           Cell(", ".join(group["device"]) or fmt.MISSING),
                           Cell(_differences(group["differs"]) or "nothing")])
    return table


def _attempts_differ(text) -> dict:
    """setting -> the distinct values a complete run's attempts recorded, for each setting its
    attempts recorded differently (env.json's ``earlier_attempts``, written when a run resumes)."""
    env = json.loads(text) if isinstance(text, str) else {}
    attempts = [a for a in env.get("earlier_attempts") or [] if isinstance(a, dict)] + [env]
    values = {key: sorted({_shown(a.get(key)) for a in attempts if key in a}) for key in SETTINGS}
    return {key: v for key, v in values.items() if len(v) > 1} if len(attempts) > 1 else {}


def settings_notes(frame: pd.DataFrame, groups: list[dict]) -> list[str]:
    """Sentences for the provenance section: each group whose runs differ in a setting, each run
    whose attempts differ in one, and the settings that differ between the study's runs at all (a
    Δ compares runs of two groups)."""
    notes = [f"The runs of {g['label']} differ in {_differences(g['differs'])}: their spread is not seed noise "
             "alone." for g in groups if g["differs"]]
    if "env" in frame:
        complete = frame[frame["status"] == "complete"]
        for name, run_id, text in zip(complete["name"], complete["run_id"], complete["env"]):
            if differs := _attempts_differ(text):
                notes.append(f"Run {name} ({run_id}) was resumed under other settings than its earlier attempts: "
                             f"{_differences(differs)}; its result mixes them.")
    recorded = _complete_settings(frame)
    across = {key: sorted({_shown(s[key]) for s in recorded}) for key in SETTINGS}
    across = {key: values for key, values in across.items() if len(values) > 1}
    if across:
        notes.append(f"This study's runs differ in {_differences(across)}: a Δ between runs made under different "
                     "settings includes that difference.")
    return notes
