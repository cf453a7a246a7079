"""Three recipe options MMRazor's configs need, usable in any run: ``schedule.grad_clip`` (mmengine's
clip_grad), ``teacher.forward: neck`` (the teacher runs backbone and neck only, MMRazor's
FpnTeacherDistill) and ``student.init_from_teacher`` (parts of the student start from the
teacher's weights, MMRazor's MGD). Runs that set none of them keep their ids."""

import pytest
import torch

from kdbench.errors import UserError
from kdbench.ids import run_id
from kdbench.spec import parse_run
from tests.test_runspec import PINNED_ID, minimal_cwd_run

DET_TERM = {"method": "cwd", "params": {"tau": 1.0}, "weight": 10.0, "student_location": "neck[0]"}


def det_run(**changes) -> dict:
    run = {"task": "det", "student": {"config": "tiny_det_student"}, "dataset": {"name": "fashion_scenes"},
           "teacher": {"config": "tiny_det_student", "checkpoint": "teacher.pth"}, "distill": [DET_TERM]}
    run.update(changes)
    return run


def test_runs_that_set_none_of_the_options_keep_their_pinned_id():
    run = parse_run(minimal_cwd_run())
    assert run_id(run) == PINNED_ID
    assert "grad_clip" not in run.to_dict()["schedule"] and "init_from_teacher" not in run.to_dict()["student"]


def test_grad_clip_is_a_max_norm_that_reaches_mmengines_optimizer_wrapper_and_changes_the_id():
    from runners.train import optim_config

    clipped = parse_run(minimal_cwd_run(schedule={"grad_clip": 35}))
    assert optim_config(clipped.schedule)[0]["clip_grad"] == {"max_norm": 35, "norm_type": 2}
    assert optim_config(parse_run(minimal_cwd_run()).schedule)[0]["clip_grad"] is None
    assert run_id(clipped) != PINNED_ID


@pytest.mark.parametrize("value", [0, -1.5, "35", True])
def test_a_grad_clip_that_is_not_a_positive_number_is_one_line(value):
    with pytest.raises(UserError, match=r"schedule\.grad_clip: must be a (finite )?number") as error:
        parse_run(minimal_cwd_run(schedule={"grad_clip": value}), "run.json")
    assert "\n" not in str(error.value)


def test_teacher_forward_neck_changes_no_run_id_and_refuses_a_location_past_the_neck():
    full, neck = parse_run(det_run()), parse_run(det_run(teacher={"config": "tiny_det_student",
                                                                  "checkpoint": "teacher.pth", "forward": "neck"}))
    assert neck.teacher.forward == "neck" and run_id(neck) == run_id(full)
    head = det_run(teacher={"config": "tiny_det_student", "checkpoint": "teacher.pth", "forward": "neck"},
                   distill=[{**DET_TERM, "student_location": "bbox_head.gfl_cls"}])
    with pytest.raises(UserError, match=r"distill\[0\]\.teacher_location: 'bbox_head\.gfl_cls' is outside the "
                                        r"backbone and neck"):
        parse_run(head)


def test_init_from_teacher_is_part_of_the_id_and_the_student_baseline_drops_it(tmp_path):
    from kdbench.stages import load_study
    from tests.launch_helpers import dump_yaml

    started = parse_run(det_run(student={"config": "tiny_det_student", "init_from_teacher": ["neck", "bbox_head"]}))
    assert started.student.init_from_teacher == ("neck", "bbox_head")
    assert run_id(started) != run_id(parse_run(det_run()))
    (tmp_path / "teacher.pth").write_bytes(b"")
    study = tmp_path / "study.yaml"
    base = det_run(student={"config": "tiny_det_student", "init_from_teacher": ["neck"]},
                   teacher={"config": "tiny_det_student", "checkpoint": str(tmp_path / "teacher.pth")})
    study.write_text(dump_yaml({"name": "s", "base": {k: v for k, v in base.items() if k != "distill"},
                                "methods": {"cwd_fpn": [DET_TERM]}, "seeds": [0]}))
    runs = {r.kind: r.run for r in load_study(study, tmp_path / "results").runs}
    assert runs["cell"].student.init_from_teacher == ("neck",)
    assert runs["student_baseline"].student.init_from_teacher == ()


