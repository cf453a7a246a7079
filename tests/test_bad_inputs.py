"""The bad-input corpus (tests/bad_inputs/, described in its README.md): every case is refused with
exit code 2 and exactly one stderr line ``kdbench <verb>: error: <file>: <key path>: ...`` that
matches the case's expectation, with no traceback, nothing written under the results directory or
the run's output directory, and, for launch, nothing submitted."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launch_helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "bad_inputs"
STUDY_VERBS = ("plan", "launch --executor local")


def expectation(path: Path) -> tuple[str, tuple[str, ...]]:
    """(regex, verbs) of a case: a study's first line ``# expect: REGEX`` and an optional
    ``# verbs: launch --executor slurm``; a run file's sibling NAME.expect."""
    if path.suffix == ".json":
        return path.with_suffix(".expect").read_text().strip(), ("run",)
    lines = path.read_text().splitlines()
    expected = re.match(r"# expect: (.*)", lines[0]).group(1)
    verbs = next((tuple(v.strip() for v in line[len("# verbs:"):].split(";"))
                  for line in lines[1:3] if line.startswith("# verbs:")), STUDY_VERBS)
    return expected, verbs


STUDY_CASES = sorted(CORPUS.glob("*.yaml"))
RUN_CASES = sorted(CORPUS.glob("*.json"))
CASES = [(path, verb) for path in STUDY_CASES + RUN_CASES for verb in expectation(path)[1]]


def test_the_corpus_has_well_over_30_cases_of_every_kind():
    assert len(STUDY_CASES) >= 45 and len(RUN_CASES) >= 20
    assert all(p.with_suffix(".expect").is_file() for p in RUN_CASES)
    kinds = " ".join(p.stem for p in STUDY_CASES + RUN_CASES)
    for kind in ("malformed", "unknown_key", "wrong_type", "unknown_method", "unknown_norm", "unknown_divergence",
                 "temperature", "empty_grid", "duplicate_axis", "location_not_in_model", "channel_mismatch",
                 "spatial_mismatch", "dataset_root", "checkpoint_missing", "checkpoint_is_text",
                 "teacher_config_missing", "gpus_beyond_the_partition"):
        assert kind in kinds, kind


@pytest.mark.parametrize("path, verb", CASES, ids=[f"{p.stem}-{v.split()[0]}" for p, v in CASES])
def test_each_bad_input_is_one_line_naming_file_and_key_with_exit_2_and_nothing_written(path, verb, tmp_path,
                                                                                         monkeypatch, request):
    if "slurm" in verb:
        request.getfixturevalue("slurm_cluster")
    monkeypatch.chdir(ROOT)  # fixture paths in the corpus are relative to the repository
    expected, _ = expectation(path)
    relative = path.relative_to(ROOT)
    results, out_dir = tmp_path / "results", tmp_path / "out"
    args = [*verb.split(), str(relative)]
    args += ["--out", str(out_dir)] if verb == "run" else ["--results", str(results)]
    if verb.startswith("launch"):
        args.append("--no-progress")
    code, out, err = run_cli(*args)
    lines = err.strip().splitlines()
    assert code == 2 and out == "", (code, out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"kdbench {verb.split()[0]}: error: {relative}"), lines[0]
    assert re.search(expected, lines[0]), f"{lines[0]!r} does not match {expected!r}"
    assert "Traceback" not in err
    assert not results.exists() and not out_dir.exists()  # nothing written, so nothing submitted


@pytest.mark.parametrize("name", ["01_malformed_yaml.yaml", "33_channel_mismatch_without_adapter.yaml"])
def test_the_real_command_exits_2_with_one_line_on_a_bad_study(name, tmp_path):
    result = subprocess.run([sys.executable, "-m", "kdbench.cli", "launch", f"tests/bad_inputs/{name}",
                             "--results", str(tmp_path / "results")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"kdbench launch: error: tests/bad_inputs/{name}")
    assert not (tmp_path / "results").exists()


def test_the_real_command_exits_2_with_one_line_on_a_bad_run_file(tmp_path):
    result = subprocess.run([sys.executable, "-m", "kdbench.cli", "run", "tests/bad_inputs/r13_channel_mismatch.json",
                             "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "distill[0].adapter" in result.stderr and not (tmp_path / "out").exists()


def test_runs_that_differ_only_in_what_the_models_do_not_see_are_checked_once(tmp_path, monkeypatch):
    """A grid over temperature and weight is checked per distinct model pair, not per run (so a
    10k-run plan stays fast), and a bad location among them is still found."""
    import yaml

    from kdbench.expand import load_study
    from runners import preflight

    spec = {"name": "many", "base": {"task": "seg", "teacher": {"config": "tiny_seg_teacher"},
                                     "student": {"config": "tiny_seg_student"},
                                     "dataset": {"name": "fashion_scenes"}},
            "methods": {"a": {"method": "cwd", "student_location": "decode_head.conv_seg"}},
            "grid": {"term.params.tau": [1.0, 2.0, 4.0], "term.weight": [1.0, 3.0]}, "seeds": [0, 1]}
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(spec))
    study = load_study(path, tmp_path / "results")
    calls = []
    original = preflight._check_locations
    monkeypatch.setattr(preflight, "_check_locations", lambda site: calls.append(site) or original(site))
    preflight.check_study(study)
    assert len([r for r in study.runs if r.run.distill]) == 12
    assert len(calls) == 3  # the teacher run, the student baseline, one distilled pair
    spec["methods"]["b"] = {"method": "cwd", "student_location": "decode_head.conv_segg"}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(Exception, match=r"methods\.b\.student_location: 'decode_head\.conv_segg' is not in"):
        preflight.check_study(load_study(path, tmp_path / "results"))
