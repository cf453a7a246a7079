"""The bad-input corpus (tests/bad_inputs/, described in its README.md): every case is refused with
exit code 2 and one stderr line per problem, ``kdbench <verb>: error: <file>: <key path>: ...``, the
first matching the case's expectation, with no traceback, nothing written under the results directory or
the run's output directory, and, for launch, nothing submitted. A case with limits (the hostile and
runaway specs: alias bombs, huge grids) runs as a real process, held to its CPU time and peak memory."""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.launch_helpers import dump_yaml, run_cli

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "bad_inputs"
STUDY_VERBS = ("plan", "launch --executor local")
LIMITS = re.compile(r"(?:# )?limits: ([\d.]+) s, (\d+) MB")


def expectation(path: Path) -> tuple[str, tuple[str, ...], tuple[float, float] | None]:
    """(regex, verbs, limits) of a case: a study's first line ``# expect: REGEX``, an optional
    ``# verbs: launch --executor slurm`` and ``# limits: 2 s, 500 MB`` (CPU seconds, peak memory)
    among its next lines; a run file's sibling NAME.expect, the REGEX and an optional
    ``limits: 2 s, 500 MB`` line."""
    if path.suffix == ".json":
        lines = path.with_suffix(".expect").read_text().splitlines()
        expected, verbs = lines[0].strip(), ("run",)
    else:
        lines = path.read_text().splitlines()
        expected = re.match(r"# expect: (.*)", lines[0]).group(1)
        verbs = next((tuple(v.strip() for v in line[len("# verbs:"):].split(";"))
                      for line in lines[1:3] if line.startswith("# verbs:")), STUDY_VERBS)
    limits = next((match.groups() for match in map(LIMITS.fullmatch, lines[1:3]) if match), None)
    return expected, verbs, None if limits is None else (float(limits[0]), float(limits[1]))


STUDY_CASES = sorted(CORPUS.glob("*.yaml"))
RUN_CASES = sorted(CORPUS.glob("*.json"))
CASES = [(path, verb) for path in STUDY_CASES + RUN_CASES for verb in expectation(path)[1]]
LIMITED = [path for path in STUDY_CASES + RUN_CASES if expectation(path)[2]]


def test_the_corpus_has_well_over_30_cases_of_every_kind():
    """Guarantee: The corpus has well over 30 cases of every kind."""
    assert len(STUDY_CASES) >= 45 and len(RUN_CASES) >= 20
    assert all(p.with_suffix(".expect").is_file() for p in RUN_CASES)
    kinds = " ".join(p.stem for p in STUDY_CASES + RUN_CASES)
    for kind in ("malformed", "unknown_key", "wrong_type", "unknown_method", "unknown_norm", "unknown_divergence",
                 "temperature", "empty_grid", "duplicate_axis", "location_not_in_model", "channel_mismatch",
                 "spatial_mismatch", "dataset_root", "checkpoint_missing", "checkpoint_is_text",
                 "teacher_config_missing", "gpus_beyond_the_partition", "alias_bomb", "recursive_yaml_alias",
                 "nesting_deeper", "million_runs", "repeated_key", "two_grid_blocks", "right_to_left_override",
                 "bidi_isolate", "zero_iterations", "interval_beyond_iterations", "batch_size_zero"):
        assert kind in kinds, kind


def test_every_hostile_or_runaway_case_has_limits_and_is_refused_by_plan_and_launch():
    """Guarantee: Every hostile or runaway case has limits and is refused by plan and launch."""
    hostile = [p for p in STUDY_CASES + RUN_CASES
               if re.search("alias|nesting|million|repeated_key|two_grid|override|bidi|iterations|batch_size_zero",
                            p.stem)]
    assert len(hostile) >= 20 and set(hostile) <= set(LIMITED)
    assert all(expectation(p)[1] == STUDY_VERBS for p in hostile if p.suffix == ".yaml")


