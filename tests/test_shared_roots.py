"""Safe on a shared cluster, where the results root, the weights cache and the studies can be
written by other accounts: reads are bounded and regular-file-only and never follow a link out of
their root, writes never follow a planted link and keep the umask's mode, a damaged result file
makes its run corrupt (with the reason) and never crashes status, collect or report, the verbs
that only read results run no plugin code, a run directory has one trainer, and a run that fails
before training says so. Each case runs the real ``kdbench`` command as a process."""

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kdbench import store
from tests.launch_helpers import TINY_BASE, dump_yaml, gate_study, wait_until
from tests.results_fixtures import make_store

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "studies" / "examples"


def kdbench(*args, timeout: float = 120, umask: int | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``kdbench ARGS`` as a real process (this checkout's code), with ``umask`` when given; a hang
    is a TimeoutExpired, a failure of the test."""
    return subprocess.run([sys.executable, "-m", "kdbench.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def one_line(result: subprocess.CompletedProcess, verb: str, *pieces: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, (result.returncode, result.stderr)
    assert lines[0].startswith(f"kdbench {verb}: error: ") and "Traceback" not in result.stderr
    for piece in pieces:
        assert piece in lines[0], lines[0]
    return lines[0]


def by_name(study) -> dict:
    return {p.name: p for p in study.runs}


# -- finding 3: reads are bounded, regular files only ---------------------------------------------
def test_plan_and_run_refuse_a_device_a_fifo_and_an_oversized_spec_in_one_line_without_hanging(tmp_path):
    """Guarantee: `plan` and `run` refuse a spec that is a device, a FIFO or over the 1 MiB cap in one line, exit 2,
    at once, writing nothing."""
    fifo = tmp_path / "study.yaml"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * (2 << 20) + "\n")
    run_fifo = tmp_path / "run.json"
    os.mkfifo(run_fifo)
    started = time.monotonic()
    one_line(kdbench("plan", "/dev/zero", "--results", tmp_path / "r", timeout=30), "plan", "/dev/zero",
             "a character device, not a regular file")
    one_line(kdbench("plan", fifo, "--results", tmp_path / "r", timeout=30), "plan", "a FIFO, not a regular file")
    one_line(kdbench("plan", huge, "--results", tmp_path / "r", timeout=30), "plan",
             "over the 1,048,576-byte limit")
    one_line(kdbench("run", "/dev/zero", "--out", tmp_path / "o", timeout=30), "run", "a character device")
    one_line(kdbench("run", run_fifo, "--out", tmp_path / "o", timeout=30), "run", "a FIFO")
    assert time.monotonic() - started < 100 and not (tmp_path / "r").exists() and not (tmp_path / "o").exists()


# -- findings 3, 4 and 7: damaged, linked or non-regular result files ------------------------------
def damage(results: Path, study) -> dict[str, str]:
    """Result files an adversary could leave in a shared root: run name -> what was done."""
    runs, root = by_name(study), results / study.name
    final = {name: root / runs[name].run_id / store.FINAL for name in runs}
    outside = results.parent / "elsewhere"
    outside.mkdir()
    (outside / "final.json").write_text(json.dumps({"status": "complete", "metrics": {"val/mIoU": 99.0}}))
    final["student_s0"].unlink()
    final["student_s0"].symlink_to(outside / "final.json")          # a link out of the root: it would flip Δ
    final["student_s1"].unlink()
    final["student_s1"].symlink_to("/dev/zero")                     # endless bytes
    final["cwd_logits_s0"].unlink()
    os.mkfifo(final["cwd_logits_s0"])                               # a reader would wait forever
    with open(final["cwd_logits_s1"], "r+b") as handle:             # a huge file (sparse: no disk used)
        handle.truncate(5 << 20)
    data = json.loads(final["pi_logits_s0"].read_text())
    final["pi_logits_s0"].write_text(json.dumps({**data, "recipe": ["not", "an", "object"]}))   # a wrong type
    return {"student_s0": "a link to", "student_s1": "a character device", "cwd_logits_s0": "a FIFO",
            "cwd_logits_s1": "over the 4,194,304-byte limit", "pi_logits_s0": "recipe is list, not an object"}


def test_status_collect_and_report_count_linked_fifo_device_huge_and_wrong_typed_results_corrupt(tmp_path):
    """Guarantee: A `final.json` linked out of the results root, linked to a device, a FIFO, over its cap or with a
    wrong-typed field makes its run `corrupt` with the reason; `status`, `collect` and `report` go on and never
    average it."""
    study, results = make_store(tmp_path)
    damaged = damage(results, study)
    args = (tmp_path / "fixture.yaml", "--results", results)
    status = kdbench("status", *args, timeout=60)
    assert status.returncode == 0, status.stderr
    for name, reason in damaged.items():
        line = next(line for line in status.stdout.splitlines() if f" {name} " in line)
        assert " corrupt " in line and reason in line, line
    collect = kdbench("collect", *args, timeout=120)
    assert collect.returncode == 0 and "Traceback" not in collect.stderr, collect.stderr
    import pandas as pd

    frame = pd.read_parquet(results / study.name / "runs.parquet").set_index("name")
    assert (frame.loc[list(damaged), "status"] == "corrupt").all()
    assert frame.loc["student_s2", "status"] == "complete"   # the one student left: 32, never the 99 outside
    report = kdbench("report", *args, "--format", "md", timeout=300)
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr
    md = (results / study.name / "report" / "README.md").read_text()
    assert "| student (no distillation) | 32.00 (n=1) |" in md


# -- finding 4: writes never follow a planted link --------------------------------------------------
def test_report_writes_through_a_fresh_temporary_file_never_through_a_planted_link(tmp_path):
    """Guarantee: `report` never writes through a link planted at its target or at a temporary name, and deletes a
    killed writer's old temporary files."""
    study, results = make_store(tmp_path)
    report = results / study.name / "report"
    report.mkdir(parents=True)
    victim, other = tmp_path / "victim.txt", tmp_path / "other.txt"
    victim.write_text("precious"), other.write_text("precious too")
    (report / ".index.html.tmp").symlink_to(victim)     # the name the report used to write through
    (report / "index.html").symlink_to(other)
    old = report / ".README.md.abcd1234.tmp"            # a killed report's leftover, an hour old
    old.write_text("half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    result = kdbench("report", tmp_path / "fixture.yaml", "--results", results, timeout=300)
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "precious" and other.read_text() == "precious too"
    assert not (report / "index.html").is_symlink() and "<html" in (report / "index.html").read_text().lower()
    assert not old.exists()


# -- finding 5: the umask's modes ---------------------------------------------------------------------
def modes(paths) -> set[int]:
    return {stat.S_IMODE(path.stat().st_mode) for path in paths}


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_collect_and_report_files_get_the_umasks_mode_so_a_group_can_share_the_root(tmp_path, umask, file_mode,
                                                                                    dir_mode):
    """Guarantee: The files and folders `collect` and `report` write get the umask's mode (0644/0755 under 0022,
    0664/0775 under 0002), so a group can share a results root."""
    study, results = make_store(tmp_path)
    result = kdbench("report", tmp_path / "fixture.yaml", "--results", results, "--format", "html", umask=umask,
                     timeout=300)
    assert result.returncode == 0, result.stderr
    report = results / study.name / "report"
    assert modes([report / "index.html", report / "metafile.yml", report / "results.tsv",
                  results / study.name / "runs.parquet"]) == {file_mode}
    assert modes([report]) == {dir_mode}


def test_the_atomic_writer_gives_the_umasks_mode_not_0600(tmp_path):
    """Guarantee: Result files written atomically or appended get the umask's mode, not a temporary file's 0600."""
    previous = os.umask(0o022)
    try:
        store.write_json_atomic(tmp_path / "final.json", {"status": "complete"})
        store.write_bytes_atomic(tmp_path / "model_final.pth", b"weights")
        store.append_jsonl(tmp_path / "metrics.jsonl", {"iter": 1})
        os.umask(0o002)
        store.write_json_atomic(tmp_path / "job.json", {"executor": "local", "job_id": "1"})
    finally:
        os.umask(previous)
    assert modes([tmp_path / "final.json", tmp_path / "model_final.pth", tmp_path / "metrics.jsonl"]) == {0o644}
    assert modes([tmp_path / "job.json"]) == {0o664}


# -- finding 6: status, collect and report run no plugin code ------------------------------------------
def test_status_collect_and_report_import_no_plugin_and_plan_does(tmp_path):
    """Guarantee: `status`, `collect` and `report` import no plugin (what a term distils comes from its run's
    `final.json`); `plan` does."""
    from kdbench import plugins
    from kdbench.stages import load_study
    from tests.results_fixtures import write_run

    shutil.copy(EXAMPLES / "plugin_cosine.yaml", tmp_path)
    marker = tmp_path / "IMPORTED"
    (tmp_path / "cosine_kd.py").write_text((EXAMPLES / "cosine_kd.py").read_text()
                                           + f"\nopen({str(marker)!r}, 'a').write('imported\\n')\n")
    study_path, results = tmp_path / "plugin_cosine.yaml", tmp_path / "results"
    plan = kdbench("plan", study_path, "--results", results, "--no-model-check", "--no-data-check", timeout=120)
    assert plan.returncode == 0 and marker.exists(), plan.stderr   # plan imports it: it must check its method
    with plugins.not_imported():  # this process keeps its registry: the copy's loss is not registered here
        study = load_study(study_path, results)
    for planned in study.runs:
        write_run(results / study.name, planned, 40.0 if planned.kind != "teacher" else 50.0)
        final = results / study.name / planned.run_id / store.FINAL
        terms = [{"name": t.name, "method": t.method, "distils": "spatial" if t.method == "cosine" else "channel-wise"}
                 for t in planned.run.distill]
        final.write_text(json.dumps({**json.loads(final.read_text()), "terms": terms}))
    marker.unlink()
    for verb in ("status", "collect", "report"):
        result = kdbench(verb, study_path, "--results", results, timeout=300)
        assert result.returncode == 0, (verb, result.stderr)
        assert not marker.exists(), f"kdbench {verb} imported the plugin"
    import pandas as pd

    frame = pd.read_parquet(results / study.name / "runs.parquet").set_index("name")
    assert frame.loc["cosine_logits_s0", "distils"] == "spatial"   # as the run recorded it


@pytest.mark.parametrize("verb", ["plan", "launch", "run", "losses"])
def test_the_verbs_that_import_plugins_say_so_in_their_help(verb):
    """Guarantee: The help of each verb that imports plugins (`plan`, `launch`, `run`, `losses`) says a plugin is
    code: plan only studies you trust."""
    result = kdbench(verb, "--help", timeout=60)
    assert "a plugin is code: plan only studies you trust" in " ".join(result.stdout.split())


def test_import_mmrazor_help_says_the_config_is_executed_as_python():
    """Guarantee: `kdbench import mmrazor --help` says the config is executed as Python."""
    result = kdbench("import", "--help", timeout=60)
    assert "The config is executed as Python" in " ".join(result.stdout.split())


# -- finding 9: references inside the study's folder tree ------------------------------------------------
def test_a_reference_linked_out_of_the_study_folder_is_one_line_at_plan(tmp_path):
    """Guarantee: A reference table linked out of the study's folder is one line at plan, exit 2."""
    outside = tmp_path / "outside.csv"
    outside.write_text("method,metric,value\ncwd,mIoU,99.0\n")
    folder = tmp_path / "study"
    (folder / "references").mkdir(parents=True)
    (folder / "references" / "published.csv").symlink_to(outside)
    spec = {"name": "linked", "base": {k: v for k, v in TINY_BASE.items() if k != "teacher"},
            "references": ["published.csv"]}
    (folder / "linked.yaml").write_text(dump_yaml(spec))
    result = kdbench("plan", folder / "linked.yaml", "--results", tmp_path / "r", timeout=60)
    one_line(result, "plan", "references[0]: 'published.csv' is not a reference table: outside the study's folder")


# -- finding 2: a study that cannot run says so ------------------------------------------------------------
def short_study(folder: Path, dataset: dict | None = None) -> Path:
    """A student baseline of 2 iterations and no checkpoint_interval (the default 50 is beyond it)."""
    base = {"task": "seg", "student": TINY_BASE["student"], "dataset": dataset or TINY_BASE["dataset"],
            "schedule": {"iterations": 2, "batch_size": 2}}
    path = folder / "short.yaml"
    path.write_text(dump_yaml({"name": "short", "base": base, "seeds": [0],
                               "resources": {"gpus": 0, "cpus": 1, "mem_gb": 2, "time_min": 30}}))
    return path


def test_a_run_shorter_than_the_default_checkpoint_interval_checkpoints_at_its_end_and_completes(tmp_path):
    """Guarantee: A run shorter than the default checkpoint interval checkpoints at its last iteration and
    completes, its files and folder in the umask's mode."""
    path = short_study(tmp_path)
    result = kdbench("launch", path, "--results", tmp_path / "r", "--no-progress", umask=0o022, timeout=600)
    assert result.returncode == 0 and "1 of 1 runs complete" in result.stdout, result.stdout + result.stderr
    run_dir = next((tmp_path / "r" / "short").glob("*/final.json")).parent
    assert modes([run_dir / name for name in ("final.json", "spec.json", "env.json", "run.json", "job.json",
                                              "model_final.pth")]) == {0o644}
    assert modes([run_dir]) == {0o755}


def test_a_worker_that_fails_before_training_writes_error_json_status_says_why_and_launch_exits_1(tmp_path):
    # Its data is not there (the launch is told not to check): the worker's preflight fails.
    """Guarantee: A worker that fails before training writes `error.json`, `status` shows the run `failed` with the
    reason, and a local `launch` exits 1 naming it."""
    path = short_study(tmp_path, {"name": "cityscapes", "root": str(tmp_path / "no_such_dataset")})
    result = kdbench("launch", path, "--results", tmp_path / "r", "--no-progress", "--no-data-check", timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "student_s0 failed:" in result.stderr and "no_such_dataset" in result.stderr
    error = next((tmp_path / "r" / "short").glob("*/error.json"))
    assert json.loads(error.read_text())["status"] == "failed"
    status = kdbench("status", path, "--results", tmp_path / "r", timeout=60)
    line = next(line for line in status.stdout.splitlines() if " student_s0 " in line)
    assert " failed " in line and "no_such_dataset" in line, status.stdout


def test_a_launched_run_file_that_no_longer_reads_is_recorded_failed_with_the_reason(tmp_path):
    """Guarantee: A launched run file that no longer reads (a seed of 2**32) is one line, exit 2, and the run is
    recorded `failed` with that reason."""
    run_dir = tmp_path / "results" / "study" / "0123456789ab"
    run_dir.mkdir(parents=True)
    run = {"task": "seg", "student": {"config": "tiny_seg_student"}, "dataset": {"name": "fashion_scenes"},
           "seed": 2**32}
    (run_dir / "run.json").write_text(json.dumps(run))
    result = kdbench("run", run_dir / "run.json", "--out", run_dir, timeout=60)
    one_line(result, "run", "seed: must be <= 4294967295")
    files = store.read_run(run_dir)
    assert files.state == "failed" and "seed: must be <= 4294967295" in store.error_line(files)


# -- finding 8: one trainer per run directory ---------------------------------------------------------------
@pytest.mark.slow
def test_a_second_trainer_of_a_run_directory_a_launch_is_training_is_refused_in_one_line(tmp_path):
    """Guarantee: A second trainer of a run directory a launch is training is refused in one line and writes
    nothing; the run completes once, each evaluation recorded once."""
    release = tmp_path / "release"
    path = gate_study(tmp_path, "locked", release)
    results = tmp_path / "r"
    launch = subprocess.Popen([sys.executable, "-m", "kdbench.cli", "launch", str(path), "--results", str(results),
                               "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_until(lambda: Path(f"{release}.waiting").exists(), timeout=400, what="the gated run to hold")
        run_dir = next(p.parent for p in (results / "locked").glob("*/run.json")
                       if yaml.safe_load(p.read_text())["name"] == "gate_s0")
        before = sorted(p.name for p in run_dir.iterdir())
        second = kdbench("run", run_dir / "run.json", "--out", run_dir, timeout=120)
        one_line(second, "run", f"{run_dir}: this run is being trained by pid", "one trainer at a time")
        assert sorted(p.name for p in run_dir.iterdir()) == before
    finally:
        release.write_text("go")
        out, _ = launch.communicate(timeout=400)
    assert launch.returncode == 0, out
    assert store.read_run(run_dir).state == "complete"
    iterations = [line["iter"] for line in store.read_jsonl(run_dir / store.METRICS)]
    assert len(iterations) == len(set(iterations))   # each evaluation once: one trainer


def test_the_run_lock_refuses_a_second_holder_and_cleans_what_a_killed_writer_left(tmp_path):
    """Guarantee: The run lock refuses a second holder, is released with its holder, and deletes the old temporary
    files a killed writer left (not one being written)."""
    from kdbench.errors import UserError
    from runners.run import run_lock

    old, fresh = tmp_path / ".final.json.abcd1234.tmp", tmp_path / ".job.json.efgh5678.tmp"
    old.write_text("half"), fresh.write_text("being written")
    os.utime(old, (time.time() - 600, time.time() - 600))
    with run_lock(tmp_path):
        assert not old.exists() and fresh.exists()   # a launch may be writing job.json right now
        with pytest.raises(UserError, match=f"{tmp_path}: this run is being trained by pid {os.getpid()}"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):   # released with its holder
        pass
