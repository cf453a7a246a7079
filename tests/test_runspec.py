"""Run files: validation with file and key path, defaults, a typed run, and a stable run identity."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kdbench.errors import UserError
from kdbench.ids import run_id
from kdbench.spec import Adapter, load_run, parse_run

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "studies" / "runs"


def minimal_cwd_run(**changes):
    run = {
        "task": "seg",
        "teacher": {"config": "tiny_seg_teacher", "checkpoint": "teacher.pth"},
        "student": {"config": "tiny_seg_student"},
        "distill": [{"method": "cwd", "params": {"tau": 4}, "weight": 3,
                     "student_location": "decode_head.conv_seg"}],
        "dataset": {"name": "fashion_scenes"},
        "seed": 0,
    }
    run.update(changes)
    return run


@pytest.mark.parametrize("path", sorted(RUNS.glob("*.json")), ids=lambda p: p.name)
def test_every_shipped_run_file_validates(path):
    run = load_run(path)
    assert run.task in ("seg", "det") and run.schedule.iterations > 0


def test_defaults_are_filled_in_and_the_teacher_location_defaults_to_the_student_one():
    run = parse_run(minimal_cwd_run())
    term = run.distill[0]
    assert term.teacher_location == ("decode_head.conv_seg",)
    assert term.name == "cwd_conv_seg" and term.adapter is None and term.resize is False
    assert run.schedule.batch_size == 8 and run.role == "student"
    # ... and the resolved dict (spec.json) holds them too, as plain JSON data
    assert run.to_dict()["distill"][0]["teacher_location"] == ["decode_head.conv_seg"]


def test_the_typed_run_and_its_dict_round_trip():
    """Guarantee: A typed run round-trips through its dict (`spec.json`) unchanged, with the same id."""
    data = minimal_cwd_run(schedule={"crop": 32}, distill=[
        {"method": "cwd", "student_location": "a", "adapter": {"norm": True}, "resize": True}])
    run = parse_run(data)
    assert run.schedule.crop == (32, 32) and run.distill[0].adapter == Adapter(norm=True, act=False)
    again = parse_run(run.to_dict())
    assert again == run and run_id(again) == run_id(run)


def test_run_id_is_pinned_so_an_accidental_identity_change_is_caught():
    """Guarantee: Run ids are stable across processes and machines."""
    # If this fails, every existing result directory would be orphaned: change it only on purpose.
    assert run_id(parse_run(minimal_cwd_run())) == PINNED_ID


def test_run_id_ignores_name_device_output_and_dataset_mount_but_not_the_numbers():
    base = run_id(parse_run(minimal_cwd_run()))
    same = minimal_cwd_run(name="other", device="cpu", out="/tmp/x",
                           dataset={"name": "fashion_scenes", "root": "/elsewhere"})
    assert run_id(parse_run(same)) == base
    assert run_id(parse_run(minimal_cwd_run(seed=1))) != base
    changed = minimal_cwd_run()
    changed["distill"][0]["params"]["tau"] = 4.0  # the same number written as a float
    assert run_id(parse_run(changed)) == base
    changed["distill"][0]["params"]["tau"] = 2
    assert run_id(parse_run(changed)) != base


def test_run_id_is_identical_in_another_process():
    code = ("import json,sys; from kdbench.spec import parse_run; from kdbench.ids import run_id; "
            "print(run_id(parse_run(json.loads(sys.argv[1]))))")
    other = subprocess.run([sys.executable, "-c", code, json.dumps(minimal_cwd_run())], cwd=ROOT,
                           capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"})
    assert other.stdout.strip() == run_id(parse_run(minimal_cwd_run()))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"task": "cls"}, r"<run>: task: 'cls' is not valid; valid: seg, det"),
        ({"sed": 1}, r"sed: unknown key \(did you mean 'seed'\?\)"),
        ({"seed": "0"}, r"seed: must be an integer"),
        ({"distill": [{"method": "cdw", "student_location": "x"}]},
         r"distill\[0\]\.method: 'cdw' is not valid \(did you mean 'cwd'\?\); valid: .*cwd"),
        ({"distill": [{"method": "cwd", "params": {"temp": 4}, "student_location": "x"}]},
         r"distill\[0\]\.params\.temp: unknown key.*valid: tau"),
        ({"distill": [{"method": "cwd", "params": {"tau": -1}, "student_location": "x"}]},
         r"distill\[0\]\.params: .*tau"),
        ({"distill": [{"method": "cwd", "student_location": ["a", "b"], "teacher_location": ["a"]}]},
         r"distill\[0\]\.teacher_location: must list as many"),
        ({"teacher": {"config": "tiny_seg_teacher"}}, r"teacher\.checkpoint: a distillation run needs"),
        ({"schedule": {"iterations": -5}}, r"schedule\.iterations: must be >= 0"),
        ({"schedule": {"crop": [64]}}, r"schedule\.crop: must have at least 2"),
        ({"dataset": {"name": "cityscapes"}}, r"dataset\.root: cityscapes needs the path"),
    ],
)
def test_bad_run_fields_are_rejected_with_their_key_path(changes, message):
    with pytest.raises(UserError, match=message):
        parse_run(minimal_cwd_run(**changes))


def test_a_run_file_that_is_not_json_names_the_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"task": "seg",\n "seed": }')
    with pytest.raises(UserError, match=r"bad\.json: not valid JSON \(line 2"):
        load_run(bad)


PINNED_ID = "733c7f11afa2"


def test_deterministic_is_part_of_the_id_only_when_on_and_threads_never_are():
    """Guarantee: Deterministic is part of the id only when on and threads never are."""
    base = run_id(parse_run(minimal_cwd_run()))
    assert run_id(parse_run(minimal_cwd_run(schedule={"deterministic": False}))) == base  # the default
    assert run_id(parse_run(minimal_cwd_run(schedule={"deterministic": True}))) != base
    threaded = parse_run(minimal_cwd_run(threads=8))
    assert threaded.threads == 8 and threaded.to_dict()["threads"] == 8 and run_id(threaded) == base
    assert "threads" not in parse_run(minimal_cwd_run()).to_dict()  # spec.json of older runs unchanged
    with pytest.raises(UserError, match=r"threads: must be >= 1"):
        parse_run(minimal_cwd_run(threads=0))
    with pytest.raises(UserError, match=r"schedule\.deterministic: must be true or false"):
        parse_run(minimal_cwd_run(schedule={"deterministic": "yes"}))


def test_teacher_mode_is_part_of_the_id_only_when_it_is_bn_eval_and_is_checked():
    """Guarantee: Teacher mode is part of the id only when it is bn eval and is checked."""
    teacher = {"config": "tiny_seg_teacher", "checkpoint": "teacher.pth"}
    base = run_id(parse_run(minimal_cwd_run()))
    assert run_id(parse_run(minimal_cwd_run(teacher={**teacher, "mode": "eval"}))) == base
    bn_eval = parse_run(minimal_cwd_run(teacher={**teacher, "mode": "bn_eval"}))
    assert run_id(bn_eval) != base and bn_eval.to_dict()["teacher"]["mode"] == "bn_eval"
    with pytest.raises(UserError, match=r"teacher\.mode: 'train' is not valid; valid: eval, bn_eval"):
        parse_run(minimal_cwd_run(teacher={**teacher, "mode": "train"}))
