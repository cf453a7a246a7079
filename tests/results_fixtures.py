"""A results store with known numbers, written by hand for the analysis and report tests.

``make_store(tmp_path)`` writes a small study (tiny seg configs, three methods on
decode_head.conv_seg, three seeds, one published reference) and, for each planned run, the files
a real run writes: spec.json, env.json, metrics.jsonl and final.json or error.json. The numbers:

| run | seed 0 | seed 1 | seed 2 | cell: mean ± std (n), Δ |
|---|---|---|---|---|
| teacher | 50 | | | 50.00 (n=1) |
| student baseline | 30 | 31 | 32 | 31.00 ± 1.00 (n=3) |
| cwd_logits | 35 | 36 | diverged | 35.50 ± 0.71 (n=2), +4.50 |
| pi_logits | 33 | failed | NaN (corrupt) | 33.00 (n=1), +2.00 |
| <script>alert(1)</script> | 20 | missing | 22 | 21.00 ± 1.41 (n=2), -10.00 |
"""

import json
import math
from pathlib import Path

from kdbench.stages import load_study, reload

SCRIPT = "<script>alert(1)</script>"
HEAD = """
name: fixture
description: Hand-written results for the report tests.
base:
  task: seg
  teacher: {config: tiny_seg_teacher}
  student: {config: tiny_seg_student}
  dataset: {name: fashion_scenes, params: {num_train: 16, num_val: 8, size: 32}}
  schedule: {iterations: 10}
"""
LOGITS, FEATURE = "decode_head.conv_seg", "decode_head.bottleneck"


def study_text(methods: dict[str, str], tail: str = "") -> str:
    """The fixture study with other methods (name -> the term, YAML flow text) and extra lines."""
    lines = "".join(f"  {name}: {term}\n" for name, term in methods.items())
    return f"{HEAD}methods:\n{lines}seeds: [0, 1, 2]\n{tail}"


STUDY = study_text({
    "cwd_logits": f"{{method: cwd, params: {{tau: 4.0}}, weight: 3.0, student_location: {LOGITS}}}",
    "pi_logits": f"{{method: pi, weight: 10.0, student_location: {LOGITS}}}",
    f'"{SCRIPT}"': f"{{method: at, weight: 1.0, student_location: {LOGITS}}}",
}, "references: [fixture_ref.csv]\n")
REFERENCE = """method,location,dataset,teacher,student,metric,value,teacher_value,student_value,n_runs,source
cwd,logits,fashion_scenes_val,t,s,mIoU,40.25,55.5,33.75,3,"A Paper, Table 9"
"""
ENV = {"python": "3.11.7", "torch": "2.13.0+cpu", "mmcv": "2.1.0", "mmengine": "0.10.7", "mmseg": "1.2.2",
       "mmdet": "3.3.0", "git_sha": "0123456789abcdef", "device": "cpu", "hostname": "test",
       "threads": 1, "deterministic": False, "cudnn_deterministic": False, "cudnn_benchmark": False,
       "cudnn_allow_tf32": True, "matmul_precision": "highest", "cublas_workspace_config": None}

# name -> mIoU of the final evaluation, or "diverged" / "failed" / "kd_inactive" / "missing" / nan
OUTCOMES = {
    "teacher": 50.0,
    "student_s0": 30.0, "student_s1": 31.0, "student_s2": 32.0,
    "cwd_logits_s0": 35.0, "cwd_logits_s1": 36.0, "cwd_logits_s2": "diverged",
    "pi_logits_s0": 33.0, "pi_logits_s1": "failed", "pi_logits_s2": math.nan,
    f"{SCRIPT}_s0": 20.0, f"{SCRIPT}_s1": "missing", f"{SCRIPT}_s2": 22.0,
}

CONSTANT = {"val/mAcc": 100 / 11, "val/classes_evaluated": 11.0}  # one class right everywhere, 10 never
# The split's chance levels as runners.metrics records them: 11 classes, the largest 80% of the pixels.
CHANCE = {"val/chance_mIoU": 80 / 11, "val/chance_mAcc": 100 / 11}


def seeds(name: str, *values) -> dict:
    """Outcomes of one cell's three seeds."""
    return {f"{name}_s{i}": v for i, v in enumerate(values)}


def _cost(kind: str) -> dict:
    return {"seconds_per_iter": 0.1 if kind == "student_baseline" else 0.15 if kind == "cell" else 0.2,
            "teacher_share": 0.2 if kind == "cell" else 0.0, "kd_share": 0.1 if kind == "cell" else 0.0,
            "peak_memory_mb": 1000.0, "peak_memory_kind": "cpu_max_rss", "iterations_timed": 8}


