"""The grid-scale benchmark (kdbench bench --suite grid) and the light imports it relies on.

These check behaviour at tiny sizes (what the timed operations find and write), never timings.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from benchmarks import grid

REPO = Path(__file__).resolve().parents[1]
OPERATIONS = ("plan", "status", "collect", "report", "plan_model_check")
KEYS = {"suite", "operation", "runs", "seconds", "target_s", "meets_target", "growth_ratio", "runs_ratio",
        "no_worse_than_linear"}


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    counts: dict = {}
    rows = grid.run(sizes=(50, 200), repeats=1, cli=False, root=root, counts=counts)
    return rows, counts, root


@pytest.mark.slow  # runs the grid suite (tiny_grid)
def test_each_operation_has_a_complete_row_per_size_with_its_growth(tiny_grid):
    rows, counts, _ = tiny_grid
    assert [(r["operation"], r["runs"]) for r in rows] == [
        (operation, counts[size]["planned"]) for size in (50, 200) for operation in OPERATIONS]
    for row in rows:
        assert set(row) == KEYS and row["suite"] == "grid"
        assert row["seconds"] > 0
        assert row["target_s"] == grid.TARGETS[row["operation"]]
        assert row["meets_target"] == (None if row["target_s"] is None else row["seconds"] <= row["target_s"])
        assert row["runs_ratio"] == round(counts[200]["planned"] / counts[50]["planned"], 3)
        small, large = (next(r for r in rows if (r["operation"], r["runs"]) == (row["operation"], counts[s]["planned"]))
                        for s in (50, 200))
        assert row["growth_ratio"] == pytest.approx(large["seconds"] / small["seconds"], rel=1e-2, abs=1e-3)
        assert row["no_worse_than_linear"] == (row["growth_ratio"] <= row["runs_ratio"] * grid.NOISE)
    table = grid.format_rows(rows)
    assert len(table.splitlines()) == len(rows) + 2 and all(op in table for op in OPERATIONS)


@pytest.mark.slow  # runs the grid suite (tiny_grid)
def test_the_generated_study_has_about_the_asked_number_of_runs_in_every_state(tiny_grid):
    _, counts, _ = tiny_grid
    for size in (50, 200):
        written = Counter(counts[size]["written"].values())
        assert size <= counts[size]["planned"] <= size + grid.SEEDS + 1  # + student baselines + teacher
        assert set(written) == {"complete", "failed", "diverged", "interrupted", "corrupt", "missing"}


@pytest.mark.slow  # runs the grid suite (tiny_grid)
def test_status_collect_and_plan_find_every_generated_run_in_the_state_it_was_written(tiny_grid):
    _, counts, _ = tiny_grid
    for size in (50, 200):
        written = counts[size]["written"]
        assert {r.run_id: r.state for r in counts[size]["status"]} == written
        frame = counts[size]["collect"]
        assert len(frame) == len(written) and dict(zip(frame["run_id"], frame["status"])) == written
        complete = frame[frame["status"] == "complete"]
        assert complete["val/mIoU"].map(math.isfinite).all()
        assert frame.loc[frame["status"] != "complete", "val/mIoU"].isna().all()
        plan = {r["run_id"]: r["status"] for r in counts[size]["plan"]}
        assert plan == {k: "started" if v == "interrupted" else v for k, v in written.items()}


@pytest.mark.slow  # runs the grid suite (tiny_grid)
def test_the_report_is_written_in_both_formats_and_bounds_its_bar_chart(tiny_grid):
    _, counts, root = tiny_grid
    written = counts[200]["report"]
    assert set(written) == {"html", "md", "metafile", "tsv"} and all(Path(p).is_file() for p in written.values())
    readme = Path(written["md"]).read_text()
    cells = 2 * 4 * 5  # 200 runs: 2 methods x 4 taus x 5 weights, 5 seeds
    assert f"The 30 cells with the highest mean of {cells} are shown" in readme
    assert (Path(written["md"]).parent / "methods.png").is_file()
    assert (root / "grid200" / "results" / "grid200" / "runs.parquet").is_file()


def test_the_cli_start_is_timed_in_a_fresh_interpreter():
    assert 0 < grid._cli_seconds(["--help"], repeats=1) < 60


def _imported(code: str, env: dict | None = None) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\nprint(json.dumps(sorted(m for m in "
                          "('torch', 'mmseg', 'mmdet', 'mmengine', 'mmcv') if m in sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd=REPO, env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_verbs_that_read_specs_and_results_imports_no_torch_mmseg_or_mmdet():
    """Guarantee: The verbs that read specs and results (`plan`, `status`, `collect`, `report`) import no torch, mmseg
    or mmdet; a study is validated and expanded without them."""
    modules = ("kdbench.cli", "kdbench.spec", "kdbench.study", "kdbench.expand", "kdbench.plan", "kdbench.states",
               "kdbench.losses", "runners.launch.jobs", "runners.launch.launcher", "runners.preflight")
    assert _imported("import " + ", ".join(modules)) == []


def test_a_study_is_validated_and_expanded_without_importing_torch(tmp_path):
    """Guarantee: A study is validated and expanded without importing torch."""
    study = tmp_path / "s.yaml"
    study.write_text(grid.study_text("s", 30))
    code = f"from kdbench.stages import load_study\nassert len(load_study({str(study)!r}).runs) > 30"
    assert _imported(code, {"KDBENCH_CACHE": str(tmp_path / "cache")}) == []
    assert not (tmp_path / "cache").exists()  # and nothing is kept for it: every verb expands afresh


@pytest.mark.slow  # builds and probes the models
def test_the_model_check_is_answered_from_the_cache_without_importing_torch(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(grid.study_text("s", 30))
    code = (f"from kdbench.stages import load_study\nfrom runners.preflight import check_study\n"
            f"check_study(load_study({str(study)!r}))")
    env = {"KDBENCH_CACHE": str(tmp_path / "cache")}
    assert "torch" in _imported(code, env)  # the first time the models are built and probed, then kept
    assert _imported(code, env) == []


def test_a_study_expanded_twice_is_the_same_study_and_its_teachers_live_under_the_results_root(tmp_path):
    from kdbench.expand import expand
    from kdbench.study import load_spec

    path = tmp_path / "s.yaml"
    path.write_text(grid.study_text("s", 60))
    spec = load_spec(path)
    first, again = expand(spec, tmp_path / "results"), expand(spec, tmp_path / "results")
    assert [dataclasses.asdict(p) for p in again] == [dataclasses.asdict(p) for p in first]
    elsewhere = expand(spec, tmp_path / "other")  # teacher checkpoints name the results root, ids do not
    cell = next(p for p in elsewhere if p.kind == "cell")
    assert cell.run.teacher.checkpoint.run.startswith(str(tmp_path / "other"))
    assert [p.run_id for p in elsewhere] == [p.run_id for p in first]
