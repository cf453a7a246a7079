"""What a newcomer meets in the first hour (issue 21): every problem of a spec in one pass with
close-match hints, a generated run's problem named by the axis value the user wrote, options
checked before any work or output, SLURM site settings (account, QOS, constraint, exclude,
reservation, extra sbatch options) and what ``launch --executor slurm --dry-run`` would submit."""

import socket
import subprocess

import pytest
import yaml

from kdbench import losses
from kdbench.errors import UserError
from kdbench.stages import load_study
from kdbench.study import load_spec
from runners.launch.jobs import cancel
from runners.launch.launcher import LaunchOptions, launch
from tests.launch_helpers import CWD, TINY_BASE, dump_yaml, run_cli, slurm_states, wait_until, write_study


def errors_of(*args) -> list[str]:
    code, out, err = run_cli(*args)
    assert code == 2 and out == "", (code, out, err)
    lines = err.strip().splitlines()
    assert all(line.startswith(f"kdbench {args[0]}: error: ") for line in lines), err
    return [line.removeprefix(f"kdbench {args[0]}: error: ") for line in lines]


def write(tmp_path, spec: dict, name: str = "s") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(dump_yaml({"name": name, **spec}))
    return str(path)


def test_a_study_with_three_bad_locations_reports_all_three_at_once_one_line_each(tmp_path):
    """Guarantee: Every problem of a spec is reported in one pass, one line each in the same format: every section,
    every method's terms, every grid value, every generated run and every location; a value gets its close match
    (`'cwdd'` -> `'cwd'`, a misspelled config -> the closest configs, a method axis value -> the closest
    method); a problem of a generated run names where the user wrote the culprit (`grid.term.params.tau[1] ...
    (on method cwd)`, or `base.<key>` with the runs it breaks, by their method and axis values)."""
    methods = {f"m{i}": {**CWD, "student_location": where, "teacher_location": "decode_head.conv_seg"}
               for i, where in enumerate(["decode_head.conv_sg", "decode_head.bottlenek", "backbone.nope"])}
    path = write(tmp_path, {"base": {**TINY_BASE, "teacher": {"config": "tiny_seg_teacher", "checkpoint": "t.pth"}},
                            "methods": methods})
    lines = errors_of("plan", path, "--results", str(tmp_path / "r"), "--no-data-check")
    assert lines == [
        f"{path}: methods.m0.student_location: 'decode_head.conv_sg' is not in the student model (tiny_seg_student);"
        " close matches: decode_head.conv_seg, decode_head, decode_head.bottleneck.conv",
        f"{path}: methods.m1.student_location: 'decode_head.bottlenek' is not in the student model "
        "(tiny_seg_student); close matches: decode_head.bottleneck, decode_head.bottleneck.bn, "
        "decode_head.bottleneck.conv",
        f"{path}: methods.m2.student_location: 'backbone.nope' is not in the student model (tiny_seg_student)"
        + lines[2].split("(tiny_seg_student)")[1],
    ]
    assert not (tmp_path / "r").exists()


def test_every_section_of_a_spec_is_checked_in_one_pass_with_close_matches_on_values(tmp_path):
    """Guarantee: Every section of a spec is checked in one pass with close matches on values."""
    path = write(tmp_path, {
        "base": {**TINY_BASE, "schedule": {**TINY_BASE["schedule"], "optimizer": "adamx"}},
        "methods": {"cwd_tau1": {**CWD, "method": "cwdd"}, "pi": {**CWD, "method": "pi", "weight": -1}},
        "grid": {"method": ["cwd_tau1", "pii"]},
        "resources": {"qos": "a b", "sbatch": ["--mail-tpye=END", "--time=5"]}})
    assert errors_of("plan", path) == [
        f"{path}: base.schedule.optimizer: 'adamx' is not valid (did you mean 'adamw'?); valid: sgd, adamw",
        f"{path}: methods.cwd_tau1.method: 'cwdd' is not valid (did you mean 'cwd'?); valid: "
        + ", ".join(losses.available())    # plugins other tests loaded are registered too
        + "; or add one as a plugin (README, Your own loss)",
        f"{path}: methods.pi.weight: must be >= 0, got -1",
        f"{path}: resources.qos: 'a b' must be letters, digits, '_', '-' or '.'",
        f"{path}: resources.sbatch[0]: --mail-tpye is not an sbatch option (did you mean '--mail-type'?)",
        f"{path}: resources.sbatch[1]: --time is set by kdbench; set it with resources.time_min",
        f"{path}: grid.method[1]: 'pii' is not in methods (did you mean 'pi'?); valid: cwd_tau1, pi",
    ]


