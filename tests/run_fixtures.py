"""Tiny runs for the runner and resume tests: a segmentation student on generated fashion scenes and
the CWD terms (one with an adapter). The trained tiny teacher is conftest.py's ``seg_teacher``."""

from pathlib import Path

from kdbench.spec import parse_run

ROOT = Path(__file__).resolve().parents[1]
TINY_DATA = {"name": "fashion_scenes", "params": {"num_train": 12, "num_val": 4, "size": 64, "seed": 1}}
SHORT = {"iterations": 4, "batch_size": 2, "checkpoint_interval": 2}


def execute(run, out):
    """A run as every path runs it: runners.run.run_one, the preflight included."""
    from runners.run import run_one

    return run_one(parse_run(run), out)


def seg_run(**changes):
    run = {"task": "seg", "student": {"config": "tiny_seg_student"}, "dataset": TINY_DATA,
           "schedule": dict(SHORT), "seed": 0}
    run.update(changes)
    return run


def teacher_of(teacher_dir) -> dict:
    """The ``teacher`` of a student distilled from the complete teacher run in ``teacher_dir``."""
    return {"config": "tiny_seg_teacher", "checkpoint": {"run": str(teacher_dir)}}


def cwd_terms():
    return [
        {"name": "cwd_logits", "method": "cwd", "params": {"tau": 4.0}, "weight": 3.0,
         "student_location": "decode_head.conv_seg"},
        {"name": "cwd_feature", "method": "cwd", "params": {"tau": 4.0}, "weight": 50.0,
         "student_location": "decode_head.bottleneck", "adapter": {"norm": True, "act": True}},
    ]
