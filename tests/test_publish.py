"""``kdbench report`` also writes the study's cells as an OpenMMLab metafile (metafile.yml) and a
flat TSV (results.tsv), from the hand-written results store of tests/results_fixtures.py."""

import csv
import math

import pytest
import yaml

from kdbench.stages import load_study
from tests.launch_helpers import run_cli
from tests.results_fixtures import SCRIPT, make_store


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    study, results = make_store(tmp_path_factory.mktemp("publish"))
    code, out, err = run_cli("report", str(study.path), "--results", str(results), "--format", "md")
    assert code == 0, err
    report = results / "fixture" / "report"
    runs = {p.name: p.run_id for p in load_study(study.path, results).runs}
    return out, report, runs, results / "fixture"


def test_the_report_writes_a_metafile_and_a_tsv_whatever_the_formats_and_says_where(published):
    out, report, _, _ = published
    assert f"kdbench report: fixture: metafile: {report / 'metafile.yml'}" in out
    assert f"kdbench report: fixture: tsv: {report / 'results.tsv'}" in out


def test_the_metafile_has_one_model_per_cell_with_teacher_student_metrics_config_and_weights(published):
    """Guarantee: `kdbench report` writes `metafile.yml` (OpenMMLab style) and `results.tsv`, one entry and one row per
    cell with its numbers, config and weights."""
    _, report, runs, directory = published
    index = yaml.safe_load((report / "metafile.yml").read_text())
    assert index["Collections"] == [{"Name": "fixture", "Metadata": {"Training Data": ["fashion_scenes"]},
                                     "README": "README.md"}]
    models = {m["Name"]: m for m in index["Models"]}
    assert set(models) == {"cwd_logits", "pi_logits", SCRIPT}
    cwd = models["cwd_logits"]
    assert cwd["In Collection"] == "fixture"
    assert (cwd["Metadata"]["Teacher"], cwd["Metadata"]["Student"], cwd["Metadata"]["Distillation"]) \
        == ("tiny_seg_teacher", "tiny_seg_student", "cwd")
    assert cwd["Metadata"]["Run ids"] == [runs[f"cwd_logits_s{i}"] for i in range(3)]
    (result,) = cwd["Results"]
    assert (result["Task"], result["Dataset"]) == ("Semantic Segmentation", "fashion_scenes")
    metrics = result["Metrics"]
    assert (metrics["mIoU"], metrics["mIoU n"], metrics["student baseline mIoU"], metrics["teacher mIoU"]) \
        == (35.5, 2, 31.0, 50.0)
    assert metrics["mIoU std"] == pytest.approx(math.sqrt(0.5)) and metrics["delta mIoU"] == pytest.approx(4.5)
    first = directory / runs["cwd_logits_s0"]           # the first complete seed's run
    assert (cwd["Config"], cwd["Weights"]) == (str(first / "spec.json"), str(first / "model_final.pth"))
    assert models["pi_logits"]["Results"][0]["Metrics"]["mIoU std"] is None  # one finite run: no spread


def test_the_tsv_has_one_row_per_cell_with_the_same_numbers_and_names_kept_literal(published):
    """Guarantee: The tsv has one row per cell with the same numbers and names kept literal."""
    _, report, runs, directory = published
    with (report / "results.tsv").open(newline="") as handle:
        rows = {r["cell"]: r for r in csv.DictReader(handle, delimiter="\t")}
    assert set(rows) == {"cwd_logits", "pi_logits", SCRIPT}
    cwd = rows["cwd_logits"]
    assert (float(cwd["mIoU_mean"]), int(cwd["mIoU_n"]), float(cwd["baseline_mIoU_mean"]), float(cwd["delta_mIoU"]),
            float(cwd["teacher_mIoU_mean"])) == (35.5, 2, 31.0, 4.5, 50.0)
    assert (cwd["runs"], cwd["complete"], cwd["teacher"], cwd["student"]) == ("3", "2", "tiny_seg_teacher",
                                                                             "tiny_seg_student")
    assert cwd["checkpoint"] == str(directory / runs["cwd_logits_s0"] / "model_final.pth")
    assert float(rows[SCRIPT]["mIoU_mean"]) == 21.0 and rows[SCRIPT]["method"] == SCRIPT


def test_a_cell_without_a_complete_run_has_no_metric_and_no_weights(tmp_path):
    study, results = make_store(tmp_path, {"pi_logits_s0": "failed", "pi_logits_s2": "diverged"})
    assert run_cli("report", str(study.path), "--results", str(results), "--format", "md")[0] == 0
    index = yaml.safe_load((results / "fixture" / "report" / "metafile.yml").read_text())
    (pi,) = [m for m in index["Models"] if m["Name"] == "pi_logits"]
    assert pi["Weights"] is None and pi["Config"] is None and pi["Results"][0]["Metrics"]["mIoU"] is None
    assert pi["Metadata"]["Complete runs"] == 0