def test_a_config_name_typo_gets_the_closest_configs(tmp_path):
    """Guarantee: A config name typo gets the closest configs."""
    path = write(tmp_path, {"base": {**TINY_BASE, "student": {"config": "tiny_seg_studnt"}}, "methods": {}})
    [line] = errors_of("plan", path, "--no-model-check")
    assert line.startswith(f"{path}: base.student.config: config 'tiny_seg_studnt' does not exist "
                           "(did you mean 'tiny_seg_student'")


def test_a_problem_of_a_generated_run_is_named_by_where_the_user_wrote_it(tmp_path):
    """Guarantee: A problem of a generated run is named by where the user wrote it.

    An axis value by its place in the grid (and the method it was set on), a base value once for
    every run it breaks, a base value that breaks only some runs with those runs named by their
    method and axis values."""
    base = {**TINY_BASE, "teacher": {"config": "tiny_seg_teacher", "checkpoint": "t.pth"},
            "schedule": {**TINY_BASE["schedule"], "lr": -0.1, "val_interval": 6}}
    path = write(tmp_path, {"base": base, "methods": {"cwd": CWD, "at": {**CWD, "method": "at", "params": {}}},
                            "grid": {"method": ["cwd"], "term.params.tau": [1.0, -4.0],
                                     "schedule.iterations": [4, 8]}})
    assert errors_of("plan", path) == [
        f"{path}: base.schedule.lr: must be a number > 0, got -0.1",
        f"{path}: base.schedule.val_interval: 6 is more than the run's 4 iterations: it would never be reached "
        "(in the student baseline, schedule.iterations 4; method cwd, schedule.iterations 4, term.params.tau 1.0; "
        "method cwd, schedule.iterations 4, term.params.tau -4.0)",
        f"{path}: grid.term.params.tau[1]: tau must be a finite number > 0, got -4.0 (on method cwd)",
    ]


def test_options_are_checked_before_the_spec_and_before_any_output(tmp_path):
    """Guarantee: `launch` checks every option before the spec and before any output (`--executor locla` gets `did you
    mean 'local'`; an option of the other executor is refused); `bench` checks its case and method names before
    any suite prints a line.

    A bad option is refused even with a bad spec, before a line of the plan is printed."""
    lines = errors_of("launch", str(tmp_path / "missing.yaml"), "--executor", "locla", "--dry-run",
                      "--parallel", "0", "--account", "a;b")
    assert lines == ["--executor: 'locla' is not valid (did you mean 'local'?); valid: local, slurm",
                     "--parallel: must be >= 1, got 0",
                     "--account: 'a;b' must be letters, digits, '_', '-' or '.'"]
    assert errors_of("launch", "studies/smoke.yaml", "--executor", "slurm", "--parallel", "2") == [
        "--parallel: applies to --executor local only, not slurm"]
    assert errors_of("launch", "studies/smoke.yaml", "--array-parallelism", "2") == [
        "--array-parallelism: applies to --executor slurm only, not local"]


