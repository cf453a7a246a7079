"""A method's own axes (``methods.<name>.grid``): a sweep of one method beside baselines that do not
take its settings, in one study with one teacher and one set of student baselines, planned,
reported with its sweep figures and tables, and (slow) launched for real."""

import json
from pathlib import Path

import pytest
import yaml

from analysis import plots
from analysis.collect import collect
from kdbench.stages import load_study
from reports.render import render
from runners.launch.jobs import status
from runners.launch.launcher import LaunchOptions, launch
from tests.launch_helpers import dump_yaml, run_cli
from tests.results_fixtures import make_store, study_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "studies" / "examples" / "sweep_beside_baselines.yaml"
LOGITS, FEATURE = "decode_head.conv_seg", "decode_head.bottleneck"
SWEEP = {"cwd_logits": f"{{method: cwd, params: {{tau: 4.0}}, weight: 3.0, student_location: {LOGITS}, "
                       f"grid: {{term.params.tau: [1, 4], term.weight: [3, 10]}}}}",
         "at": f"{{method: at, weight: 1.0, student_location: {FEATURE}}}",
         "pi": f"{{method: pi, weight: 10.0, student_location: {LOGITS}}}"}


def names(study) -> list[str]:
    return [planned.name for planned in study.runs]


def test_a_method_s_own_axes_expand_only_that_method_beside_one_teacher_and_one_set_of_baselines(tmp_path):
    """Guarantee: A method's own axes (``methods.<name>.grid``) expand only that method: the other
    methods run once per seed, and every cell shares the study's teacher and student baselines."""
    study = load_study(EXAMPLE, tmp_path)
    sweep = [f"cwd_logits_tau{t}_w{w}_s{s}" for t in (1, 4) for w in (3, 10) for s in (0, 1)]
    assert names(study) == ["teacher", "student_s0", "student_s1", *sweep, "at_s0", "at_s1", "pi_s0", "pi_s1"]
    teacher = study.runs[0].run_id
    cells = [planned for planned in study.runs if planned.kind == "cell"]
    assert all(planned.depends_on == (teacher,) for planned in cells)
    by_name = {planned.name: planned for planned in study.runs}
    term = by_name["cwd_logits_tau1_w10_s0"].run.distill[0]
    assert (term.params["tau"], term.weight) == (1, 10)
    assert by_name["at_s0"].params == {"method": "at", "seed": 0}   # no axis of cwd's
    assert by_name["cwd_logits_tau4_w3_s1"].params == {"method": "cwd_logits", "term.params.tau": 4,
                                                       "term.weight": 3, "seed": 1}


def test_a_method_s_own_axes_leave_the_other_methods_runs_unchanged(tmp_path):
    """The sweep adds runs; the baselines, AT and PI keep the ids they have without it."""
    swept = load_study(EXAMPLE, tmp_path)
    spec = yaml.safe_load(EXAMPLE.read_text())
    del spec["methods"]["cwd_logits"]["grid"]
    (tmp_path / "plain.yaml").write_text(dump_yaml(spec))
    plain = load_study(tmp_path / "plain.yaml", tmp_path)
    kept = {planned.name: planned.run_id for planned in plain.runs if not planned.name.startswith("cwd")}
    assert kept == {planned.name: planned.run_id for planned in swept.runs if planned.name in kept}
    # the sweep's cell at the method's own setting (tau 4, weight 3) is the unswept method's run
    assert swept.by_id().get(next(p.run_id for p in plain.runs if p.name == "cwd_logits_s0")).name == \
        "cwd_logits_tau4_w3_s0"


def test_exclude_rules_and_run_counts_see_a_method_s_own_axes(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(study_text(SWEEP, "exclude: [{term.params.tau: 1, term.weight: 10}]\n"))
    study = load_study(path, tmp_path)
    cells = {planned.name.rsplit("_s", 1)[0] for planned in study.runs if planned.kind == "cell"}
    assert cells == {"cwd_logits_tau1_w3", "cwd_logits_tau4_w3", "cwd_logits_tau4_w10", "at", "pi"}
    code, _, err = run_cli("plan", str(path), "--no-data-check", "--no-model-check", "--max-runs", "17")
    assert code == 2 and "method (6) x seeds (3) = 18 runs" in err   # 4 cwd settings + at + pi


def test_a_method_s_own_axis_it_cannot_take_is_one_line_naming_the_method(tmp_path):
    bad = dict(SWEEP, at=f"{{method: at, student_location: {FEATURE}, grid: {{term.params.tau: [1, 4]}}}}")
    path = tmp_path / "s.yaml"
    path.write_text(study_text(bad))
    code, out, err = run_cli("plan", str(path), "--no-data-check", "--no-model-check")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"kdbench plan: error: {path}: methods.at.grid.term.params.tau: unknown key; "
                                        f"valid: (none) (on method at)"]


