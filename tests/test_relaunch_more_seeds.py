"""A study relaunched with more seeds runs only the new seeds: a run's id is computed from its own
spec (its seed included), never from the study's other seeds, so the runs already complete keep
their ids, are skipped, and keep their results."""

import pytest

from kdbench import store
from kdbench.stages import load_study
from runners.launch.jobs import status
from runners.launch.launcher import LaunchOptions, launch, summary
from tests.launch_helpers import write_study

pytestmark = pytest.mark.slow  # the runs train (tiny models, 4 iterations)


def test_adding_seeds_and_relaunching_runs_only_the_new_seeds_and_keeps_the_old_results(tmp_path, monkeypatch,
                                                                                         tiny_teacher):
    """Guarantee: A study relaunched with more seeds runs only the new seeds; the runs already complete keep their ids
    and results."""
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "data"))
    path = write_study(tmp_path, "more_seeds", seeds=(0,))
    study = load_study(path, tmp_path / "results")
    assert tiny_teacher(study)  # the teacher, complete (tests/conftest.py): the seeds are what this is about
    assert summary(launch(study, LaunchOptions(progress=False))) == {"skip-complete": 1, "submit": 2}  # student, cwd
    finals = {p.name: study.directory / p.run_id / store.FINAL for p in study.runs}
    before = {name: (final.read_bytes(), final.stat().st_mtime_ns) for name, final in finals.items()}

    write_study(tmp_path, "more_seeds", seeds=(0, 1))  # the user adds a seed to seeds:
    more = load_study(path, tmp_path / "results")
    ids = {p.name: p.run_id for p in more.runs}
    assert all(ids[p.name] == p.run_id for p in study.runs)  # seed 0's runs are the same runs
    actions = {d.planned.name: d.action for d in launch(more, LaunchOptions(progress=False))}
    assert actions == {"teacher": "skip-complete", "student_s0": "skip-complete", "cwd_logits_s0": "skip-complete",
                       "student_s1": "submit", "cwd_logits_s1": "submit"}
    assert {r.name: r.state for r in status(more)} == dict.fromkeys(ids, "complete")
    assert {name: (final.read_bytes(), final.stat().st_mtime_ns) for name, final in finals.items()} == before
