"""``kdbench plan STUDY --estimate``: compute per stage and in all, from the seconds per iteration of
complete runs of the same models under the results root, else from a probe of the step measured
here, saying which."""

import json
import statistics

import pytest
import yaml

from kdbench.stages import load_study
from runners.launch.launcher import LaunchOptions, launch
from tests.launch_helpers import CWD, TINY_BASE, dump_yaml, run_cli, write_study


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path_factory.getbasetemp() / "data"))


def estimate(path, results) -> tuple[list[dict], str, str]:
    code, out, err = run_cli("plan", str(path), "--results", str(results), "--estimate", "--json")
    assert code == 0, err
    return json.loads(out)["estimate"], out, err


def test_without_recorded_runs_each_model_pair_is_probed_here_and_the_estimate_says_so(tmp_path):
    """Guarantee: Without recorded runs each model pair is probed here and the estimate says so."""
    path = write_study(tmp_path, "probed", methods={"cwd": CWD, "pi": {**CWD, "method": "pi"}}, seeds=(0, 1))
    rows, _, err = estimate(path, tmp_path / "results")
    assert "probing 3 training step(s) here" in err   # teacher, student, student <- teacher: pi shares cwd's
    by_models = {(r["stage"], r["models"]): r for r in rows}
    assert set(by_models) == {("teacher", "tiny_seg_teacher"), ("student", "tiny_seg_student"),
                              ("student", "tiny_seg_student <- tiny_seg_teacher")}
    distilled = by_models["student", "tiny_seg_student <- tiny_seg_teacher"]
    assert (distilled["runs"], distilled["left"], distilled["iterations"]) == (4, 4, 16)
    for row in rows:
        assert row["source"] == "probe here (cpu, 3 steps)" and row["unit"] == "CPU-h"
        assert row["seconds_per_iter"] > 0
        cpus = 1   # the study's resources.cpus
        assert row["hours"] == pytest.approx(row["iterations"] * row["seconds_per_iter"] * cpus / 3600)
    code, out, _ = run_cli("plan", str(path), "--results", str(tmp_path / "results"), "--estimate")
    assert code == 0
    assert out.splitlines()[-1].startswith("study probed: ") and "CPU-h in all" in out.splitlines()[-1]
    assert out.splitlines()[-1].endswith("still to run (training steps only: start-up and evaluation are added once "
                                         "complete runs of these models under the results root have measured them)")


@pytest.mark.slow
def test_the_estimate_uses_the_seconds_per_iteration_recorded_by_complete_runs_of_the_same_models(tmp_path):
    """Guarantee: `plan --estimate` gives compute per stage and in all from the seconds per iteration recorded by
    complete runs of the same models, input, batch and device, else from a probe measured here, and says which.

    A study trained here gives its model pairs' speeds to a larger study of the same models (more
    seeds, more iterations, 3 CPUs per run); a batch size never run is probed."""
    results = tmp_path / "results"
    small = load_study(write_study(tmp_path, "small"), results)
    launch(small, LaunchOptions(progress=False))
    recorded = {p.name: json.loads((small.directory / p.run_id / "final.json").read_text())["cost"]["seconds_per_iter"]
                for p in small.runs}
    spec = yaml.safe_load(write_study(tmp_path, "large", seeds=(0, 1, 2)).read_text())
    spec["base"]["schedule"]["iterations"] = 1000
    spec["resources"]["cpus"] = 3
    spec["grid"] = {"schedule.batch_size": [TINY_BASE["schedule"]["batch_size"], 3]}
    (tmp_path / "large.yaml").write_text(dump_yaml(spec))
    rows, _, err = estimate(tmp_path / "large.yaml", results)
    assert "probing 3 training step(s) here" in err   # the teacher, student and distilled pair at batch 3
    rows = {(r["models"], r["source"]): r for r in rows}
    teacher = rows["tiny_seg_teacher", "1 recorded run"]
    assert teacher["seconds_per_iter"] == recorded["teacher"]
    assert teacher["hours"] == pytest.approx(1000 * recorded["teacher"] * 3 / 3600)
    distilled = rows["tiny_seg_student <- tiny_seg_teacher", "1 recorded run"]
    assert distilled["seconds_per_iter"] == recorded["cwd_logits_s0"]
    assert (distilled["runs"], distilled["iterations"]) == (3, 3000)
    assert distilled["hours"] == pytest.approx(3000 * recorded["cwd_logits_s0"] * 3 / 3600)
    baseline = rows["tiny_seg_student", "1 recorded run"]
    assert baseline["seconds_per_iter"] == statistics.median([recorded["student_s0"]])
    assert {s for (_, s) in rows} == {"1 recorded run", "probe here (cpu, 3 steps)"}
    # start-up and evaluation, measured by the complete runs, are added to the training steps, and shown apart
    costs = json.loads((small.directory / small.runs[0].run_id / "final.json").read_text())["cost"]
    assert teacher["startup_seconds"] == costs["startup_seconds"] > 0
    assert teacher["evaluation_seconds"] == pytest.approx(costs["evaluation_seconds"] / costs["evaluations"])
    assert teacher["evaluation_hours"] == pytest.approx(teacher["evaluation_seconds"] * 3 / 3600)   # 1 evaluation
    _, out, _ = run_cli("plan", str(tmp_path / "large.yaml"), "--results", str(results), "--estimate")
    assert ", start-up " in out.splitlines()[-1] and ", evaluation " in out.splitlines()[-1]


def test_recorded_speeds_leave_out_runs_timed_beside_other_work_unless_every_run_was(tmp_path):
    """Runs that recorded `cost.shared` (timed beside other runs or load) are slower than they are:
    the estimate's seconds per iteration come from the others, and it says how many it left out."""
    import json as json_

    from kdbench.estimate import recorded
    from tests.results_fixtures import make_store

    study, results = make_store(tmp_path)
    shared = {"cwd_logits_s0": 1.5, "student_s1": 0.9, "student_s2": 0.8}   # slow: timed on a busy machine
    for planned in study.runs:
        final = study.directory / planned.run_id / "final.json"
        if final.is_file() and planned.name in shared:
            record = json_.loads(final.read_text())
            record["cost"].update(shared=True, seconds_per_iter=shared[planned.name], startup_seconds=3.0,
                                  evaluation_seconds=2.0, evaluations=2)
            final.write_text(json_.dumps(record))
    speeds = {(json_.loads(key)[1], json_.loads(key)[3]): speed for key, speed in recorded(results).items()}
    student, distilled = speeds["tiny_seg_student", None], speeds["tiny_seg_student", "tiny_seg_teacher"]
    assert student.seconds_per_iter == 0.1 and student.source == "1 recorded run (2 timed beside other work left out)"
    assert (student.startup_seconds, student.evaluation_seconds) == (3.0, 1.0)   # measured by the left-out ones only
    # cwd_logits_s1 (0.15) and the other cells' runs timed alone: cwd_logits_s0 (1.5) left out
    assert distilled.seconds_per_iter == 0.15 and "(1 timed beside other work left out)" in distilled.source
