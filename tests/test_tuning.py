"""Tuned baselines (a study's ``tune:`` block): the held-out split of the training set, the
tune stage's runs, the choice of each method's setting and the final stage planned from it."""

from pathlib import Path

import pytest

from kdbench.spec import parse_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path_factory.getbasetemp() / "data"))


def test_the_holdout_split_is_disjoint_covers_the_training_set_and_depends_only_on_its_seed():
    from runners.data.holdout import split

    rest, held = split(50, 0.2, seed=3)
    assert len(held) == 10 and len(rest) == 40
    assert not set(rest) & set(held) and sorted(rest + held) == list(range(50))
    assert split(50, 0.2, seed=3) == (rest, held)          # the same draw every time
    assert split(50, 0.2, seed=4)[1] != held                # another seed, another share
    assert split(3, 0.01, seed=0)[1] and split(3, 0.99, seed=0)[0]   # never an empty part


def test_a_holdout_run_trains_and_evaluates_on_disjoint_training_images_and_never_reads_val(tmp_path):
    """Guarantee: A holdout run trains and evaluates on disjoint training images and never reads val."""
    from mmengine.runner import Runner

    from runners.build import register_scope
    from runners.data import holdout  # noqa: F401  (registers HeldOutSplit)
    from runners.datasets import dataset_configs

    params = {"num_train": 10, "num_val": 4, "size": 32, "seed": 1}
    run = parse_run({"task": "seg", "student": {"config": "tiny_seg_student"},
                     "dataset": {"name": "fashion_scenes", "params": params, "holdout": {"fraction": 0.3, "seed": 2}},
                     "schedule": {"iterations": 2, "batch_size": 2}})
    register_scope("seg")
    data = dataset_configs(run)
    assert "/val" not in repr(data)                         # no loader, no evaluator names val
    train = Runner.build_dataloader(data["train_dataloader"]).dataset
    held = Runner.build_dataloader(data["val_dataloader"]).dataset
    paths = [{held.get_data_info(i)["img_path"] for i in range(len(held))},
             {train.get_data_info(i)["img_path"] for i in range(len(train))}]
    assert len(paths[0]) == 3 and len(paths[1]) == 7
    assert not paths[0] & paths[1]
    assert all("/images/train/" in p for p in paths[0] | paths[1])
    # The held-out images go through the test pipeline: whole, unflipped, as val would be.
    assert held[0]["inputs"].shape[-2:] == (32, 32)


def _try(value, score, state="complete"):
    return {"setting": {"schedule.lr": value}, "state": state, "score": score}


def test_the_choice_is_the_best_held_out_score_a_tie_goes_to_the_setting_listed_first_and_failures_never_win():
    """Guarantee: The choice is the best held out score a tie goes to the setting listed first and failures never
    win."""
    from kdbench.tuning import choose

    # Held-out mIoU by lr: 0.01 -> 30.0, 0.02 -> diverged (its last score, 99, is never read),
    # 0.05 -> 31.5, 0.1 -> 31.5. The best is 31.5, held by 0.05 and 0.1: 0.05 is listed first.
    tries = [_try(0.01, 30.0), _try(0.02, 99.0, "diverged"), _try(0.05, 31.5), _try(0.1, 31.5)]
    assert choose(tries)["setting"] == {"schedule.lr": 0.05}
    assert choose(list(reversed(tries)))["setting"] == {"schedule.lr": 0.1}
    assert choose([_try(0.01, None), _try(0.02, float("nan")), _try(0.05, 40.0, "failed")]) is None


def _tuned_study(directory: Path, **tune) -> Path:
    from tests.launch_helpers import CWD, write_study

    axes = {"student": {"schedule.lr": [0.02, 0.05]}, "cwd_logits": {"term.weight": [1.0, 3.0]}}
    return write_study(directory, "tuned", seeds=(0, 1), tune={"holdout": 0.25, "axes": axes, **tune},
                       methods={"cwd_logits": CWD})


def _finish(study, name: str, miou: float | None, seconds: float = 2.0) -> None:
    """A tune run's result as a run writes it: final.json (held-out mIoU), or error.json (diverged)."""
    from kdbench import store

    planned = next(p for p in study.runs if p.name == name)
    folder = study.directory / planned.run_id
    folder.mkdir(parents=True, exist_ok=True)
    if miou is None:
        store.write_json_atomic(folder / store.ERROR, {"status": "diverged", "step": 3, "key": "loss"})
    else:
        store.write_json_atomic(folder / store.FINAL, {"status": "complete", "metrics": {"val/mIoU": miou},
                                                       "cost": {"wall_seconds_this_attempt": seconds}})


