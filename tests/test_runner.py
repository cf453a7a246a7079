"""One run end to end on CPU: real mmseg/mmdet models on mmengine's Runner, result files,
resume, divergence, and the checks that fail before training starts. Tests that train (a run, or
the tiny teacher fixture) are marked slow; the rest build models at most."""

import json

import pytest
import torch

from kdbench import store
from kdbench.errors import UserError
from kdbench.spec import parse_run
from tests.run_fixtures import ROOT, SHORT, TINY_DATA, cwd_terms, execute, seg_run


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path_factory.getbasetemp() / "data"))


def train_only(run, out):
    """The training step alone, behind the preflight: its own probe is the backstop."""
    from runners.train import execute as train_execute

    return train_execute(parse_run(run), out)


@pytest.mark.slow
def test_a_teacher_run_trains_evaluates_and_writes_every_result_file(seg_teacher):
    final = store.read_json(seg_teacher / "final.json")
    assert store.run_state(seg_teacher) == "complete"
    assert set(final["metrics"]) >= {"val/mIoU", "val/mAcc", "val/aAcc"}
    assert all(isinstance(v, float) and 0 <= v <= 100 for v in final["metrics"].values() if "classes" not in str(v))
    # the split's chance levels (analysis.chance): the largest class's share, spread over the classes present
    metrics = final["metrics"]
    assert 0 < metrics["val/chance_mIoU"] < metrics["val/chance_aAcc"] < 100 and metrics["val/chance_mAcc"] > 0
    assert final["cost"]["seconds_per_iter"] > 0 and final["cost"]["peak_memory_mb"] > 0
    env = store.read_json(seg_teacher / "env.json")
    assert {"python", "torch", "mmcv", "mmseg", "mmdet", "git_sha", "device"} <= set(env)
    spec = store.read_json(seg_teacher / "spec.json")
    assert spec["run_id"] == final["run_id"] and len(final["run_id"]) == 12
    lines = store.read_jsonl(seg_teacher / "metrics.jsonl")
    assert [line["iter"] for line in lines] == [4]
    weights = torch.load(seg_teacher / "model_final.pth", weights_only=True)  # a plain state dict
    assert any(k.startswith("decode_head.conv_seg") for k in weights)


@pytest.mark.slow
def test_a_cwd_student_logs_each_kd_term_and_records_the_teacher_and_kd_shares_of_the_step(seg_teacher, tmp_path):
    run = seg_run(teacher={"config": "tiny_seg_teacher", "checkpoint": {"run": str(seg_teacher)}},
                  distill=cwd_terms())
    final = execute(run, tmp_path)
    cost = final["cost"]
    assert final["status"] == "complete" and 0 < cost["kd_share"] < 1 and 0 < cost["teacher_share"] < 1
    assert cost["kd_share"] + cost["teacher_share"] < 1
    scalars = next(tmp_path.glob("*/vis_data/scalars.json")).read_text().splitlines()
    logged = set().union(*(json.loads(line) for line in scalars))
    assert {"loss_kd_cwd_logits", "loss_kd_cwd_feature", "decode.loss_ce"} <= set(logged)
    student_weights = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert not any(k.startswith("teacher.") for k in student_weights)


@pytest.mark.slow
def test_a_student_baseline_needs_no_teacher(tmp_path):
    final = execute(seg_run(), tmp_path)
    assert final["status"] == "complete" and final["cost"]["kd_share"] == 0 == final["cost"]["teacher_share"]


@pytest.mark.slow
def test_a_teacher_run_with_a_checkpoint_only_evaluates_it(seg_teacher, tmp_path):
    run = {"task": "seg", "role": "teacher", "dataset": TINY_DATA, "schedule": {"iterations": 0},
           "teacher": {"config": "tiny_seg_teacher", "checkpoint": str(seg_teacher / "model_final.pth")}}
    final = execute(run, tmp_path)
    trained = store.read_json(seg_teacher / "final.json")
    assert final["metrics"]["val/mIoU"] == pytest.approx(trained["metrics"]["val/mIoU"], abs=1e-9)
    assert not list(tmp_path.glob("iter_*.pth"))