def run_measured(args: list[str], limits: tuple[float, float]) -> tuple[int, str, str, float, float]:
    """``kdbench <args>`` as a real process: (exit code, stdout, stderr, CPU seconds, peak MB). CPU
    time, not wall time, is what is held to the limit: a loaded machine stretches the one and not
    the other. ulimit stops a runaway at 4 times both limits, so a regression fails instead of
    filling the machine.

    The process is started by a small Python process of its own (MEASURE), not forked from this
    one: a forked child's peak memory counts the parent's resident pages at the fork (Linux keeps
    that high-water mark across exec), so a pytest process that had trained models before would
    make every case look hundreds of MB heavier."""
    cpu_cap, memory_cap_kb = int(4 * limits[0]), int(4 * limits[1] * 1024)
    command = ["bash", "-c", f'ulimit -t {cpu_cap} -v {memory_cap_kb} && exec "$@"', "kdbench",
               sys.executable, "-m", "kdbench.cli", *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        measured = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(command)], cwd=ROOT, stdout=out,
                                  stderr=err)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
        assert measured.returncode == 0, f"the measuring process failed: {stderr}"
        head, _, last = stdout.rstrip("\n").rpartition("\n")  # the child's output, then the usage line
        usage = json.loads(last)
        return usage["code"], head + "\n" if head else "", stderr, usage["cpu"], usage["mb"]


# Runs the command given as JSON as a child and prints, last on stdout, its exit code, CPU seconds
# and peak memory (this small process's own child: nothing inherited from pytest).
MEASURE = """
import json, os, subprocess, sys
process = subprocess.Popen(json.loads(sys.argv[1]))
_, status, usage = os.wait4(process.pid, 0)
sys.stdout.flush()
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "cpu": usage.ru_utime + usage.ru_stime,
                  "mb": usage.ru_maxrss / 1024}))
"""


# The cases launched on SLURM use the cluster: marked, so that they run in its group (tests/conftest.py).
@pytest.mark.parametrize("path, verb", [pytest.param(p, v, marks=[pytest.mark.slurm] if "slurm" in v else [])
                                        for p, v in CASES], ids=[f"{p.stem}-{v.split()[0]}" for p, v in CASES])