def test_the_final_stage_waits_for_every_tune_run_then_runs_each_choice_over_the_seeds_on_train_and_val(tmp_path):
    """Guarantee: The final stage waits for every tune run then runs each choice over the seeds on train and val."""
    from kdbench.stages import load_study, reload

    results = tmp_path / "results"
    study = load_study(_tuned_study(tmp_path), results)
    tune = [p for p in study.runs if p.stage == "tune"]
    assert sorted(p.name for p in tune) == ["tune_cwd_logits_w1_s0", "tune_cwd_logits_w3_s0",
                                            "tune_student_lr0.02_s0", "tune_student_lr0.05_s0"]
    assert all(p.run.seed == 0 and p.run.dataset.holdout.fraction == 0.25 for p in tune)
    assert [w.stage for w in study.waiting] == ["student"] and set(study.waiting[0].needs) == {p.run_id for p in tune}
    # The baseline's tune runs end first: its final runs are planned, cwd_logits still waits.
    _finish(study, "tune_student_lr0.02_s0", 20.0)
    _finish(study, "tune_student_lr0.05_s0", 25.0)
    _finish(study, "tune_cwd_logits_w1_s0", None)          # diverged: never chosen
    study = reload(study)
    finals = {p.name: p for p in study.runs if p.stage == "student"}
    assert sorted(finals) == ["student_s0", "student_s1"]
    assert {p.run.schedule.lr for p in finals.values()} == {0.05} and finals["student_s1"].run.seed == 1
    assert all(p.run.dataset.holdout is None and p.kind == "student_baseline" for p in finals.values())
    assert len(study.waiting) == 1 and "cwd_logits" in study.waiting[0].why
    _finish(study, "tune_cwd_logits_w3_s0", 18.0)
    study = reload(study)
    finals = {p.name: p for p in study.runs if p.stage == "student"}
    assert sorted(finals) == ["cwd_logits_s0", "cwd_logits_s1", "student_s0", "student_s1"]
    assert {p.run.distill[0].weight for p in finals.values() if p.kind == "cell"} == {3.0}
    assert {p.run.schedule.lr for p in finals.values() if p.kind == "cell"} == {0.01}   # the study's own
    assert finals["cwd_logits_s0"].depends_on == tuple(p.run_id for p in study.runs if p.kind == "teacher")
    assert study.waiting == ()
    # Planned again from the same results: the same runs under the same ids (a relaunch skips them).
    assert [p.run_id for p in reload(study).runs] == [p.run_id for p in study.runs]


def test_the_tuning_summary_gives_every_try_its_score_the_choice_and_the_budget_per_method(tmp_path):
    from kdbench.stages import load_study
    from kdbench.tuning import summary

    study = load_study(_tuned_study(tmp_path, metric="mIoU"), tmp_path / "results")
    for name, miou in (("tune_student_lr0.02_s0", 20.0), ("tune_student_lr0.05_s0", 25.0),
                       ("tune_cwd_logits_w1_s0", None)):
        _finish(study, name, miou, seconds=3.0)
    rows = {row["method"]: row for row in summary(study.spec, study.runs, study.directory)}
    assert list(rows) == ["cwd_logits", "student"]
    student, cwd = rows["student"], rows["cwd_logits"]
    assert [t["score"] for t in student["tries"]] == [20.0, 25.0] and student["metric"] == "val/mIoU"
    assert student["chosen"] == {"schedule.lr": 0.05} and student["chosen_run"] == "tune_student_lr0.05_s0"
    assert student["budget"] == {"runs": 2, "iterations": 8, "seconds": 6.0}
    assert cwd["status"] == "waiting" and cwd["chosen"] is None and cwd["never_chosen"] == ["tune_cwd_logits_w1_s0"]
    assert cwd["budget"]["runs"] == 2 and cwd["budget"]["seconds"] is None   # one run has not ended


