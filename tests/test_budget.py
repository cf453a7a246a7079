"""Equal-budget baselines (``equal_budget:``, kdbench.budget): planned from the cells' recorded cost,
once every distilled run of the seed has finished, with iterations computed by hand below."""

import json

import pytest

from kdbench import budget as budgets
from kdbench.expand import load_study, reload
from tests.launch_helpers import run_cli

STUDY = """
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


def _study(tmp_path, by="wall_clock", text=STUDY):
    path = tmp_path / "budget.yaml"
    path.write_text(text + (f"equal_budget: {by}\n" if by else ""))
    return load_study(path, tmp_path / "results")


def _finish(study, name, seconds_per_iter=0.1, shares=(0.0, 0.0), state="complete", miou=30.0):
    """Write the result of the run called ``name`` as a real run would (final.json or error.json)."""
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


def _twins(study):
    return {p.name: p for p in study.runs if p.kind == budgets.KIND}


def test_nothing_is_planned_or_waits_without_equal_budget(tmp_path):
    study = _study(tmp_path, by=None)
    assert study.waiting == () and not _twins(study)


def test_the_twin_waits_for_every_distilled_run_of_its_seed_and_plan_says_so(tmp_path):
    study = _study(tmp_path)
    assert not _twins(study) and [w.stage for w in study.waiting] == ["budget", "budget"]
    assert "cwd_s0, at_s0" in study.waiting[0].why
    _finish(study, "cwd_s0")
    study = reload(study)
    assert "waits for at_s0 to finish" in study.waiting[0].why
    assert set(study.waiting[0].needs) == {p.run_id for p in study.runs if p.name in ("cwd_s0", "at_s0", "student_s0")}
    code, out, _ = run_cli("plan", str(study.path), "--results", str(study.results))
    assert code == 0 and "budget: planned later: the equal-budget twin of student_s0" in out


def test_wall_clock_twin_trains_the_slowest_cells_seconds_at_the_baselines_own_pace(tmp_path):
    study = _study(tmp_path)
    _finish(study, "student_s0", seconds_per_iter=0.1)   # 10 iterations: 1.0 s
    _finish(study, "cwd_s0", seconds_per_iter=0.15)      # 1.5 s
    _finish(study, "at_s0", seconds_per_iter=0.22)       # 2.2 s, the slowest: 2.2 / 0.1 = 22 iterations
    study = reload(study)
    twin = _twins(study)["student_budget_s0"]
    baseline = next(p for p in study.runs if p.name == "student_s0")
    assert twin.run.schedule.iterations == 22 and twin.stage == "budget"
    assert twin.params == baseline.params and twin.run.seed == 0
    # Nothing but the iterations differs from the baseline: the same lr, poly schedule and data.
    same = {k: v for k, v in twin.run.to_dict().items() if k not in ("name", "tracking")}
    assert same == {**{k: v for k, v in baseline.run.to_dict().items() if k not in ("name", "tracking")},
                    "schedule": {**baseline.run.to_dict()["schedule"], "iterations": 22}}
    found = next(b for b in budgets.budgets(study.spec, study.runs, study.directory) if b.iterations)
    assert (found.slowest, found.cost, found.baseline_seconds_per_iter) == ("at_s0", pytest.approx(2.2), 0.1)
    assert [w.why for w in study.waiting] == [
        "the equal-budget twin of student_s1 (wall clock) waits for cwd_s1, at_s1 to finish"]


def test_iterations_twin_counts_the_slowest_cell_in_student_iterations_from_its_own_step_shares(tmp_path):
    study = _study(tmp_path, by="{by: iterations}")
    _finish(study, "cwd_s0", shares=(0.2, 0.1))   # 10 / (1 - 0.3) = 14.29 student iterations
    _finish(study, "at_s0", shares=(0.4, 0.1))    # 10 / (1 - 0.5) = 20: the slowest
    study = reload(study)   # the baseline's own pace is not needed: it has not finished
    assert _twins(study)["student_budget_s0"].run.schedule.iterations == 20


def test_a_failed_or_diverged_cell_is_left_out_of_the_slowest_and_named(tmp_path):
    study = _study(tmp_path)
    _finish(study, "student_s0", seconds_per_iter=0.1)
    _finish(study, "cwd_s0", seconds_per_iter=0.13)   # 1.3 s / 0.1 = 13
    _finish(study, "at_s0", state="diverged")
    study = reload(study)
    assert _twins(study)["student_budget_s0"].run.schedule.iterations == 13
    found = next(b for b in budgets.budgets(study.spec, study.runs, study.directory) if b.iterations)
    assert found.excluded == ("at_s0 (diverged)",) and found.slowest == "cwd_s0"


def test_no_twin_when_every_cell_of_the_seed_failed(tmp_path):
    study = _study(tmp_path)
    _finish(study, "student_s0")
    _finish(study, "cwd_s0", state="failed")
    _finish(study, "at_s0", state="diverged")
    study = reload(study)
    assert not _twins(study)
    assert "not planned: no distilled run finished with a cost (cwd_s0 (failed), at_s0 (diverged))" in \
        study.waiting[0].why


def test_the_same_results_give_the_same_twin_and_other_costs_another(tmp_path):
    study = _study(tmp_path)
    for name, pace in (("student_s0", 0.1), ("cwd_s0", 0.15), ("at_s0", 0.2)):
        _finish(study, name, seconds_per_iter=pace)
    first, again = _twins(reload(study)), _twins(reload(reload(study)))
    assert first["student_budget_s0"].run_id == again["student_budget_s0"].run_id
    _finish(study, "at_s0", seconds_per_iter=0.3)
    other = _twins(reload(study))["student_budget_s0"]
    assert other.run.schedule.iterations == 30 and other.run_id != first["student_budget_s0"].run_id


@pytest.mark.parametrize("value, message", [
    ("gpu_hours", "equal_budget: 'gpu_hours' is not valid; valid: wall_clock, iterations"),
    ("{per: iterations}", "equal_budget.per: unknown key"),
])
def test_a_bad_equal_budget_is_one_line_naming_the_key_and_what_is_valid(tmp_path, value, message):
    path = tmp_path / "budget.yaml"
    path.write_text(STUDY + f"equal_budget: {value}\n")
    code, _, err = run_cli("plan", str(path), "--results", str(tmp_path / "results"))
    assert code == 2 and message in err and not (tmp_path / "results").exists()


def test_equal_budget_needs_the_student_baselines(tmp_path):
    path = tmp_path / "budget.yaml"
    path.write_text(STUDY + "equal_budget: wall_clock\nbaselines: {student: false}\n")
    code, _, err = run_cli("plan", str(path))
    assert code == 2 and "equal_budget: needs the student baselines" in err
