"""A property of the results store: whatever damage other accounts or a failing disk do to a run's
result files (truncation, fields of the wrong type, NaN, links out of the root or to a device,
FIFOs, huge files, deep nesting), status, collect and report never raise, and every run whose
final.json or error.json was damaged is counted corrupt, never averaged.

The damage is drawn by hypothesis when it is installed, else by a seeded random loop."""

import json
import math
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest

from kdbench import store
from kdbench.safeio import RESULT_CAP

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # the seeded loop below draws the same kinds of damage
    given = None

EXAMPLES = 30
WRONG = {  # a value kdbench reads, with a type or a content it never writes
    "metrics": [[1.0], "40.0", 5, None, {}, {"val/mIoU": "40"}, {"val/mIoU": True}, {"status": 1.0},
                {"val/mIoU": [40.0]}],
    "cost": [[0.1], "fast", 3, {"seconds_per_iter": [0.1]}, {"seconds_per_iter": {"a": 1}}],
    "recipe": [["a", "list"], "crop", 7, {"crop": {"h": 1}}, {"lr": [[0.1]]}],
    "data": [[1], "cityscapes", 3.0],
    "iterations": ["ten", [10], {"n": 10}, True],
    "teacher_check": [["passed"], "yes", {"passed": [True]}],
    "terms": ["cwd", {"name": "x"}, [1, 2]],
    "status": ["done", None, 1, "failed"],
}
KINDS = ("truncate", "wrong_type", "nan", "link_out", "fifo", "device", "huge", "not_an_object", "deep", "binary")


def damage(path: Path, kind: str, rng: random.Random, outside: Path) -> None:
    """One kind of damage to a result file (final.json or error.json)."""
    text = path.read_text()
    if kind == "truncate":
        path.write_text(text[:rng.randrange(1, len(text.rstrip()))])
    elif kind == "wrong_type" and path.name == store.FINAL:
        field = rng.choice(sorted(WRONG))
        path.write_text(json.dumps({**json.loads(text), field: rng.choice(WRONG[field])}))
    elif kind in ("wrong_type", "nan") and path.name == store.ERROR:
        wrong = [status for status in WRONG["status"] if status not in store.ERROR_STATES]
        path.write_text(json.dumps({**json.loads(text), "status": rng.choice(wrong)}))
    elif kind == "nan":
        data = json.loads(text)
        data["metrics"][rng.choice(sorted(data["metrics"]))] = rng.choice([math.nan, math.inf, -math.inf])
        path.write_text(json.dumps(data))   # the bare NaN / Infinity tokens a buggy writer leaves
    elif kind in ("link_out", "fifo", "device"):
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to(outside if kind == "link_out" else rng.choice(["/dev/zero", "/dev/null", "/dev/urandom"]))
    elif kind == "huge":   # valid JSON, but over the cap
        path.write_text(text.rstrip() + " " * (RESULT_CAP + rng.randrange(1, 4096)))
    elif kind == "not_an_object":
        path.write_text(json.dumps(rng.choice([[1, 2], 40.0, "complete", None, True])))
    elif kind == "deep":
        depth = rng.choice([5_000, 200_000])
        path.write_text("[" * depth + "]" * depth)
    else:  # binary
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2048))))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    from tests.results_fixtures import make_store

    folder = tmp_path_factory.mktemp("pristine")
    study, results = make_store(folder)
    return folder, study.name


def check_one(pristine, seed: int, render: bool) -> None:
    from analysis.collect import collect
    from kdbench.stages import load_study
    from kdbench.states import format_status
    from runners.launch.jobs import status

    rng = random.Random(seed)
    source, name = pristine
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "copy"
        shutil.copytree(source, folder, symlinks=True)
        outside = Path(scratch) / "outside.json"
        outside.write_text(json.dumps({"status": "complete", "metrics": {"val/mIoU": 99.0}}))
        root = folder / "results" / name
        files = sorted(p for p in root.glob("*/*.json") if p.name in (store.FINAL, store.ERROR))
        damaged = {p.parent.name: rng.choice(KINDS) for p in rng.sample(files, rng.randrange(1, len(files) + 1))}
        for path in files:
            if path.parent.name in damaged:
                damage(path, damaged[path.parent.name], rng, outside)
        for run_dir in rng.sample(sorted(root.iterdir()), 3):   # beside them, damaged job and metrics files
            (run_dir / store.JOB).write_text(json.dumps(rng.choice([
                {"executor": "local", "job_id": "not a pid"}, {"executor": "local", "job_id": 12},
                {"executor": "slurm", "job_id": "1; rm -rf /"}, ["local", "1"]])))
            (run_dir / store.METRICS).write_text(rng.choice(['{"iter": "x", "val/mIoU": []}\n', "[1]\nNaN\n{"]))
        study = load_study(folder / "fixture.yaml", folder / "results")
        rows = {row.run_id: row for row in status(study)}
        format_status(study, list(rows.values()))
        frame = collect(study).set_index("run_id")
        for run_id, kind in damaged.items():
            assert rows[run_id].state == "corrupt" and rows[run_id].reason, (kind, rows[run_id])
            assert frame.loc[run_id, "status"] == "corrupt" and math.isnan(frame.loc[run_id, "val/mIoU"]), kind
        if render:
            from reports.render import render_report

            render_report(study, frame.reset_index(), formats=("md",))


if given is not None:
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
              derandomize=True)
    @given(seed=st.integers(0, 2**32 - 1))
    def test_damaged_result_files_never_crash_status_collect_or_report_and_are_counted_corrupt(pristine, seed):
        check_one(pristine, seed, render=seed % 6 == 0)
else:
    @pytest.mark.parametrize("seed", range(EXAMPLES))
    def test_damaged_result_files_never_crash_status_collect_or_report_and_are_counted_corrupt(pristine, seed):
        check_one(pristine, seed, render=seed % 6 == 0)


def test_the_report_renders_over_a_store_where_every_result_file_is_damaged(pristine):
    """The extreme: nothing left to average, every kind of damage at once."""
    check_one(pristine, 7, render=True)