@pytest.mark.slow   # 7 tiny training runs: about a minute on 2 idle cores
def test_one_local_launch_of_smoke_tuned_runs_the_tune_stage_then_the_final_stage_at_the_best_held_out_settings(
        tmp_path, monkeypatch):
    """Guarantee: One local launch of smoke tuned runs the tune stage then the final stage at the best held out
    settings."""
    import json

    import yaml

    from kdbench import store
    from kdbench.stages import load_study
    from runners.launch.launcher import LaunchOptions, launch, summary
    from tests.launch_helpers import dump_yaml, run_cli

    # studies/smoke_tuned.yaml as shipped (its tune block and methods), shrunk to a few iterations
    # on a few images and one seed, so that the launch takes about a minute.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = yaml.safe_load((ROOT / "studies" / "smoke_tuned.yaml").read_text())
    spec["base"]["dataset"]["params"].update(num_train=10, num_val=4, size=32)
    spec["base"]["schedule"].update(iterations=3, checkpoint_interval=3)
    spec["teacher_run"]["schedule"].update(iterations=3, checkpoint_interval=3)
    spec["seeds"] = spec["seeds"][:1]
    path = tmp_path / "smoke_tuned.yaml"
    path.write_text(dump_yaml(spec))
    results = tmp_path / "results"
    study = load_study(path, results)
    assert [p.stage for p in study.runs] == ["teacher"] + ["tune"] * 4 and study.waiting
    counts = summary(launch(study, LaunchOptions(parallel=2, progress=False)))
    assert counts == {"submit": 7}                   # one launch: teacher, 4 tune runs, then 2 final runs
    study = load_study(path, results)
    assert study.waiting == ()
    states = store.scan(study.directory, [p.run_id for p in study.runs])
    assert {files.state for files in states.values()} == {"complete"}
    recipes = {p.stage: states[p.run_id].final["recipe"] for p in study.runs}
    assert recipes["tune"]["train_images"] == 8 and recipes["student"]["train_images"] == 10   # 2 of 10 held out
    assert "held-out" in recipes["tune"]["evaluation"] and "held-out" not in recipes["student"]["evaluation"]
    for method, axis in (("student", "schedule.lr"), ("cwd_logits", "term.weight")):
        held_out = [(p.params[axis], states[p.run_id].final["metrics"]["val/mIoU"]) for p in study.runs
                    if p.stage == "tune" and p.params["method"] == method]
        assert [value for value, _ in held_out] == spec["tune"]["axes"][method][axis]   # as listed
        best = next(value for value, score in held_out if score == max(s for _, s in held_out))
        finals = [p for p in study.runs if p.stage == "student" and (p.params.get("method") or "student") == method]
        assert len(finals) == 1
        chosen = {p.run.schedule.lr if method == "student" else p.run.distill[0].weight for p in finals}
        assert chosen == {best}
    code, out, _ = run_cli("report", str(path), "--results", str(results), "--json", "--format", "md")
    tuning = {row["method"]: row for row in json.loads(out)["tuning"]}
    assert code == 0 and tuning["student"]["budget"]["runs"] == tuning["cwd_logits"]["budget"]["runs"] == 2
    assert tuning["student"]["chosen"] == {"schedule.lr": next(p.run.schedule.lr for p in study.runs
                                                                if p.kind == "student_baseline")}


def test_plan_show_says_a_tune_runs_values_come_from_its_axis_and_a_final_runs_from_the_choice(tmp_path):
    from kdbench.origins import find_run, show
    from kdbench.stages import load_study, reload

    study = load_study(_tuned_study(tmp_path), tmp_path / "results")
    shown = show(study, find_run(study, "tune_student_lr0.05_s0"))["values"]
    assert shown["schedule.lr"] == {"value": 0.05, "from": "axis tune.axes.student.schedule.lr"}
    assert shown["dataset.holdout.fraction"]["from"].startswith("tune.holdout")
    for name, miou in (("tune_student_lr0.02_s0", 20.0), ("tune_student_lr0.05_s0", 25.0)):
        _finish(study, name, miou)
    shown = show(reload(study), find_run(reload(study), "student_s1"))["values"]
    assert shown["schedule.lr"]["value"] == 0.05 and "chosen among tune.axes.student.schedule.lr" in \
        shown["schedule.lr"]["from"]
    assert not any(key.startswith("dataset.holdout") for key in shown)


def test_a_detection_holdout_scores_only_the_held_out_training_images_against_the_training_annotations():
    import torch
    from mmengine.runner import Runner
    from mmengine.structures import InstanceData

    from runners.build import register_scope
    from runners.data import holdout  # noqa: F401  (registers HeldOutSplit)
    from runners.datasets import dataset_configs
    from runners.metrics import KDCocoMetric

    params = {"num_train": 10, "num_val": 4, "size": 32, "seed": 1}
    run = parse_run({"task": "det", "student": {"config": "tiny_det_student"},
                     "dataset": {"name": "fashion_scenes", "params": params, "holdout": {"fraction": 0.3}},
                     "schedule": {"iterations": 2, "batch_size": 2}})
    register_scope("det")
    data = dataset_configs(run)
    assert "instances_train.json" in data["val_evaluator"]["ann_file"] and "_val" not in repr(data)
    held = Runner.build_dataloader(data["val_dataloader"]).dataset
    metric = KDCocoMetric(**{k: v for k, v in data["val_evaluator"].items() if k != "type"})
    metric.dataset_meta = held.metainfo
    for index in range(len(held)):   # each held-out image predicted exactly as annotated
        sample = held[index]["data_samples"]
        gt = sample.gt_instances
        pred = InstanceData(bboxes=gt.bboxes.tensor if hasattr(gt.bboxes, "tensor") else gt.bboxes,
                            labels=gt.labels, scores=torch.ones(len(gt.labels)))
        metric.process({}, [{"img_id": sample.img_id, "ori_shape": sample.ori_shape, "pred_instances": pred}])
    # Perfect on the 3 held-out images; the 7 other training images in the file are not counted
    # (counted, their objects would all be misses and AP far below 100).
    assert len(held) == 3 and metric.compute_metrics(metric.results)["bbox_mAP"] == pytest.approx(100.0)
