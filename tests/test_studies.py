"""Study specs: every shipped study plans, grids expand as specified, ids are stable. Malformed
specs are in the bad-input corpus (tests/bad_inputs/, tests/test_bad_inputs.py)."""

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdbench.cli import main
from kdbench.study import load_study

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p for p in (ROOT / "studies").glob("[!_]*.yaml"))


def run_cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_every_shipped_study_plans(path, tmp_path):
    # the cityscapes and COCO data are not on this machine: --no-data-check
    code, out, err = run_cli("plan", str(path), "--results", str(tmp_path), "--no-data-check")
    assert code == 0, err
    assert re.search(r"study \S+: \d+ runs", out)


def test_paper_table2_plans_13_cells_times_3_seeds_plus_baselines():
    study = load_study(ROOT / "studies" / "paper_table2_cityscapes.yaml")
    kinds = [r.kind for r in study.runs]
    assert kinds.count("cell") == 13 * 3
    assert kinds.count("student_baseline") == 3 and kinds.count("teacher") == 1
    cells = {r.params["method"] for r in study.runs if r.kind == "cell"}
    assert len(cells) == 13 and "ho_logits" in cells and "ho_feature" not in cells


def test_smoke_students_depend_on_the_teacher_stage_and_point_at_its_run():
    study = load_study(ROOT / "studies" / "smoke.yaml", "results")
    teacher = next(r for r in study.runs if r.stage == "teacher")
    cwd = next(r for r in study.runs if r.name == "cwd_logits_s0")
    assert cwd.depends_on == [teacher.run_id]
    assert cwd.run["teacher"]["checkpoint"] == {"run": f"results/smoke/{teacher.run_id}"}
    baseline = next(r for r in study.runs if r.name == "student_s0")
    assert baseline.depends_on == [] and baseline.run["distill"] == [] and "teacher" not in baseline.run


def test_run_ids_do_not_depend_on_where_the_results_live():
    here = [r.run_id for r in load_study(ROOT / "studies" / "smoke.yaml", "results").runs]
    there = [r.run_id for r in load_study(ROOT / "studies" / "smoke.yaml", "/elsewhere/results").runs]
    assert here == there and len(set(here)) == len(here)


def test_plan_json_ids_are_identical_across_two_processes(tmp_path):
    outputs = []
    for hashseed in ("1", "2"):
        command = [sys.executable, "-m", "kdbench.cli", "plan", "studies/ablation_temperature.yaml", "--json",
                   "--no-model-check", "--no-data-check", "--results", str(tmp_path)]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True,
                                env={"PYTHONHASHSEED": hashseed, "PATH": "/usr/bin:/bin"})
        outputs.append(json.loads(result.stdout))
    assert outputs[0] == outputs[1]
    row = outputs[0][-1]
    assert {"run_id", "name", "stage", "status", "params"} <= set(row)
    assert row["params"]["term.params.tau"] == 10 and row["status"] == "missing"


def test_a_term_axis_sets_every_term_and_names_runs_after_the_varying_axes():
    study = load_study(ROOT / "studies" / "ablation_norm_divergence.yaml")
    cell = next(r for r in study.runs if r.name == "logits_spatial_mse_s1")
    assert cell.run["distill"][0]["params"] == {"norm": "spatial", "divergence": "mse", "tau": 4.0}
    assert cell.run["seed"] == 1


def test_zipped_axes_vary_together(tmp_path):
    study = load_study(ROOT / "studies" / "paper_table6_coco.yaml")
    pairs = {(r.run["teacher"]["config"].split("/")[-1], r.run["student"]["config"].split("/")[-1])
             for r in study.runs if r.kind == "cell"}
    assert pairs == {("faster-rcnn_r101_fpn_2x_coco.py", "faster-rcnn_r50_fpn_1x_coco.py"),
                     ("retinanet_r101_fpn_2x_coco.py", "retinanet_r50_fpn_1x_coco.py"),
                     ("reppoints-moment_r101_fpn-gn_head-gn_2x_coco.py",
                      "reppoints-moment_r50_fpn-gn_head-gn_1x_coco.py")}


def test_a_new_revision_gives_every_run_a_new_id(tmp_path):
    text = (ROOT / "studies" / "smoke.yaml").read_text()
    revised = tmp_path / "smoke.yaml"
    revised.write_text(text + "\nrevision: 1\n")
    old = {r.name: r.run_id for r in load_study(ROOT / "studies" / "smoke.yaml").runs}
    new = {r.name: r.run_id for r in load_study(revised).runs}
    assert old.keys() == new.keys() and not set(old.values()) & set(new.values())