@pytest.mark.slow
def test_a_wrong_location_fails_before_training_and_names_the_close_matches(seg_teacher, tmp_path):
    """Guarantee: A wrong location fails before training and names the close matches."""
    terms = [{"method": "cwd", "student_location": "decode_head.conv_segg"}]
    run = seg_run(teacher={"config": "tiny_seg_teacher", "checkpoint": {"run": str(seg_teacher)}}, distill=terms)
    with pytest.raises(UserError, match=r"student location 'decode_head.conv_segg' is not in the model; "
                                        r"close matches: decode_head.conv_seg"):
        train_only(run, tmp_path)
    assert not list(tmp_path.glob("iter_*.pth")) and not (tmp_path / "final.json").exists()


@pytest.mark.slow
def test_a_channel_mismatch_without_an_adapter_names_both_shapes(seg_teacher, tmp_path):
    """Guarantee: A channel mismatch without an adapter names both shapes."""
    terms = [{"method": "cwd", "student_location": "decode_head.bottleneck"}]
    run = seg_run(teacher={"config": "tiny_seg_teacher", "checkpoint": {"run": str(seg_teacher)}}, distill=terms)
    expected = r"student has 32 channels \(1, 32, 8, 8\), teacher 64 \(1, 64, 8, 8\); add an adapter"
    with pytest.raises(UserError, match=expected):
        train_only(run, tmp_path)


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_as_diverged_at_its_step(tmp_path):
    """Guarantee: A NaN or Inf loss marks the run diverged at its step; NaN never reaches a result file or a mean."""
    run = seg_run(schedule={"iterations": 30, "batch_size": 2, "lr": 1e12, "checkpoint_interval": 30})
    with pytest.raises(Exception, match="decode.loss_ce is (nan|inf)"):
        execute(run, tmp_path)
    error = store.read_json(tmp_path / "error.json")
    assert error["status"] == "diverged" and 1 < error["step"] <= 30 and error["key"] == "decode.loss_ce"
    assert store.run_state(tmp_path) == "diverged" and not (tmp_path / "final.json").exists()


def test_a_spec_holding_nan_is_rejected_before_anything_is_written(tmp_path):
    run = seg_run(student={"config": "tiny_seg_student",
                           "overrides": {"model.decode_head.loss_decode.loss_weight": float("nan")}})
    with pytest.raises(UserError, match=r"student\.overrides\.model\.decode_head\.loss_decode\.loss_weight: "
                                        r"must be a finite number"):
        execute(run, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_complete_directory_is_left_as_it_is_and_another_run_is_refused(seg_teacher, tmp_path):
    before = (seg_teacher / "final.json").stat().st_mtime_ns
    again = execute({"task": "seg", "role": "teacher", "teacher": {"config": "tiny_seg_teacher"},
                     "dataset": TINY_DATA, "schedule": dict(SHORT)}, seg_teacher)
    assert again["status"] == "complete" and (seg_teacher / "final.json").stat().st_mtime_ns == before
    with pytest.raises(UserError, match="holds results of a different run"):
        execute(seg_run(seed=7), seg_teacher)


def test_a_checkpoint_that_needs_code_to_unpickle_is_refused_unless_trusted(tmp_path):
    """Guarantee: Checkpoints from outside load with `weights_only=True` unless marked trusted."""
    from runners.build import load_weights

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": _Custom()}, evil)
    with pytest.raises(UserError, match="set trusted: true"):
        load_weights(torch.nn.Linear(1, 1), str(evil), trusted=False, where="teacher.checkpoint")


def test_a_checkpoint_that_needs_code_to_unpickle_loads_when_trusted(tmp_path):
    """Guarantee: A checkpoint that needs code to unpickle loads when trusted."""
    from runners.build import load_weights

    source, model = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    path = tmp_path / "trusted.pth"
    torch.save({"state_dict": source.state_dict(), "meta": _Custom()}, path)
    load_weights(model, str(path), trusted=True, where="teacher.checkpoint")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())


class _Custom:
    pass


