"""The results root stays with the study: a study's ``results:``, else where its last launch wrote,
is what ``status``, ``collect`` and ``report`` read when ``--results`` is not given, and they say
which root they read and why (kdbench.roots)."""

import json

from kdbench import roots
from tests.launch_helpers import run_cli
from tests.results_fixtures import make_store, study_text

LOGITS = "decode_head.conv_seg"
CWD = f"{{method: cwd, params: {{tau: 4.0}}, weight: 3.0, student_location: {LOGITS}}}"
DONE = {"teacher": 50.0, "student_s0": 30.0, "student_s1": 31.0, "student_s2": 32.0,
        "cwd_logits_s0": 35.0, "cwd_logits_s1": 36.0, "cwd_logits_s2": 37.0}


def test_a_study_s_results_key_is_the_root_its_verbs_read_and_they_say_so(tmp_path, monkeypatch):
    """Guarantee: A study's `results:` (relative to its folder) is the root `status`, `collect` and
    `report` read without `--results`; each prints the root it read and why; `--results` overrides it."""
    study, results = make_store(tmp_path, DONE, study_text({"cwd_logits": CWD}, "results: results\n"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)   # the study's folder, not the current one, anchors `results: results`
    code, out, err = run_cli("status", str(study.path))
    assert code == 0 and out.count(" complete ") == 7, out
    assert err.strip() == f"kdbench: fixture: results root {results} (the study's results:)"
    code, out, err = run_cli("collect", str(study.path))
    assert code == 0 and f"-> {results / 'fixture' / 'runs.parquet'}" in out and str(results) in err
    code, out, err = run_cli("report", str(study.path), "--format", "md", "--json")
    assert code == 0 and json.loads(out)["written"]["md"] == str(results / "fixture" / "report" / "README.md")
    code, out, err = run_cli("status", str(study.path), "--results", str(elsewhere))
    assert code == 0 and out.count(" missing ") == 7 and err == ""   # told: no line about it


def test_a_launch_records_its_root_and_the_study_s_later_verbs_read_it(tmp_path, monkeypatch):
    """Guarantee: A launch records where it wrote; `status` and `report` of that study without
    `--results` read there (printing it), from any folder, until another launch or `--results` says
    otherwise."""
    study, results = make_store(tmp_path, DONE, study_text({"cwd_logits": CWD}))
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "data"))
    code, out, err = run_cli("launch", str(study.path), "--results", str(results), "--executor", "local",
                             "--no-progress")
    assert code == 0 and "submitted 0" in out, (out, err)   # every run complete: nothing runs
    assert roots.recorded(study.path) == results.resolve()
    monkeypatch.chdir(tmp_path / "references")   # anywhere else
    code, out, err = run_cli("status", str(study.path))
    assert code == 0 and out.count(" complete ") == 7
    assert err.startswith(f"kdbench: fixture: results root {results.resolve()} (where its last launch wrote")
    code, out, err = run_cli("report", str(study.path), "--format", "md")
    assert code == 0 and (results / "fixture" / "report" / "README.md").is_file()


def test_without_a_record_or_results_key_the_root_is_results_here_and_said(tmp_path, monkeypatch):
    path = tmp_path / "s.yaml"
    path.write_text(study_text({"cwd_logits": CWD}))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("status", str(path))
    assert code == 0 and out.count(" missing ") == 7
    assert err.startswith("kdbench: fixture: results root results (the default;")


def test_a_damaged_record_counts_as_none(tmp_path, monkeypatch):
    monkeypatch.setenv(roots.STATE_ENV, str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "launches.json").write_text("[1, 2")
    assert roots.recorded(tmp_path / "s.yaml") is None
    roots.remember(tmp_path / "s.yaml", tmp_path / "r")   # a new record replaces the damaged file
    assert roots.recorded(tmp_path / "s.yaml") == (tmp_path / "r").resolve()
