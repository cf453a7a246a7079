"""Study specs: every shipped study plans, grids expand as specified, ids are stable. Malformed
specs are in the bad-input corpus (tests/bad_inputs/, tests/test_bad_inputs.py)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdbench.spec import TeacherRun
from kdbench.stages import load_study
from tests.launch_helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p for p in (ROOT / "studies").glob("[!_]*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_every_shipped_study_plans_on_a_machine_without_its_data_or_weights(path, tmp_path, monkeypatch):
    """Guarantee: `plan` works on a machine without the data or the weights: the grid, then each missing thing as the
    line a launch would refuse with, exit 0; `launch` and `run` refuse; a defaults file given as a study is one
    line.

    Neither Cityscapes nor COCO is on this machine: plan shows the grid and lists what a launch
    needs (the data; the weights to fetch where the cache lacks them), exit 0."""
    code, out, err = run_cli("plan", str(path), "--results", str(tmp_path))
    assert code == 0, err
    assert re.search(r"study \S+: \d+ runs", out)
    if "cityscapes" in path.read_text() or "coco" in path.read_text():
        needs = out.split("Before kdbench launch can run this study, it needs:\n")[1]
        assert "base.dataset.root: " in needs
        assert "kdbench fetch " in needs or "absent" not in out  # weights: listed unless all cached


def test_a_defaults_file_given_as_a_study_is_one_line_naming_the_studies_that_use_it():
    """Guarantee: A defaults file given as a study is one line naming the studies that use it."""
    code, out, err = run_cli("plan", str(ROOT / "studies" / "_paper_cityscapes.yaml"))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "_paper_cityscapes.yaml: a defaults file (its name starts with _), not a study: a study names it with " \
           "`defaults: _paper_cityscapes.yaml`; the studies that use it: ablation_location.yaml" in err


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
    assert cwd.depends_on == (teacher.run_id,)
    assert cwd.run.teacher.checkpoint == TeacherRun(f"results/smoke/{teacher.run_id}")
    baseline = next(r for r in study.runs if r.name == "student_s0")
    assert baseline.depends_on == () and baseline.run.distill == () and baseline.run.teacher is None


def test_run_ids_do_not_depend_on_where_the_results_live():
    here = [r.run_id for r in load_study(ROOT / "studies" / "smoke.yaml", "results").runs]
    there = [r.run_id for r in load_study(ROOT / "studies" / "smoke.yaml", "/elsewhere/results").runs]
    assert here == there and len(set(here)) == len(here)


def test_plan_json_ids_are_identical_across_two_processes(tmp_path):
    """Guarantee: Plan json ids are identical across two processes."""
    outputs = []
    for hashseed in ("1", "2"):  # each process computes its ids: no cache holds them
        command = [sys.executable, "-m", "kdbench.cli", "plan", "studies/ablation_temperature.yaml", "--json",
                   "--no-model-check", "--no-data-check", "--results", str(tmp_path)]
        env = {"PYTHONHASHSEED": hashseed, "PATH": "/usr/bin:/bin", "KDBENCH_CACHE": str(tmp_path / f"cache{hashseed}")}
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True, env=env)
        assert not (tmp_path / f"cache{hashseed}").exists(), "planning without the model check caches nothing"
        outputs.append(json.loads(result.stdout))
    assert outputs[0] == outputs[1]
    row = outputs[0][-1]
    assert {"run_id", "name", "stage", "status", "params"} <= set(row)
    assert row["params"]["term.params.tau"] == 10 and row["status"] == "missing"


def test_a_term_axis_sets_every_term_and_names_runs_after_the_varying_axes():
    study = load_study(ROOT / "studies" / "ablation_norm_divergence.yaml")
    cell = next(r for r in study.runs if r.name == "logits_spatial_mse_s1")
    assert cell.run.distill[0].params == {"norm": "spatial", "divergence": "mse", "tau": 4.0}
    assert cell.run.seed == 1


def test_zipped_axes_vary_together(tmp_path):
    study = load_study(ROOT / "studies" / "paper_table6_coco.yaml")
    pairs = {(r.run.teacher.config.split("/")[-1], r.run.student.config.split("/")[-1])
             for r in study.runs if r.kind == "cell"}
    assert pairs == {("faster-rcnn_r101_fpn_2x_coco.py", "faster-rcnn_r50_fpn_2x_coco.py"),
                     ("retinanet_r101_fpn_2x_coco.py", "retinanet_r50_fpn_2x_coco.py"),
                     ("reppoints-moment_r101_fpn-gn_head-gn_2x_coco.py",
                      "reppoints-moment_r50_fpn-gn_head-gn_2x_coco.py")}


def test_a_new_revision_gives_every_run_a_new_id(tmp_path):
    text = (ROOT / "studies" / "smoke.yaml").read_text()
    revised = tmp_path / "smoke.yaml"
    revised.write_text(text + "\nrevision: 1\n")
    old = {r.name: r.run_id for r in load_study(ROOT / "studies" / "smoke.yaml").runs}
    new = {r.name: r.run_id for r in load_study(revised).runs}
    assert old.keys() == new.keys() and not set(old.values()) & set(new.values())


SMALL_STUDY = """
name: small
base:
  task: seg
  teacher: {config: tiny_seg_teacher}
  student: {config: tiny_seg_student}
  dataset: {name: fashion_scenes}
  schedule: {iterations: 10}