@pytest.mark.slow
def test_a_run_file_with_a_trusted_teacher_evaluates_a_checkpoint_that_needs_code_to_unpickle(seg_teacher, tmp_path):
    """Guarantee: A run file with a trusted teacher evaluates a checkpoint that needs code to unpickle."""
    from mmengine.logging import HistoryBuffer

    from kdbench.spec import load_run
    from runners.run import run_one

    history = HistoryBuffer()
    history.update(1.0)
    checkpoint = tmp_path / "teacher.pth"  # weights beside an mmengine object, as mmengine's checkpoints hold
    torch.save({"state_dict": torch.load(seg_teacher / "model_final.pth", weights_only=True),
                "message_hub": {"loss": history}}, checkpoint)
    run = {"task": "seg", "role": "teacher", "dataset": TINY_DATA, "schedule": {"iterations": 0},
           "teacher": {"config": "tiny_seg_teacher", "checkpoint": str(checkpoint)}}
    (tmp_path / "refused.json").write_text(json.dumps(run))
    (tmp_path / "trusted.json").write_text(json.dumps({**run, "teacher": {**run["teacher"], "trusted": True}}))
    with pytest.raises(UserError, match="set trusted: true"):
        run_one(load_run(tmp_path / "refused.json"), tmp_path / "refused")
    final = run_one(load_run(tmp_path / "trusted.json"), tmp_path / "trusted")
    trained = store.read_json(seg_teacher / "final.json")
    assert final["metrics"]["val/mIoU"] == pytest.approx(trained["metrics"]["val/mIoU"], abs=1e-9)


def test_the_step_clock_times_the_kd_backward_as_one_stretch_before_the_students_own_backward():
    from runners.distill import StepClock, _BackwardMark

    clock = StepClock()
    torch.manual_seed(0)
    x = torch.randn(4, 64, requires_grad=True)
    cpu = torch.device("cpu")
    clock.stamp("teacher_start", cpu)
    clock.stamp("teacher_end", cpu)
    hidden = _BackwardMark.apply(x @ torch.randn(64, 64), clock, "student_backward")  # the student's earlier layer
    feature = torch.tanh(hidden @ torch.randn(64, 64))
    task = feature.pow(2).mean()
    kd = _BackwardMark.apply(feature, clock, "kd_backward_end")
    kd = (torch.tanh(kd @ torch.randn(64, 256)) @ torch.randn(256, 64)).pow(2).mean()
    kd = _BackwardMark.apply(kd, clock, "kd_backward_start")
    clock.stamp("kd_forward_end", cpu)
    (task + kd).backward()
    stamps = clock.stamps
    assert stamps["kd_backward_start"][0] < stamps["kd_backward_end"][0] < stamps["student_backward"][0]
    parts = clock.parts()
    assert parts["kd_backward"] == pytest.approx(stamps["kd_backward_end"][0] - stamps["kd_backward_start"][0])
    assert parts["kd_backward"] > 0 and parts["kd_forward"] > 0
    clock.reset()
    assert clock.parts() == {"teacher": 0.0, "kd_forward": 0.0, "kd_backward": 0.0}


@pytest.mark.slow
def test_the_holistic_critic_is_logged_without_entering_the_students_total_loss(seg_teacher, tmp_path):
    terms = [{"name": "ho", "method": "ho", "weight": 0.1, "student_location": "decode_head.conv_seg"}]
    run = seg_run(teacher={"config": "tiny_seg_teacher", "checkpoint": {"run": str(seg_teacher)}}, distill=terms)
    final = execute(run, tmp_path)
    assert final["status"] == "complete"
    scalars = [json.loads(line) for line in next(tmp_path.glob("*/vis_data/scalars.json")).read_text().splitlines()]
    step = next(line for line in scalars if "loss_kd_ho" in line)
    assert {"ho_critic", "ho_critic_gp"} <= set(step)
    parts = sum(value for key, value in step.items() if key.startswith("loss_kd_") or key.startswith("decode.loss"))
    assert step["loss"] == pytest.approx(parts, rel=1e-3, abs=1e-4)