def write_run(root: Path, planned, outcome, metrics: dict | None = None, drop_costs: tuple = ()) -> None:
    """One run's files; ``metrics``: final.json metrics that replace or add to the made-up ones;
    ``drop_costs``: cost keys left out (as older runs did)."""
    if outcome == "missing":
        return
    run_dir = root / planned.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.json").write_text(json.dumps({**planned.run.to_dict(), "run_id": planned.run_id}))
    (run_dir / "env.json").write_text(json.dumps(ENV))
    main, second = ("val/bbox_mAP", "val/bbox_mAP_50") if planned.run.task == "det" else ("val/mIoU", "val/mAcc")
    final_value = outcome if isinstance(outcome, float) else 10.0
    seg_extra = {} if planned.run.task == "det" else {"val/classes_evaluated": 11.0, **CHANCE}
    lines = [{"iter": 5, main: final_value - 5, second: final_value - 3}]
    if isinstance(outcome, float):
        lines.append({"iter": 10, main: outcome, second: outcome + 10})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if outcome == "diverged":
        (run_dir / "error.json").write_text(json.dumps({"status": "diverged", "step": 7, "key": "loss_kd_cwd_logits"}))
    elif outcome == "kd_inactive":
        (run_dir / "error.json").write_text(json.dumps(
            {"status": "kd_inactive", "term": "pi_logits",
             "reason": "its loss is exactly 0 at each of the first 5 training steps"}))
    elif outcome == "failed":
        (run_dir / "error.json").write_text(json.dumps(
            {"status": "failed", "error": "Traceback ...\nRuntimeError: CUDA out of memory"}))
    else:  # json.dumps writes NaN as the bare token NaN, as a buggy writer would
        cost = {k: v for k, v in _cost(planned.kind).items() if k not in drop_costs}
        (run_dir / "final.json").write_text(json.dumps({
            "status": "complete", "name": planned.name, "role": planned.run.role, "task": "seg",
            "run_id": planned.run_id, "metrics": {main: outcome, second: outcome + 10, **seg_extra, **(metrics or {})},
            "cost": cost}))


def make_store(tmp_path: Path, outcomes: dict | None = None, study_text: str = STUDY, metrics: dict | None = None,
               drop_costs: tuple = ()):
    """Write the study, its reference file and its results; returns (study, results root).
    ``metrics``: run name -> final.json metrics that replace or add to the made-up ones;
    ``drop_costs``: cost keys no run records (older results)."""
    (tmp_path / "references").mkdir(exist_ok=True)
    (tmp_path / "references" / "fixture_ref.csv").write_text(REFERENCE)
    path = tmp_path / "fixture.yaml"
    path.write_text(study_text)
    results = tmp_path / "results"
    study = load_study(path, results)
    outcomes = {**OUTCOMES, **(outcomes or {})}
    for planned in study.runs:
        write_run(results / study.name, planned, outcomes.get(planned.name, "missing"),
                  (metrics or {}).get(planned.name), drop_costs)
    return study, results


# -- a study with equal budgets (tests/test_budget.py) ----------------------------------------------
BUDGET_STUDY = """
name: budget
base:
  task: seg
  teacher: {config: tiny_seg_teacher}
  student: {config: tiny_seg_student}
  dataset: {name: fashion_scenes, params: {num_train: 12, num_val: 4, size: 64}}
  schedule: {iterations: 10, lr: 0.05}
methods:
  cwd: {method: cwd, params: {tau: 4.0}, weight: 3.0, student_location: decode_head.conv_seg}
  at: {method: at, weight: 1.0, student_location: decode_head.conv_seg}
seeds: [0, 1]
"""


def budget_study(tmp_path, by="wall_clock", text=BUDGET_STUDY):
    path = tmp_path / "budget.yaml"
    path.write_text(text + (f"equal_budget: {by}\n" if by else ""))
    return load_study(path, tmp_path / "results")


def finish_run(study, name, seconds_per_iter=0.1, shares=(0.0, 0.0), state="complete", miou=30.0):
    """Write the result of the run called ``name`` of a budget study as a real run would (final.json
    with its iterations and cost, or error.json)."""
    planned = next(p for p in study.runs if p.name == name)
    run_dir = study.directory / planned.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.json").write_text(json.dumps(planned.run.to_dict()))
    if state != "complete":
        (run_dir / "error.json").write_text(json.dumps({"status": state, "error": "RuntimeError: boom"}))
        return
    cost = {"seconds_per_iter": seconds_per_iter, "teacher_share": shares[0], "kd_share": shares[1]}
    (run_dir / "final.json").write_text(json.dumps({
        "status": "complete", "name": name, "iterations": planned.run.schedule.iterations,
        "metrics": {"val/mIoU": miou}, "cost": cost}))


