"""The run files shipped under studies/runs/ are examples a new user runs first: they must be the
smoke study's own runs (whose settings were chosen from its baseline, see studies/smoke.yaml), and
the student baseline must learn more than one class."""

import json
from pathlib import Path

import pytest

from kdbench.ids import run_id
from kdbench.spec import load_run
from kdbench.stages import load_study
from tests.launch_helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "studies" / "runs"


def _comparable(run) -> dict:
    """A run's resolved spec without what only says where it lives or is watched: its name, out,
    teacher checkpoint and tracking (a study's runs log to its experiment)."""
    data = run.to_dict()
    for key in ("name", "out", "tracking"):
        data.pop(key, None)
    data["teacher"] = {k: v for k, v in (data.get("teacher") or {}).items() if k != "checkpoint"}
    data["distill"] = [{k: v for k, v in term.items() if k != "name"} for term in data.get("distill") or []]
    return data


def test_the_shipped_seg_example_run_files_are_the_smoke_studys_own_runs(tmp_path):
    """Guarantee: The shipped example run files are the smoke study's runs, and the example student baseline learns
    more than one class."""
    smoke = {p.name: p for p in load_study(ROOT / "studies" / "smoke.yaml", tmp_path).runs}
    assert run_id(load_run(RUNS / "tiny_seg_teacher.json")) == smoke["teacher"].run_id
    assert run_id(load_run(RUNS / "tiny_seg_baseline.json")) == smoke["student_s0"].run_id
    assert _comparable(load_run(RUNS / "tiny_seg_cwd.json")) == _comparable(smoke["cwd_logits_s0"].run)


@pytest.mark.slow
def test_the_shipped_student_baseline_example_learns_more_than_one_class(tmp_path):
    """Guarantee: The shipped student baseline example learns more than one class.

    At lr 0.01 (until 2026-12-01) this run predicted background everywhere: mAcc = 100 / 11."""
    code, out, err = run_cli("run", str(RUNS / "tiny_seg_baseline.json"), "--out", str(tmp_path / "run"))
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "final.json").read_text())["metrics"]
    chance = 100.0 / metrics["val/classes_evaluated"]
    assert metrics["val/mAcc"] > chance + 1.0, f"collapsed: mAcc {metrics['val/mAcc']:.2f}, one class {chance:.2f}"