def test_copy_parts_starts_the_students_parts_from_the_teachers_and_refuses_parts_that_do_not_fit():
    from runners.build import build_model, copy_parts, load_config

    student = build_model(load_config("tiny_det_student"), "det")
    teacher = build_model(load_config("tiny_det_student"), "det")
    copy_parts(student, teacher, ("neck", "bbox_head"), "student.init_from_teacher")
    for part in ("neck", "bbox_head"):
        mine, theirs = getattr(student, part).state_dict(), getattr(teacher, part).state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert not torch.equal(student.backbone.conv1.weight, teacher.backbone.conv1.weight)
    other = build_model(load_config("tiny_det_teacher"), "det")  # a wider neck
    with pytest.raises(UserError, match=r"student\.init_from_teacher: the teacher's neck does not fit the student's"):
        copy_parts(student, other, ("neck",), "student.init_from_teacher")
    with pytest.raises(UserError, match=r"'decoder' is not a part of both"):
        copy_parts(student, teacher, ("decoder",), "student.init_from_teacher")


@pytest.mark.parametrize("forward", ["full", "neck"])
def test_a_neck_forward_teacher_never_runs_its_head(forward):
    """The full forward runs once to its end (the taps learn how many calls to wait for), then stops
    at the neck; ``forward: neck`` never reaches the head, as MMRazor's FpnTeacherDistill."""
    from kdbench.spec import Adapter, Term
    from runners.build import build_model, load_config
    from runners.distill import DistillModel

    student, teacher = (build_model(load_config(name), "det") for name in ("tiny_det_student", "tiny_det_teacher"))
    calls = []
    teacher.bbox_head.gfl_cls.register_forward_hook(lambda *args: calls.append(1))  # once per level
    term = Term("cwd", "cwd", {"tau": 1.0}, 1.0, ("neck[0]",), ("neck[0]",), Adapter())
    model = DistillModel(student, teacher, (term,), probe=lambda: (torch.rand(1, 3, 64, 64), None),
                         teacher_forward=forward)
    with torch.no_grad(), model.teacher_taps:
        model._run_teacher(torch.rand(1, 3, 64, 64), None)
    assert bool(calls) == (forward == "full") and model.teacher_taps.outputs["neck[0]"][0].shape[1] == 64


@pytest.mark.slow
def test_a_detector_run_with_all_three_options_trains_and_records_them_in_its_recipe_card(tmp_path):
    from runners.build import build_model, load_config
    from tests.run_fixtures import TINY_DATA, execute

    checkpoint = tmp_path / "teacher.pth"
    torch.save(build_model(load_config("tiny_det_student"), "det").state_dict(), checkpoint)
    run = det_run(dataset=TINY_DATA, seed=0,
                  student={"config": "tiny_det_student", "init_from_teacher": ["neck", "bbox_head"]},
                  teacher={"config": "tiny_det_student", "checkpoint": str(checkpoint), "forward": "neck"},
                  schedule={"iterations": 4, "batch_size": 2, "checkpoint_interval": 4, "grad_clip": 1.0})
    final = execute(run, tmp_path / "run")
    assert final["status"] == "complete"
    logged = next((tmp_path / "run").glob("*/vis_data/scalars.json")).read_text()
    assert '"grad_norm"' in logged              # mmengine's clip_grad logs the norm it clipped
    card = final["recipe"]
    assert (card["grad_clip"], card["teacher_forward"], card["init_from_teacher"]) == (1.0, "neck",
                                                                                       ["neck", "bbox_head"])