def test_each_bad_input_is_one_line_naming_file_and_key_with_exit_2_and_nothing_written(path, verb, tmp_path,
                                                                                         monkeypatch, request):
    """Guarantee: Every case of the corpus tests/bad_inputs/ (its README says how a case is written: studies through
    `kdbench plan` and a real `kdbench launch`, some through `launch --executor slurm`, run files through
    `kdbench run`) exits with code 2 and prints one stderr line per problem, `kdbench <verb>: error: <file>:
    <key path>: <what is valid>`, no traceback, with nothing under the results directory or `--out`.

    Guarantee: Malformed YAML or JSON, an empty file, unknown keys (with the close match), wrong types, unknown
    method, norm, divergence or parameter, zero or negative temperature (also from an axis), NaN, empty grid,
    duplicate or unknown axis, zip lengths, unknown dataset, missing dataset root, config that does not exist
    (kdbench, packaged or path), repeated seeds: one line naming the file and key path, exit 2, nothing written
    (bad-input cases 01-30, 46, r01-r08, r16-r20).

    Guarantee: Checks that need the models or the data run in a preflight of `plan`, `launch` and `run`, before
    anything is submitted or written: a location not in its model (naming the close matches); a channel mismatch
    without an adapter (key `methods.<m>.adapter`); a spatial mismatch without `resize` (key
    `methods.<m>.resize`), found by a probe forward of both models on the `meta` device at the run's input size,
    cached (bad-input cases 31-36, r12-r14).

    Guarantee: A teacher checkpoint that is missing, a directory, empty, not a PyTorch file or a truncated zip (its
    header and end record are read; nothing is loaded), a `{run: DIR}` teacher that never completed, a dataset
    root that is not a directory: refused by the preflight (bad-input cases 37-45, r09-r11, r15).

    Guarantee: A dataset root that lacks what mmseg/mmdet will read (a Cityscapes tree as downloaded, without
    train-id maps; a COCO tree without an annotation file, with images its annotation file names missing, or
    with that file cut short) is refused by the preflight of `launch` and `run` in one line naming what is
    missing and the command that fixes it, exit 2, nothing written (`plan` lists that line under the grid, exit
    0); `kdbench data prepare cityscapes` makes the train-id maps (atomically, resumable, a second call writes
    nothing); a partial split is recorded in `final.json` and marked in the report (bad-input cases 66 and r27).

    Guarantee: GPUs, CPUs (per task x tasks) or memory beyond every node of the partition, or an unknown partition:
    each refused in one line naming the option or study key, before anything is submitted or written (bad-input
    cases 47, 48, 50 and 51).

    Guarantee: Hostile and runaway specs are refused in one line (exit 2, nothing written) through `plan` and
    `launch`, each checked as a real process at under 2 s of CPU and 500 MB peak memory: YAML aliases (a
    400-byte alias bomb, a recursive alias), nesting deeper than 64 levels (YAML and JSON), a key given twice
    (`name:`, two `grid:` blocks, a run file's key), with file, key path and line (bad-input cases 52-58, r21,
    r26).

    Guarantee: A grid is counted before it is built: more than 100,000 cell runs (before exclusions) is refused in
    one line giving the count and the axes that multiply to it (a 2,000 x 500 grid: under 2 s CPU, 500 MB);
    `--max-runs N` on every study verb raises the limit (bad-input case 56).

    Guarantee: Names that become run names, directories or report text (study, methods, text axis values, run and
    term names, the description's lines) hold no control or bidirectional-override character: one line naming
    the key and the code point; every error line escapes such characters quoted from a spec; a run's default
    output folder keeps its name's safe characters only (bad-input cases 59, 60, r24).

    Guarantee: Training runs need `iterations` >= 1 (0 only for a teacher evaluating its checkpoint), `batch_size`
    >= 1, and any `val_interval` or `checkpoint_interval` the user gives no larger than `iterations` (bad-input
    cases 61-65, r22, r23, r25).

    Guarantee: A location may index a module's tuple output (`neck[2]`, MMRazor's `data_idx`) or take every element
    (`neck[*]`), so FPN levels with no module of their own are distilled; a bad index names what is valid
    (bad-input cases r28, r29, r30).

    Guarantee: Tuned baselines get the same budget: a `tune:` block with unequal budgets is refused; tune runs train
    and evaluate on disjoint parts of the training set and never read val; each method's best held-out setting
    (a tie: the first listed; failures never) is what its final runs train, over the seeds, with ids stable
    across reloads; one local launch runs both stages, and on SLURM a continuation job submits the final stage,
    a relaunch submits nothing twice and `cancel` cancels the continuation too (bad-input cases 74-81, r33).

    Guarantee: Specs are read with a safe YAML loader (`!!python/object` rejected, aliases refused) (bad-input case
    53)."""
    if "slurm" in verb:
        request.getfixturevalue("slurm_cluster")
    monkeypatch.chdir(ROOT)  # fixture paths in the corpus are relative to the repository
    expected, _, limits = expectation(path)
    relative = path.relative_to(ROOT)
    results, out_dir = tmp_path / "results", tmp_path / "out"
    args = [*verb.split(), str(relative)]
    args += ["--out", str(out_dir)] if verb == "run" else ["--results", str(results)]
    if verb.startswith("launch"):
        args.append("--no-progress")
    if limits:
        code, out, err, cpu_s, peak_mb = run_measured(args, limits)
        assert cpu_s < limits[0] and peak_mb < limits[1], f"{cpu_s:.2f} s CPU, {peak_mb:.0f} MB peak; limits {limits}"
    else:
        code, out, err = run_cli(*args)
    lines = err.strip().splitlines()
    assert code == 2 and out == "", (code, out, err)
    assert lines and all(line.startswith(f"kdbench {verb.split()[0]}: error: {relative}") for line in lines), err
    assert re.search(expected, lines[0]), f"{lines[0]!r} does not match {expected!r}"
    assert "Traceback" not in err
    assert not results.exists() and not out_dir.exists()  # nothing written, so nothing submitted