def test_the_slurm_site_settings_are_read_checked_and_written_into_the_batch_script(tmp_path):
    """Guarantee: SLURM site settings (account, QOS, constraint, exclude, reservation, extra sbatch options) reach the
    batch script and the real scheduler; a request no node can give is refused by sbatch in one line;
    `--dry-run` shows each array, its throttle, resources, dependencies and log folder, and the logs are there."""
    from submitit.slurm.slurm import _make_sbatch_string

    from runners.launch.slurm import SlurmExecutor

    site = {"account": "lab-1", "qos": "high", "constraint": "a100|h100", "exclude": "node[01-04],gpu7",
            "reservation": "kd.week", "sbatch": ["--mail-type=END", "--requeue", "--comment=kd study"]}
    spec = load_spec(write_study(tmp_path, "site", resources={"gpus": 1, **site}))
    assert spec.resources.sbatch == ("--mail-type=END", "--requeue", "--comment=kd study")
    executor = SlurmExecutor(spec.resources, "site").executor_for(tmp_path, "student", ["12"])
    slurm = executor._executor
    lines = _make_sbatch_string(command="true", folder=slurm.folder, **slurm.parameters).splitlines()
    for line in ("--account=lab-1", "--qos=high", "--constraint='a100|h100'", "--exclude='node[01-04],gpu7'",
                 "--reservation=kd.week", "--mail-type=END", "--requeue", "--comment='kd study'",
                 "--dependency=afterok:12"):
        assert f"#SBATCH {line}" in lines


@pytest.mark.parametrize("key, value, message", [
    ("constraint", "a100; rm -rf", r"resources\.constraint: 'a100; rm -rf' must be node features"),
    ("exclude", "node 1", r"resources\.exclude: 'node 1' must be a host list"),
    ("sbatch", ["--partition=x"], r"resources\.sbatch\[0\]: --partition is set by kdbench; set it with "
                                  r"resources\.partition"),
    ("sbatch", "--requeue", r"resources\.sbatch: must be a list"),
    ("sbatch", ["--comment=a\nb"], r"resources\.sbatch\[0\]: .* must be printable text"),
])
def test_a_bad_site_setting_is_refused_naming_its_key(tmp_path, key, value, message):
    """Guarantee: A bad site setting is refused naming its key."""
    with pytest.raises(UserError, match=message):
        load_spec(write_study(tmp_path, "bad_site", resources={key: value}))


def test_a_slurm_dry_run_shows_the_arrays_their_throttles_resources_dependencies_and_logs(tmp_path):
    """Guarantee: A slurm dry run shows the arrays their throttles resources dependencies and logs."""
    path = write_study(tmp_path, "dry", methods={"cwd": CWD}, seeds=(0, 1, 2),
                       resources={"gpus": 0, "cpus": 2, "mem_gb": 3, "time_min": 20, "account": "lab",
                                  "sbatch": ["--mail-type=END"]})
    results = tmp_path / "results"
    code, out, err = run_cli("launch", str(path), "--executor", "slurm", "--dry-run", "--results", str(results),
                             "--array-parallelism", "2")
    assert code == 0, err
    directory = results / "dry"
    shown, _, rest = out.split("would submit to SLURM:\n")[1].rpartition("\n(")
    checked, _, tail = rest.partition(")\n")
    assert checked in ("the resources fit the cluster's nodes",
                       "no SLURM controller answers here: the resources are not checked against its nodes")
    assert shown + "\n" + tail == f"""\
[1] sbatch array kdbench-dry-teacher: 1 task(s), at most 1 at once (--array=0-0%1)
  per task: 0 GPU(s), 2 CPU(s) x 1 task(s), 3 GB, 20 min, partition (the cluster default), --account=lab --mail-type=END
  after: nothing (starts when scheduled)
  logs: {directory}/.submitit/<job>_<task>/<job>_<task>_0_log.out and _0_log.err
  runs: teacher
[2] sbatch array kdbench-dry-student: 3 task(s), at most 2 at once (--array=0-2%2)
  per task: 0 GPU(s), 2 CPU(s) x 1 task(s), 3 GB, 20 min, partition (the cluster default), --account=lab --mail-type=END
  after: nothing (starts when scheduled)
  logs: {directory}/.submitit/<job>_<task>/<job>_<task>_0_log.out and _0_log.err
  runs: student_s0, student_s1, student_s2
[3] sbatch array kdbench-dry-student: 3 task(s), at most 2 at once (--array=0-2%2)
  per task: 0 GPU(s), 2 CPU(s) x 1 task(s), 3 GB, 20 min, partition (the cluster default), --account=lab --mail-type=END
  after: array [1] complete (afterok; cancelled if one fails)
  logs: {directory}/.submitit/<job>_<task>/<job>_<task>_0_log.out and _0_log.err
  runs: cwd_s0, cwd_s1, cwd_s2
kdbench launch: dry: would submit 7
"""
    assert not list(directory.glob("*/run.json")) and not list(directory.glob("*/job.json"))