methods:
  cwd_logits: {method: cwd, params: {tau: 4.0}, weight: 3.0, student_location: decode_head.conv_seg}
  pi_logits: {method: pi, weight: 10.0, student_location: decode_head.conv_seg}
grid:
  method: [cwd_logits, pi_logits]
  term.params.tau: [1, 2, 4]
exclude:
  - {method: pi_logits, term.params.tau: 2}
  - {method: pi_logits, term.params.tau: 4}
seeds: [0, 1]
"""


def test_exclusions_remove_exactly_the_cells_whose_listed_axes_all_match(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_STUDY)
    cells = {(r.params["method"], r.params["term.params.tau"], r.run.seed)
             for r in load_study(path).runs if r.kind == "cell"}
    assert cells == {(m, tau, seed) for m, tau in [("cwd_logits", 1), ("cwd_logits", 2), ("cwd_logits", 4),
                                                   ("pi_logits", 1)] for seed in (0, 1)}


def test_resources_do_not_change_run_ids_but_a_number_changing_field_does(tmp_path):
    def ids(text):
        path = tmp_path / "small.yaml"
        path.write_text(text)
        return {r.name: r.run_id for r in load_study(path).runs}

    base = ids(SMALL_STUDY)
    assert ids(SMALL_STUDY + "resources: {gpus: 4, cpus: 16, mem_gb: 64, time_min: 600, partition: big}\n") == base
    changed = ids(SMALL_STUDY.replace("iterations: 10", "iterations: 11"))
    assert changed.keys() == base.keys() and not set(changed.values()) & set(base.values())


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "studies" / "references").glob("*.csv")))
def test_each_published_reference_row_has_a_number_its_source_and_a_comparability_tag(name):
    """Guarantee: Every published row carries its source and a comparability tag (the official code's committed tau
    sweep, CIRKD's CWD + KD + adversarial rows, PaddleDetection's 2x-against-1x rows, the CWD authors' detection
    run); a row that states its tau and weight sits beside the cell of that tau and weight only."""
    import pandas as pd

    table = pd.read_csv(ROOT / "studies" / "references" / name)
    assert {"method", "location", "dataset", "metric", "value", "source", "tag"} <= set(table.columns)
    if table.empty:  # a paper whose table is an image (paper_voc.csv): the report says "no published number"
        return
    assert table["source"].notna().all() and (table["source"].str.len() > 10).all()
    assert table["tag"].notna().all() and (table["tag"].str.len() > 10).all()
    assert table["value"].between(0, 100).all()


def test_every_reference_file_is_used_by_a_shipped_study():
    """Guarantee: Every reference file is used by a shipped study."""
    used = {name for path in STUDIES for name in load_study(path).spec.references}
    assert used == {p.name for p in (ROOT / "studies" / "references").glob("*.csv")}


def test_the_official_codes_committed_tau_sweep_sits_beside_the_feature_map_cells_of_the_same_tau_and_weight():
    """Guarantee: The official codes committed tau sweep sits beside the feature map cells of the same tau and weight.

    torchdistiller_logs.csv rows state their tau and weight: each weight-35 row matches the one
    cwd_feature_w35 cell at its tau; the weight-40 rows match no cell."""
    from analysis import references
    from tests.results_fixtures import cell_record

    study = load_study(ROOT / "studies" / "ablation_temperature.yaml", "/tmp/none")
    cells = [cell_record(p.params["method"], {"term.params.tau": p.params["term.params.tau"]}, dataset="cityscapes",
                         location_kind="feature" if "feature" in p.params["method"] else "logits", kd_method="cwd")
             for p in study.runs if p.kind == "cell" and p.run.seed == 0]
    published = references.read_references(study.path, ["torchdistiller_logs.csv"])
    matches = references.match_references(published, cells, study.spec.methods, "seg")
    paired = {(m.reference["weight"], m.reference["tau"]): m.cell and (m.cell.method, m.cell.axes["term.params.tau"])
              for m in matches}
    assert paired[(35, 4)] == ("cwd_feature_w35", 4) and paired[(35, 10)] == ("cwd_feature_w35", 10)
    assert all(cell == ("cwd_feature_w35", tau) for (weight, tau), cell in paired.items() if weight == 35)
    assert all(cell is None for (weight, _), cell in paired.items() if weight == 40)


def test_the_paper_table2_references_cover_every_cell_of_its_study():
    import pandas as pd

    table = pd.read_csv(ROOT / "studies" / "references" / "paper_table2.csv")
    published = set(zip(table["method"], table["location"]))
    study = load_study(ROOT / "studies" / "paper_table2_cityscapes.yaml")
    cells = {tuple(r.params["method"].split("_")) for r in study.runs if r.kind == "cell"}
    assert cells <= published
    assert table.loc[(table["method"] == "cwd") & (table["location"] == "logits"), "value"].item() == 74.87


def test_each_paper_table6_cell_distils_from_its_own_zipped_model_zoo_teacher_checked_against_its_ap():
    """Guarantee: Each paper table6 cell distils from its own zipped model zoo teacher checked against its ap.

    Table 6 zips each detector's R101 2x teacher config, its model-zoo checkpoint and published
    AP with its R50 2x student and learning rate: three evaluated teachers, each with its own
    expectation, and each cell's run pairs the detector's own teacher and student."""
    study = load_study(ROOT / "studies" / "paper_table6_coco.yaml", "/tmp/results")
    teachers = [p for p in study.runs if p.kind == "teacher"]
    assert [(p.name, p.run.schedule.iterations, p.run.teacher.expect.value) for p in teachers] == [
        ("teacher_faster-rcnn_r101_fpn_2x_coco", 0, 39.8), ("teacher_retinanet_r101_fpn_2x_coco", 0, 38.9),
        ("teacher_reppoints-moment_r101_fpn-gn_head-gn_2x_coco", 0, 40.5)]
    assert all(p.run.teacher.checkpoint.startswith("https://download.openmmlab.com/mmdetection/") for p in teachers)
    cells = [p for p in study.runs if p.kind == "cell"]
    assert len(cells) == 18 and {c.run.distill[0].student_location for c in cells} == {
        ("neck[*]",), ("neck[0]",)}
    fbkd = next(c for c in cells if c.params["method"] == "fbkd_fpn").run.distill
    assert [(t.name, t.params.get("maxpool_stride", 2)) for t in fbkd] == [
        ("fbkd_p0", 8), ("fbkd_p1", 4), ("fbkd_p2", 2), ("fbkd_p3", 2)]
    for cell in cells:
        detector = cell.run.student.config.split("/")[-1].split("_r50")[0]
        assert cell.run.teacher.config.split("/")[-1].startswith(detector) and "_2x_" in cell.run.student.config
        assert cell.run.schedule.lr == (0.02 if detector == "faster-rcnn" else 0.01)


def _lr_study(tmp_path: Path, teacher_run: dict | None = None, checkpoint=None) -> list:
    from tests.launch_helpers import TINY_BASE, write_study

    extra = {"grid": {"schedule.lr": [0.01, 0.02]},
             "base": {**TINY_BASE, "teacher": {**TINY_BASE["teacher"], "checkpoint": checkpoint}}}
    if teacher_run:
        extra["teacher_run"] = teacher_run
    tmp_path.mkdir(exist_ok=True)
    return load_study(write_study(tmp_path, "lr_axis", seeds=(0,), **extra), tmp_path / "r").runs


def test_a_schedule_axis_reaches_a_trained_teacher_run_and_its_id(tmp_path):
    """Guarantee: An axis value a teacher run shares with its cells (its schedule, teacher, dataset) reaches the
    teacher run and its run id: Table 6's zipped learning rates train each R101 teacher at its own rate;
    `teacher_run.schedule` wins where it sets a key."""
    runs = _lr_study(tmp_path)
    teachers = [p for p in runs if p.kind == "teacher"]
    assert sorted(p.run.schedule.lr for p in teachers) == [0.01, 0.02]
    assert len({p.run_id for p in teachers}) == 2
    by_id = {p.run_id: p for p in runs}
    for cell in (p for p in runs if p.kind == "cell"):
        assert by_id[cell.depends_on[0]].run.schedule.lr == cell.run.schedule.lr


def test_teacher_run_schedule_wins_over_an_axis_and_a_checkpoint_is_evaluated_once(tmp_path):
    """Guarantee: Teacher run schedule wins over an axis and a checkpoint is evaluated once."""
    pinned = _lr_study(tmp_path / "a", teacher_run={"schedule": {"lr": 0.05}})
    assert [p.run.schedule.lr for p in pinned if p.kind == "teacher"] == [0.05]
    evaluated = _lr_study(tmp_path / "b", checkpoint="/ckpt/teacher.pth")
    assert [p.run.schedule.iterations for p in evaluated if p.kind == "teacher"] == [0]


def test_a_teacher_without_an_expectation_is_gated_on_the_published_rows_teacher_value_when_they_agree(tmp_path):
    """Guarantee: A teacher without an expectation is gated on the published rows teacher value when they agree."""
    from tests.launch_helpers import TINY_BASE, write_study

    (tmp_path / "references").mkdir()
    header = "method,location,dataset,teacher,student,metric,value,teacher_value,student_value,n_runs,source,tag\n"
    (tmp_path / "references" / "one.csv").write_text(
        header + 'cwd,logits,fashion_scenes_val,t,s,mIoU,40,55.5,30,3,"A Paper, Table 1","same"\n'
        'pi,logits,fashion_scenes_val,t,s,mIoU,38,55.5,30,3,"A Paper, Table 1","same"\n')
    (tmp_path / "references" / "two.csv").write_text(
        header + 'cwd,logits,fashion_scenes_val,t2,s,mIoU,41,60.0,30,1,"Another Paper","another teacher"\n')

    def teacher_expect(references, base=TINY_BASE):
        path = write_study(tmp_path, "gated", references=references, base=base)
        return next(p for p in load_study(path, tmp_path / "r").runs if p.kind == "teacher").run.teacher.expect

    implied = teacher_expect(["one.csv"])
    assert (implied.metric, implied.value, implied.tolerance) == ("val/mIoU", 55.5, 1.0)
    assert teacher_expect(["one.csv", "two.csv"]) is None  # two teachers: nothing implied
    explicit = {**TINY_BASE, "teacher": {**TINY_BASE["teacher"], "expect": {"metric": "val/mIoU", "value": 9.0}}}
    assert teacher_expect(["one.csv"], explicit).value == 9.0