# mIoU by seed (0, 1), seconds per iteration; every run trains 10 iterations but the twin, 20:
#   student 30, 31 at 0.1 (1.0 s) | cwd 35, 36 at 0.15 (1.5 s) | at 31, 33 at 0.2 (2.0 s: the slowest)
#   twin: 2.0 s / 0.1 = 20 iterations; 33, 34.5 at 0.1 (2.0 s, 2.00x)
# cwd vs the twin: per-seed differences 2, 1.5: Δ +1.75, se 0.25, df 1, t 7, p 0.0903; at vs the
# twin: -2, -1.5: Δ -1.75, the same p; Holm over the two: 0.181 each, within noise.
BUDGET_RESULTS = {"student_s0": (30.0, 0.1), "student_s1": (31.0, 0.1), "cwd_s0": (35.0, 0.15),
                  "cwd_s1": (36.0, 0.15), "at_s0": (31.0, 0.2), "at_s1": (33.0, 0.2),
                  "student_budget_s0": (33.0, 0.1), "student_budget_s1": (34.5, 0.1)}


def make_budget_store(tmp_path: Path):
    """The budget study with every run complete (BUDGET_RESULTS), its twins planned from the cells'
    cost and then complete; returns the study, planned again."""
    study = budget_study(tmp_path)
    for name, (miou, pace) in BUDGET_RESULTS.items():
        if not name.startswith("student_budget"):
            finish_run(study, name, seconds_per_iter=pace, miou=miou)
    study = reload(study)
    for name in ("student_budget_s0", "student_budget_s1"):
        finish_run(study, name, seconds_per_iter=BUDGET_RESULTS[name][1], miou=BUDGET_RESULTS[name][0])
    return reload(study)


# -- a tuned study (tests/test_tuning.py, tests/test_reports.py) ---------------------------------
TUNED = study_text({"cwd_logits": f"{{method: cwd, params: {{tau: 4.0}}, weight: 3.0, student_location: {LOGITS}}}"},
                   "tune: {holdout: 0.25, axes: {cwd_logits: {term.weight: [1, 3]}, "
                   "student: {schedule.lr: [0.01, 0.02]}}}\n")
# The tune runs' held-out mIoU, and the final runs (planned once those have ended) on val.
TUNED_OUTCOMES = {"teacher": 50.0, "tune_student_lr0.01_s0": 28.0, "tune_student_lr0.02_s0": 29.5,
                  "tune_cwd_logits_w1_s0": "diverged", "tune_cwd_logits_w3_s0": 33.0,
                  **seeds("student", 30.0, 31.0, 32.0), **seeds("cwd_logits", 35.0, 36.0, 37.0)}


def make_tuned_store(tmp_path: Path):
    """A tuned study (``tune:``) with every stage's results: the tune runs first, then the final
    runs that their choices plan (lr 0.02 for the baseline, weight 3 for cwd_logits)."""
    from kdbench.stages import reload

    study, results = make_store(tmp_path, TUNED_OUTCOMES, TUNED)
    study = reload(study)
    for planned in study.runs:
        if planned.stage == "student":
            write_run(results / study.name, planned, TUNED_OUTCOMES[planned.name])
    return study, results


# -- a cell record written by hand (analysis.records), for checks of what reads one ----------------
def cell_record(method: str, axes: dict | None = None, recipe: dict | None = None, **facts):
    """A CellRecord with no complete run: its method, axis values, recipe card fields and run facts
    (analysis.records.RunFacts; the rest None) as given."""
    import math

    from analysis.collect import RECIPE_KEYS
    from analysis.records import NOTHING, CellRecord, Group, RunFacts

    known = {name: facts.get(name) for name in RunFacts.__dataclass_fields__}
    group = Group("cell", (), 1, {"complete": 0}, 0, 0, {"val/mIoU": NOTHING}, {"val/mIoU": {}}, {}, None,
                  {key: (recipe or {}).get(key) for key in RECIPE_KEYS}, RunFacts(**known))
    return CellRecord(method, axes or {}, group, None, None, (), (), math.nan, math.nan)
