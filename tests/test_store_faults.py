"""Damaged result directories are reported, never counted, and never crash status or collect;
result files are written whole or not at all."""

import json
import os

import pytest

from kdbench import store
from kdbench.stages import load_study
from runners.launch.jobs import status
from tests.launch_helpers import write_study


def complete(run_dir, miou):
    run_dir.mkdir(parents=True, exist_ok=True)
    store.write_json_atomic(run_dir / "spec.json", {})
    store.write_json_atomic(run_dir / "final.json", {"status": "complete", "metrics": {"val/mIoU": miou},
                                                     "cost": {"seconds_per_iter": 0.1}})


@pytest.fixture
def damaged_store(tmp_path):
    study = load_study(write_study(tmp_path, "faults", seeds=(0, 1, 2)), tmp_path / "r")
    root = tmp_path / "r" / "faults"
    cells = [p for p in study.runs if p.kind == "cell"]
    complete(root / cells[0].run_id, 40.0)
    (root / cells[0].run_id / "metrics.jsonl").write_text('{"iter": 4, "val/mIoU": 40.0}\n{"iter": 8, "val/mI')
    complete(root / cells[1].run_id, 99.0)
    (root / cells[1].run_id / "final.json").write_text('{"status": "complete", "metrics": {"val/mIoU": 9')  # cut
    (root / cells[2].run_id).mkdir(parents=True)
    (root / cells[2].run_id / "spec.json").write_text("{}")  # started, then nothing: half-written
    return study, tmp_path / "r", cells


def test_a_truncated_metrics_line_is_skipped_and_the_rest_read(damaged_store):
    """Guarantee: Truncated, corrupt or half-written run directories are reported, never counted, never crash."""
    study, results, cells = damaged_store
    lines = store.read_jsonl(results / "faults" / cells[0].run_id / "metrics.jsonl")
    assert lines == [{"iter": 4, "val/mIoU": 40.0}]


def test_status_reports_a_corrupt_final_and_a_half_written_directory(damaged_store):
    """Guarantee: Status reports a corrupt final and a half written directory."""
    study, results, cells = damaged_store
    states = {r.run_id: r.state for r in status(study)}
    assert states[cells[0].run_id] == "complete"
    assert states[cells[1].run_id] == "corrupt"
    assert states[cells[2].run_id] == "interrupted"


def test_collect_counts_damaged_runs_but_never_averages_them(damaged_store):
    """Guarantee: Collect counts damaged runs but never averages them."""
    from analysis.collect import collect
    from analysis.summary import summarise

    study, results, cells = damaged_store
    frame = collect(study)
    by_id = frame.set_index("run_id")["status"]
    assert by_id[cells[1].run_id] == "corrupt" and by_id[cells[2].run_id] == "interrupted"
    cell = summarise(study, frame).cells[0].group
    assert cell.metrics["val/mIoU"].mean == 40.0 and cell.metrics["val/mIoU"].n == 1  # 99.0 from the cut file
    assert cell.states["corrupt"] == 1 and cell.planned == 3


def test_a_failed_write_leaves_no_partial_result_and_no_temporary_file(tmp_path, monkeypatch):
    """Guarantee: A finished run has exactly one `final.json`, written whole or not at all."""
    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.write_json_atomic(tmp_path / "final.json", {"status": "complete", "metrics": {"val/mIoU": 1.0}})
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rewrite_keeps_the_previous_file_whole(tmp_path, monkeypatch):
    """Guarantee: A failed rewrite keeps the previous file whole."""
    store.write_json_atomic(tmp_path / "final.json", {"status": "complete", "metrics": {"val/mIoU": 1.0}})
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(30, "Read-only file system")))
    with pytest.raises(OSError, match="Read-only"):
        store.write_json_atomic(tmp_path / "final.json", {"status": "complete", "metrics": {"val/mIoU": 2.0}})
    assert json.loads((tmp_path / "final.json").read_text())["metrics"]["val/mIoU"] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["final.json"]


def test_nan_never_reaches_a_result_file(tmp_path):
    """Guarantee: Nan never reaches a result file."""
    with pytest.raises(ValueError):
        store.write_json_atomic(tmp_path / "final.json", {"metrics": {"val/mIoU": float("nan")}})
    assert list(tmp_path.iterdir()) == []