@pytest.mark.slow
def test_the_teacher_stays_frozen_while_the_student_and_its_adapter_train(seg_teacher, tmp_path):
    from runners.build import build_model, load_config
    from runners.distill import DistillModel

    run = seg_run(teacher={"config": "tiny_seg_teacher", "checkpoint": {"run": str(seg_teacher)}},
                  distill=cwd_terms())
    execute(run, tmp_path)
    checkpoint = torch.load(tmp_path / "iter_4.pth", weights_only=False)
    weights = checkpoint["state_dict"]
    assert not any(k.startswith("teacher.") for k in weights)
    adapter = [k for k in weights if k.startswith("adapters.cwd_feature__0.") and weights[k].is_floating_point()
               and not k.endswith(("running_mean", "running_var"))]
    student = [k for k in weights if k.startswith("student.") and not k.endswith(("running_mean", "running_var"))
               and weights[k].is_floating_point()]
    assert adapter, "the feature term's adapter is not saved with the student"
    # SGD keeps a momentum buffer for every parameter it stepped: the student's and the adapter's.
    stepped = checkpoint["optimizer"]["state"]
    assert len(stepped) == len(adapter) + len(student)

    teacher_weights = torch.load(seg_teacher / "model_final.pth", weights_only=True)
    teacher = build_model(load_config("tiny_seg_teacher"), "seg")
    teacher.load_state_dict(teacher_weights)
    inputs = torch.rand(2, 3, 64, 64)
    model = DistillModel(build_model(load_config("tiny_seg_student"), "seg"), teacher,
                         parse_run(run).distill, probe=lambda: (inputs, None))
    model.train()  # the student trains; the teacher stays in eval mode, without gradients
    assert model.student.training and not model.teacher.training
    assert not any(p.requires_grad for p in model.teacher.parameters())
    with torch.no_grad(), model.teacher_taps:
        model.teacher(inputs, mode="tensor")
    assert all(torch.equal(model.teacher.state_dict()[k], v) for k, v in teacher_weights.items())


@pytest.mark.slow
def test_mmengines_weight_initialisation_leaves_a_teacher_loaded_from_its_checkpoint_alone(seg_teacher):
    from runners.build import build_model, load_config, load_weights
    from runners.distill import DistillModel

    checkpoint = seg_teacher / "model_final.pth"
    teacher = build_model(load_config("tiny_seg_teacher"), "seg", init=False)  # as a run builds it
    load_weights(teacher, str(checkpoint), False, where="teacher.checkpoint")
    inputs = torch.rand(2, 3, 64, 64)
    model = DistillModel(build_model(load_config("tiny_seg_student"), "seg"), teacher,
                         parse_run(seg_run(teacher={"config": "tiny_seg_teacher", "checkpoint": str(checkpoint)},
                                           distill=cwd_terms())).distill, probe=lambda: (inputs, None))
    model.init_weights()  # what mmengine's Runner does to the whole model before training
    saved = torch.load(checkpoint, weights_only=True)
    assert all(torch.equal(model.teacher.state_dict()[k], v) for k, v in saved.items())


def test_the_teachers_forward_stops_once_its_tapped_outputs_are_captured():
    from runners.build import build_model, load_config
    from runners.taps import Taps

    teacher = build_model(load_config("tiny_seg_teacher"), "seg").eval()
    head_calls = []
    teacher.decode_head.conv_seg.register_forward_hook(lambda *args: head_calls.append(1))
    taps = Taps(teacher, ["decode_head.bottleneck"], "teacher", stop_when_done=True)
    with torch.no_grad():
        with taps:  # the first pass runs to the end: it learns how many calls to wait for
            teacher(torch.rand(1, 3, 64, 64), mode="tensor")
        assert len(head_calls) == 1
        with taps:
            teacher(torch.rand(1, 3, 64, 64), mode="tensor")
    assert len(head_calls) == 1 and len(taps.outputs["decode_head.bottleneck"]) == 1


@pytest.mark.slow
def test_a_run_killed_after_its_last_evaluation_records_that_evaluation_once(tmp_path):
    """Guarantee: A resumed run records each evaluation once, even when killed between its last evaluation and its
    result, or between a checkpoint and the evaluation that follows it (the resume makes that one)."""
    schedule = {"iterations": 4, "batch_size": 2, "checkpoint_interval": 2, "val_interval": 2}
    first = execute(seg_run(schedule=schedule), tmp_path)
    assert [m["iter"] for m in store.read_jsonl(tmp_path / "metrics.jsonl")] == [2, 4]
    # killed between the last evaluation and its result: no final.json, no model_final.pth yet
    (tmp_path / "final.json").unlink()
    (tmp_path / "model_final.pth").unlink()
    final = execute(seg_run(schedule=schedule), tmp_path)
    assert final["resumed_from"] == "iter_4.pth"
    assert [m["iter"] for m in store.read_jsonl(tmp_path / "metrics.jsonl")] == [2, 4]
    assert final["metrics"] == first["metrics"]


