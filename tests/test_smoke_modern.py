"""studies/smoke_modern.yaml, the methods since CWD on CPU, launched end to end on this machine:
every run completes and every distillation term trained (none stopped as kd_inactive)."""

import resource
from pathlib import Path

import pytest

from kdbench import store
from kdbench.stages import load_study
from runners.launch.jobs import status
from runners.launch.launcher import LaunchOptions, launch
from tests.launch_helpers import outcome

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "smoke_modern.yaml"

pytestmark = pytest.mark.slow


def test_smoke_modern_runs_end_to_end_with_every_cell_complete_and_every_term_training(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "data"))
    study = load_study(STUDY, tmp_path / "results")
    methods = {"pkd", "mgd", "dist", "cirkd_pair", "cirkd_memory", "afdcd"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    launch(study, LaunchOptions(parallel=2, progress=False))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)  # the runs' processes
    states = {run.name: run.state for run in status(study)}
    expected = {"teacher", "student_s0", "student_s1", *(f"{m}_s{seed}" for m in methods for seed in (0, 1))}
    assert expected <= set(states), sorted(states)
    assert all(state == "complete" for state in states.values()), states
    for planned in study.runs:
        run_dir = study.directory / planned.run_id
        final = store.read_json(run_dir / store.FINAL)
        assert final["status"] == "complete", (planned.name, final.get("status"), final.get("error"))
        if planned.kind == "cell":  # its KD term was logged, and not as 0
            logged = outcome(run_dir)["logged"]
            values = [line[key] for line in logged for key in line if key.startswith("loss_kd_")]
            assert values and all(value != 0 for value in values), (planned.name, values)
    # CPU time, not wall time (a loaded machine stretches the one, not the other): 5 minutes of 2 cores
    assert 0 < cpu_s < 600, f"its runs took {cpu_s:.0f} CPU seconds; its header promises about 5 minutes on 2 cores"
