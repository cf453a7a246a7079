"""A teacher given as ``{run: DIR}``: the weights of that complete teacher run, or one error that
says how to make the run. Used by the preflight (before anything is submitted) and by the run."""

from __future__ import annotations

import os
from pathlib import Path

from kdbench import store
from kdbench.errors import UserError
from kdbench.vocab import State

ROOT = Path(__file__).resolve().parents[1]


def teacher_run_hint(run_dir) -> str:
    """How to produce a missing teacher run: the shipped run file of that name when there is one."""
    run_dir = Path(run_dir)
    shipped = ROOT / "studies" / "runs" / f"{run_dir.name}.json"
    where = "" if run_dir.is_absolute() else f" (relative to {Path.cwd()})"
    if shipped.is_file():
        shown = os.path.relpath(shipped)
        return f"run it first{where}: kdbench run {shipped if shown.startswith('..') else shown}"
    return f"run it first{where} (kdbench run on its run file)"


def teacher_run_checkpoint(run_dir, key: str) -> str:
    """The weights file of the complete teacher run in ``run_dir`` (one read of its result);
    ``key`` names the field in the error, e.g. ``file: base.teacher.checkpoint``."""
    files = store.read_run(run_dir)
    checkpoint = files.final.get("checkpoint") if files.state == State.COMPLETE else None
    if not isinstance(checkpoint, str):
        raise UserError(f"{key}.run: {str(run_dir)!r} holds no complete teacher run; "
                        f"{teacher_run_hint(run_dir)}, or give the checkpoint's path or URL")
    return str(Path(run_dir) / checkpoint)