def test_a_resume_drops_evaluations_recorded_after_its_checkpoint(tmp_path):
    """Guarantee: A resume drops evaluations recorded after its checkpoint."""
    from runners.hooks import MetricsHook

    path = tmp_path / "metrics.jsonl"
    for record in ({"iter": 100, "val/mIoU": 1.0}, {"iter": 150, "val/mIoU": 2.0}, {"iter": 150, "val/mIoU": 2.0}):
        store.append_jsonl(path, record)
    hook = MetricsHook(path)
    hook.resume_from(100)
    assert store.read_jsonl(path) == [{"iter": 100, "val/mIoU": 1.0}] and hook.last == {"iter": 100, "val/mIoU": 1.0}
    hook.resume_from(50)
    assert store.read_jsonl(path) == [] and hook.last is None


def test_the_packaged_mmseg_pspnet_r18_config_builds_and_runs_a_forward_pass_on_cpu():
    from runners.build import build_model, load_config

    cfg = load_config("mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py",
                      {"model.pretrained": None, "model.backbone.init_cfg": None})
    model = build_model(cfg, "seg").eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64), mode="tensor")
    assert logits.shape == (1, 19, 64, 64) or logits.shape == (1, 19, 8, 8)
    assert "SyncBN" not in str(model)


def test_the_det_cls_conv_shared_by_fpn_levels_is_tapped_once_per_level():
    from runners.build import build_model, load_config
    from runners.taps import Taps

    model = build_model(load_config("tiny_det_student"), "det").eval()
    taps = Taps(model, ["bbox_head.gfl_cls"], "student")
    with torch.no_grad(), taps:
        model(torch.randn(1, 3, 64, 64), mode="tensor")
    assert [tuple(t.shape) for t in taps.outputs["bbox_head.gfl_cls"]] == [(1, 10, 8, 8), (1, 10, 4, 4), (1, 10, 2, 2)]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["seg", "det"])
def test_the_shipped_example_run_files_train_and_evaluate_at_reduced_size(task, tmp_path):
    def shipped(name):
        return json.loads((ROOT / "studies" / "runs" / f"tiny_{task}_{name}.json").read_text())

    def reduced(run):
        run["dataset"]["params"].update(num_train=8, num_val=2)
        run["schedule"].update(iterations=2, batch_size=2, checkpoint_interval=2, val_interval=None)
        return run

    execute(reduced(shipped("teacher")), tmp_path / "teacher")
    student = shipped("cwd")
    student["teacher"]["checkpoint"] = {"run": str(tmp_path / "teacher")}
    final = execute(reduced(student), tmp_path / "student")
    assert final["status"] == "complete" and final["cost"]["kd_share"] > 0
    for name in ("spec.json", "env.json", "metrics.jsonl", "final.json"):
        assert (tmp_path / "student" / name).is_file()


def test_a_distilled_student_starts_from_the_same_weights_as_its_baseline_with_that_seed(tmp_path):
    """Same seed, same initialisation: the distilled run builds its student before its teacher, whose
    construction draws random numbers too, so a cell and its baseline are a paired comparison."""
    from mmengine.runner import set_random_seed

    from runners.build import build_model, load_config, register_scope
    from runners.datasets import dataset_configs
    from runners.train import build_trained_model

    checkpoint = tmp_path / "teacher.pth"
    torch.save(build_model(load_config("tiny_seg_teacher"), "seg", init=False).state_dict(), checkpoint)
    distilled = parse_run(seg_run(seed=3, distill=cwd_terms(),
                                  teacher={"config": "tiny_seg_teacher", "checkpoint": str(checkpoint)}))
    baseline = parse_run(seg_run(seed=3))
    register_scope("seg")
    initial = {}
    for name, run in (("baseline", baseline), ("distilled", distilled)):
        set_random_seed(run.seed)  # as train_and_evaluate does before it builds the model
        initial[name] = build_trained_model(run, dataset_configs(run)).student.state_dict()
    assert initial["baseline"].keys() == initial["distilled"].keys()
    assert all(torch.equal(value, initial["distilled"][key]) for key, value in initial["baseline"].items())
    set_random_seed(4)
    other = build_trained_model(baseline, dataset_configs(baseline)).student.state_dict()
    assert not all(torch.equal(value, other[key]) for key, value in initial["baseline"].items())