def sweep_outcomes() -> dict:
    """mIoU per run: CWD rises with tau and weight; AT and PI sit at fixed values."""
    found = {f"cwd_logits_tau{t}_w{w}_s{s}": 30.0 + t + w / 10 + s for t in (1, 4) for w in (3, 10) for s in (0, 1, 2)}
    return {**found, **{f"at_s{s}": 31.0 + s for s in range(3)}, **{f"pi_s{s}": 32.0 + s for s in range(3)}}


def test_the_report_draws_sweep_figures_and_the_ablation_grid_from_a_method_s_own_axes(tmp_path):
    """Guarantee: The sweep figures (tau, weight) and the ablation tables of a report draw from a
    method's own axes as from the study's: over the cells that have them, the other methods in "All cells"."""
    path_text = study_text(SWEEP)
    study, _ = make_store(tmp_path, sweep_outcomes(), path_text)
    md = render(study, ("md",))["md"].read_text()
    assert "![mIoU vs tau](sweep_tau.png)" in md and "![mIoU vs weight](sweep_weight.png)" in md
    assert "No sweep figures" not in md
    assert "tau nan" not in md and "weight nan" not in md and "| at |" in md   # at: no axis of cwd's in its label
    assert (study.directory / "report" / "sweep_tau.png").is_file()
    grid = md[md.index("Ablation: tau x weight"):]
    assert "| tau \\\\ weight | 3 | 10 |" in grid and "method(s): cwd\\_logits;" in grid
    frame = collect(study)
    assert set(plots._students(frame, "val/mIoU")["label"]) >= {"at", "pi", "cwd_logits, tau 1, weight 10"}
    figures = {f.key: f for f in plots.sweeps(frame, "val/mIoU")}
    assert set(figures["sweep_tau"].data["series"]) == {"cwd_logits, weight 3", "cwd_logits, weight 10"}
    assert set(figures["sweep_weight"].data["series"]) == {"cwd_logits, tau 1", "cwd_logits, tau 4"}
    rows = [line for line in md.splitlines() if line.startswith(("| at | — |", "| pi | — |"))]
    assert len(rows) == 2 and all(line.split(" | ")[1:3] == ["—", "—"] for line in rows), rows


@pytest.mark.slow  # 15 tiny training runs, two at a time, and the report
def test_the_sweep_example_launches_and_reports_with_its_sweep_figures(tmp_path, monkeypatch):
    """Guarantee: studies/examples/sweep_beside_baselines.yaml (CWD swept over tau x weight beside AT
    and PI) launches and reports with its sweep figures, shortened to a few iterations on a few images."""
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "data"))
    spec = yaml.safe_load(EXAMPLE.read_text())
    base = spec["base"]
    base["schedule"].update(iterations=4, batch_size=2, val_interval=2, checkpoint_interval=2)
    base["dataset"]["params"].update(num_train=8, num_val=4)
    spec["teacher_run"] = {"schedule": {"iterations": 4}}
    path = tmp_path / "sweep.yaml"
    path.write_text(dump_yaml(spec))
    study = load_study(path, tmp_path / "results")
    launch(study, LaunchOptions(parallel=2, progress=False))
    states = {run.name: run.state for run in status(study)}
    assert len(states) == 15 and set(states.values()) == {"complete"}, states
    # each run recorded how it was timed: the launch's runs at a time, the load, its start-up and evaluations
    cost = json.loads((study.directory / study.runs[-1].run_id / "final.json").read_text())["cost"]
    assert cost["parallel"] in (1, 2) and isinstance(cost["shared"], bool) and cost["load_average"] >= 0
    assert cost["startup_seconds"] > 0 and cost["evaluations"] == 2 and cost["evaluation_seconds"] > 0
    first = json.loads((study.directory / study.runs[1].run_id / "final.json").read_text())["cost"]
    assert first["parallel"] == 2 and first["shared"] is True   # student_s0 ran beside the teacher
    code, out, err = run_cli("report", str(path), "--results", str(tmp_path / "results"), "--format", "md")
    assert code == 0, err
    md = (study.directory / "report" / "README.md").read_text()
    for text in ("![mIoU vs tau](sweep_tau.png)", "![mIoU vs weight](sweep_weight.png)", "Ablation: tau x weight"):
        assert text in md