@pytest.mark.parametrize("name", ["01_malformed_yaml.yaml", "33_channel_mismatch_without_adapter.yaml"])
def test_the_real_command_exits_2_with_one_line_on_a_bad_study(name, tmp_path):
    """Guarantee: The real command exits 2 with one line on a bad study."""
    result = subprocess.run([sys.executable, "-m", "kdbench.cli", "launch", f"tests/bad_inputs/{name}",
                             "--results", str(tmp_path / "results")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"kdbench launch: error: tests/bad_inputs/{name}")
    assert not (tmp_path / "results").exists()


def test_the_real_command_exits_2_with_one_line_on_a_bad_run_file(tmp_path):
    """Guarantee: The real command exits 2 with one line on a bad run file."""
    result = subprocess.run([sys.executable, "-m", "kdbench.cli", "run", "tests/bad_inputs/r13_channel_mismatch.json",
                             "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "distill[0].adapter" in result.stderr and not (tmp_path / "out").exists()


def test_runs_that_differ_only_in_what_the_models_do_not_see_are_checked_once(tmp_path, monkeypatch):
    """A grid over temperature and weight is checked per distinct model pair, not per run (so a
    10k-run plan stays fast), and a bad location among them is still found."""

    from kdbench.stages import load_study
    from runners import preflight

    spec = {"name": "many", "base": {"task": "seg", "teacher": {"config": "tiny_seg_teacher"},
                                     "student": {"config": "tiny_seg_student"},
                                     "dataset": {"name": "fashion_scenes"}},
            "methods": {"a": {"method": "cwd", "student_location": "decode_head.conv_seg"}},
            "grid": {"term.params.tau": [1.0, 2.0, 4.0], "term.weight": [1.0, 3.0]}, "seeds": [0, 1]}
    path = tmp_path / "many.yaml"
    path.write_text(dump_yaml(spec))
    study = load_study(path, tmp_path / "results")
    calls = []
    original = preflight._check_locations
    monkeypatch.setattr(preflight, "_check_locations", lambda site, found: calls.append(site) or original(site, found))
    preflight.check_study(study)
    assert len([r for r in study.runs if r.run.distill]) == 12
    assert len(calls) == 3  # the teacher run, the student baseline, one distilled pair
    spec["methods"]["b"] = {"method": "cwd", "student_location": "decode_head.conv_segg"}
    path.write_text(dump_yaml(spec))
    with pytest.raises(Exception, match=r"methods\.b\.student_location: 'decode_head\.conv_segg' is not in"):
        preflight.check_study(load_study(path, tmp_path / "results"))


MISSING = [p for p in STUDY_CASES if "launch --executor local" in expectation(p)[1] and len(expectation(p)[1]) == 1]


@pytest.mark.parametrize("path", MISSING, ids=lambda p: p.stem)
def test_plan_lists_what_a_launch_would_refuse_for_missing_data_or_weights_and_exits_0(path, tmp_path, monkeypatch):
    """Guarantee: Plan lists what a launch would refuse for missing data or weights and exits 0.

    A plan works on a machine without the data or the checkpoints: the grid, then what a launch
    still needs (the same line a launch refuses with), exit 0, nothing written."""
    from tests.launch_helpers import run_cli

    monkeypatch.chdir(ROOT)
    code, out, err = run_cli("plan", str(path.relative_to(ROOT)), "--results", str(tmp_path / "results"))
    assert code == 0, err
    grid, _, needs = out.partition("\nBefore kdbench launch can run this study, it needs:\n")
    assert "run_id" in grid and needs, out
    assert any(re.search(expectation(path)[0], line) for line in needs.splitlines()), needs
    assert not (tmp_path / "results").exists()


def test_the_cases_a_plan_lists_instead_of_refusing_are_the_missing_files_ones():
    assert {p.stem[:2] for p in MISSING} == {"37", "38", "39", "40", "41", "42", "43", "44", "45", "66", "12"}