def test_a_run_sets_and_records_every_numerics_setting_from_its_spec(tmp_path):
    """Guarantee: A run sets and records every numerics setting from its spec.

    Threads, deterministic algorithms, cuDNN's flags and the matmul precision come from the spec
    (``threads``, ``schedule.deterministic``) and are recorded in env.json, whatever the process had."""
    torch.set_num_threads(2)
    run = seg_run(threads=1, schedule={**SHORT, "deterministic": True})
    execute(run, tmp_path)
    env = store.read_json(tmp_path / "env.json")
    assert {k: env[k] for k in ("threads", "deterministic", "cudnn_deterministic", "cudnn_benchmark",
                                "matmul_precision", "cublas_workspace_config")} == {
        "threads": 1, "deterministic": True, "cudnn_deterministic": True, "cudnn_benchmark": False,
        "matmul_precision": "highest", "cublas_workspace_config": ":4096:8"}
    assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
    execute(seg_run(schedule=dict(SHORT)), tmp_path / "default")
    env = store.read_json(tmp_path / "default" / "env.json")
    assert (env["threads"], env["deterministic"]) == (1, False) and not torch.are_deterministic_algorithms_enabled()


def _dead_kd(seg_teacher, tmp_path, term: dict, **changes):
    """A distilled run whose only term is ``term``: it must stop as kd_inactive, with nothing averaged."""
    from tests.run_fixtures import teacher_of

    run = seg_run(teacher=teacher_of(seg_teacher), distill=[{"name": "dead", **term}],
                  schedule={"iterations": 6, "batch_size": 2, "checkpoint_interval": 6}, **changes)
    with pytest.raises(Exception, match="distill term 'dead' is inactive"):
        execute(run, tmp_path)
    assert store.run_state(tmp_path) == "kd_inactive" and not (tmp_path / "final.json").exists()
    return store.read_json(tmp_path / "error.json")


@pytest.mark.slow
def test_a_distill_term_whose_loss_is_exactly_zero_stops_the_run_as_kd_inactive(seg_teacher, tmp_path):
    """Guarantee: A distill term that does nothing over the first 5 training steps (its loss exactly 0 at each, not
    finite at one, or no gradient reaching the student's tapped map at any) stops the run as `kd_inactive`,
    naming the term and why; shown in status, collect and the report, never averaged."""
    error = _dead_kd(seg_teacher, tmp_path, {"method": "cwd", "params": {"tau": 4.0}, "weight": 0.0,
                                             "student_location": "decode_head.conv_seg"})
    assert error == {"status": "kd_inactive", "term": "dead",
                     "reason": "its loss is exactly 0 at each of the first 5 training steps (its weight is 0)",
                     "message": "distill term 'dead' is inactive: its loss is exactly 0 at each of the first 5 "
                                "training steps (its weight is 0)"}


@pytest.mark.slow
def test_a_distill_term_whose_gradient_never_reaches_the_student_stops_the_run_as_kd_inactive(seg_teacher, tmp_path):
    """Guarantee: A distill term whose gradient never reaches the student stops the run as kd inactive.

    The stem and first stage frozen (frozen_stages 1): CWD on backbone.layer1 has a loss (through
    its adapter) but no gradient reaches the student's map."""
    error = _dead_kd(seg_teacher, tmp_path, {"method": "cwd", "params": {"tau": 4.0}, "weight": 1.0,
                                             "student_location": "backbone.layer1", "adapter": True},
                     student={"config": "tiny_seg_student", "overrides": {"model.backbone.frozen_stages": 1}})
    assert error["reason"] == ("its gradient never reaches the student's backbone.layer1 over the first 5 training "
                               "steps (a frozen or detached student output?)")


