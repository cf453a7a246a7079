"""Tiny studies for the launcher tests, written into a temporary directory, and ``run_cli``: the
command line run in-process, its output captured."""

import contextlib
import io
from pathlib import Path

import yaml

from kdbench.cli import main

TINY_BASE = {
    "task": "seg",
    "teacher": {"config": "tiny_seg_teacher"},
    "student": {"config": "tiny_seg_student"},
    "dataset": {"name": "fashion_scenes", "params": {"num_train": 12, "num_val": 4, "size": 64, "seed": 1}},
    "schedule": {"iterations": 4, "batch_size": 2, "checkpoint_interval": 2},
}
CWD = {"method": "cwd", "params": {"tau": 4.0}, "weight": 3.0, "student_location": "decode_head.conv_seg"}


def write_study(directory: Path, name: str, methods=None, seeds=(0,), **extra) -> Path:
    spec = {"name": name, "base": TINY_BASE, "methods": {"cwd_logits": CWD} if methods is None else methods,
            "seeds": list(seeds), "resources": {"gpus": 0, "cpus": 1, "mem_gb": 2, "time_min": 30}, **extra}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_cli(*args) -> tuple[int, str, str]:
    """``kdbench <args>`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()