@pytest.mark.slurm
@pytest.mark.slow
def test_site_settings_reach_the_real_scheduler_and_the_logs_are_where_the_dry_run_says(slurm_cluster, tmp_path,
                                                                                         monkeypatch):
    """Guarantee: Site settings reach the real scheduler and the logs are where the dry run says.

    On the local cluster (account root, QOS normal): the job carries the study's account, QOS and
    extra option, and its log is in the folder the dry run names; a request no node
    can give (its only node excluded) is refused by sbatch in one line, nothing recorded."""
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "data"))
    site = {"gpus": 0, "cpus": 1, "mem_gb": 2, "time_min": 30, "account": "root", "qos": "normal",
            "sbatch": ["--comment=kdbench-site"]}
    path = write_study(tmp_path, "site_real", methods={}, resources=site,
                       baselines={"teacher": False, "student": True})
    study = load_study(path, tmp_path / "results")
    launch(study, LaunchOptions(executor="slurm", progress=False))
    [run] = study.runs
    job = (study.directory / run.run_id / "job.json").read_text()
    job_id = yaml.safe_load(job)["job_id"]
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert "Account=root" in shown and "QOS=normal" in shown and "Comment=kdbench-site" in shown
    # The log appears as the job starts; the job is then cancelled: how it trains is not this test's matter.
    log = study.directory / ".submitit" / job_id / f"{job_id}_0_log.out"
    wait_until(log.is_file, what="the job's log in the folder the dry run names")
    cancel(study)
    wait_until(lambda: slurm_states([job_id]).get(job_id, "").startswith(("CANCELLED", "COMPLETED")),
               what="the job to end")

    spec = yaml.safe_load(path.read_text())
    spec["resources"]["exclude"] = socket.gethostname().split(".")[0]   # the cluster's only node
    path.write_text(dump_yaml({**spec, "name": "site_refused"}))
    refused = load_study(path, tmp_path / "results")
    with pytest.raises(UserError, match=r"sbatch refused the student array of site_refused: .*node"):
        launch(refused, LaunchOptions(executor="slurm", progress=False))
    assert not list(refused.directory.glob("*/job.json"))


def test_bench_checks_its_names_before_any_suite_prints_a_line():
    """Guarantee: Bench checks its names before any suite prints a line.

    --suite all runs the grid suite first: a misspelled step case is refused before it, not after."""
    code, out, err = run_cli("bench", "--suite", "all", "--cases", "tiny_cwd_logit", "--repeats", "1")
    assert (code, out) == (2, "")
    assert err.strip() == ("kdbench bench: error: --cases: unknown step case 'tiny_cwd_logit' (did you mean "
                           "'tiny_cwd_logits'?); valid: tiny_cwd_logits, tiny_cwd_feature, pspnet_r101_r18_cwd_logits, "
                           "pspnet_r101_r18_cwd_feature")
    assert errors_of("bench", "--suite", "grid", "--methods", "cwd") == [
        "--methods: applies to --suite losses (or all), not grid"]


def test_a_misspelled_loss_parameter_value_gets_its_close_match(tmp_path):
    """Guarantee: A misspelled loss parameter value gets its close match."""
    path = write(tmp_path, {"base": {**TINY_BASE, "teacher": {"config": "tiny_seg_teacher", "checkpoint": "t.pth"}},
                            "methods": {"nd": {**CWD, "method": "norm_divergence", "params": {"norm": "channl"}}}})
    assert errors_of("plan", path) == [f"{path}: methods.nd.params: unknown norm 'channl' (did you mean 'channel'?); "
                                       "valid: channel, spatial, channel_mean, none"]