@pytest.mark.slow
def test_a_distill_term_that_is_not_finite_at_its_first_step_stops_the_run_as_kd_inactive(seg_teacher, tmp_path):
    """Guarantee: A distill term that is not finite at its first step stops the run as kd inactive."""
    error = _dead_kd(seg_teacher, tmp_path, {"method": "cwd", "params": {"tau": 4.0}, "weight": 1e308,
                                             "student_location": "decode_head.conv_seg"})
    assert error["reason"] == "its loss is inf at training step 1 of this attempt"


@pytest.mark.slow
def test_a_working_distill_term_passes_the_watch_and_the_run_completes(seg_teacher, tmp_path):
    """Guarantee: A working distill term passes the watch and the run completes."""
    from tests.run_fixtures import teacher_of

    run = seg_run(teacher=teacher_of(seg_teacher), distill=cwd_terms(),
                  schedule={"iterations": 6, "batch_size": 2, "checkpoint_interval": 6})
    assert execute(run, tmp_path)["status"] == "complete"


@pytest.mark.parametrize("mode", ["eval", "bn_eval"])
def test_teacher_mode_eval_freezes_the_whole_teacher_and_bn_eval_only_its_batch_norms(seg_teacher, mode):
    """Guarantee: `teacher.mode: eval` puts the whole teacher in eval mode (the paper's code), `bn_eval` only its batch
    norms with dropout active (MMRazor's distiller); nothing of the teacher trains either way; part of the id
    only when `bn_eval`.

    eval: the paper's code (the whole teacher in eval mode); bn_eval: MMRazor's distiller (only
    batch norm in eval mode, dropout active). Either way nothing of the teacher trains."""
    from runners.datasets import dataset_configs
    from runners.train import build_trained_model
    from tests.run_fixtures import teacher_of

    run = parse_run(seg_run(teacher={**teacher_of(seg_teacher), "mode": mode}, distill=cwd_terms()))
    model = build_trained_model(run, dataset_configs(run)).train()
    modules = list(model.teacher.modules())
    norms = [m for m in modules if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    dropouts = [m for m in modules if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    assert norms and dropouts and not any(m.training for m in norms)
    assert all(m.training == (mode == "bn_eval") for m in dropouts)
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert model.student.training


def test_an_indexed_location_taps_one_element_of_a_tuple_output_and_a_star_every_element():
    """Guarantee: An indexed location taps one element of a tuple output and a star every element.

    MMRazor's data_idx: neck[i] is FPN level i (even one no module of its own produces), neck[*]
    every level in order, each as a call of its own; plain neck keeps the first tensor."""
    from runners.build import build_model, load_config
    from runners.taps import Taps

    model = build_model(load_config("tiny_det_student"), "det").eval()
    returned = []
    model.neck.register_forward_hook(lambda module, args, output: returned.append(output))
    taps = Taps(model, ["neck", "neck[1]", "neck[*]"], "student")
    with torch.no_grad(), taps:
        model(torch.randn(1, 3, 64, 64), mode="tensor")
    levels = returned[0]
    assert len(levels) == 3 and taps.outputs["neck"][0] is levels[0] and taps.outputs["neck[1]"] == [levels[1]]
    assert len(taps.outputs["neck[*]"]) == 3 and all(a is b for a, b in zip(taps.outputs["neck[*]"], levels))


def _tiny_det_distilled(tmp_path, term: dict) -> dict:
    """A tiny GFL student distilled for 4 iterations with ``term`` from an untrained tiny teacher
    (its weights saved as a checkpoint): the final record."""
    from runners.build import build_model, load_config
    from tests.run_fixtures import TINY_DATA

    checkpoint = tmp_path / "teacher.pth"
    torch.save(build_model(load_config("tiny_det_teacher"), "det", init=False).state_dict(), checkpoint)
    run = {"task": "det", "student": {"config": "tiny_det_student"}, "dataset": TINY_DATA,
           "teacher": {"config": "tiny_det_teacher", "checkpoint": str(checkpoint)}, "distill": [term],
           "schedule": {"iterations": 4, "batch_size": 2, "checkpoint_interval": 4}, "seed": 0}
    return execute(run, tmp_path / "run")


@pytest.mark.slow
def test_a_detector_distilled_on_every_fpn_level_through_neck_star_trains(tmp_path):
    """Guarantee: A detector distilled on every fpn level through neck star trains."""
    final = _tiny_det_distilled(tmp_path, {"method": "cwd", "params": {"tau": 1.0}, "weight": 10.0,
                                           "student_location": "neck[*]", "adapter": True})
    assert final["status"] == "complete" and final["cost"]["kd_share"] > 0
    logged = [json.loads(line) for line in next((tmp_path / "run").glob("*/vis_data/scalars.json")).read_text()
              .splitlines()]
    assert logged and all("loss_kd_cwd_neck" in entry for entry in logged if "loss" in entry)


@pytest.mark.slow
def test_a_run_records_its_recipe_card_in_final_json(seg_teacher, tmp_path):
    """Guarantee: Every run records its recipe card in `final.json` (global and per-process batch, processes and nodes,
    iterations and the epochs they equal on the images found, crop, pipeline, optimizer and schedule,
    evaluation, precision, teacher checkpoint and mode, how the reported number is chosen, the student's
    initialisation and the distillation terms)."""
    from tests.run_fixtures import teacher_of

    run = seg_run(teacher={**teacher_of(seg_teacher), "mode": "bn_eval"}, distill=cwd_terms(),
                  schedule={"iterations": 6, "batch_size": 2, "lr": 0.02, "checkpoint_interval": 6})
    card = execute(run, tmp_path)["recipe"]
    assert card == {
        "global_batch": 2, "per_process_batch": 2, "processes": 1, "nodes": 1, "device": "cpu",
        "iterations": 6, "train_images": 12, "epochs": 1.0,   # 6 iterations x 2 images / 12 images
        "crop": [64, 64], "pipeline": "default", "optimizer": "sgd", "lr": 0.02, "momentum": 0.9,
        "weight_decay": 0.0005, "lr_schedule": "poly", "min_lr": 0.0001, "warmup_iters": 0,
        "evaluation": "single scale, no flip", "precision": "fp32",
        "teacher_checkpoint": f"teacher run {seg_teacher.name}", "teacher_mode": "bn_eval",
        "val_interval": 6, "select": "last", "student_init": "random",   # the reported number: the last of one at 6
        "terms": "cwd@decode_head.conv_seg x3; cwd@decode_head.bottleneck x50"}


@pytest.mark.slow
def test_a_detector_distilled_with_fbkd_on_an_fpn_level_trains_its_connectors_with_the_student(tmp_path):
    """Guarantee: A detector distilled with fbkd on an fpn level trains its connectors with the student."""
    final = _tiny_det_distilled(tmp_path, {"name": "fbkd_p0", "method": "fbkd",
                                           "student_location": "neck.fpn_convs.0.conv",
                                           "params": {"sub_sample": True, "reduction": 4}})
    assert final["status"] == "complete"
    checkpoint = torch.load(next((tmp_path / "run").glob("iter_4.pth")), weights_only=False)["state_dict"]
    assert any(key.startswith("kd_losses.fbkd_p0.student_adapt.non_local") for key in checkpoint)
    assert any(key.startswith("kd_losses.fbkd_p0.teacher_non_local") for key in checkpoint)


def test_seg_and_det_models_built_in_turn_in_one_process_each_build_in_their_own_scope():
    """mmengine makes only a newly created DefaultScope the current one: every switch of task in one
    process (a notebook, a test worker) must create one, or a seg model would be looked up in mmdet's
    registry after seg, det, seg, det."""
    from mmengine.registry import DefaultScope

    from runners.build import build_model, load_config, register_scope

    for task in ("seg", "det", "seg", "det", "seg", "det"):
        register_scope(task)
        assert DefaultScope.get_current_instance().scope_name == {"seg": "mmseg", "det": "mmdet"}[task]
    model = build_model(load_config("tiny_seg_student"), "seg", init=False)
    assert type(model).__name__ == "EncoderDecoder"
