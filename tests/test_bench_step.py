"""``kdbench bench --suite step`` times real KD steps (benchmarks are not timed tests: these check
what is measured, not how fast)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bench(*args):
    return subprocess.run([sys.executable, "-m", "kdbench.cli", "bench", "--suite", "step", *args], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_the_step_suite_times_kd_steps_of_the_smoke_study_and_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    page = tmp_path / "bench.md"
    result = bench("--cases", "tiny_cwd_logits,tiny_cwd_feature", "--repeats", "1", "--json", str(out),
                   "--markdown", str(page))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["suites"] == ["step"] and data["machine"]["cores"] >= 1
    rows = {r["case"]: r for r in data["results"]}
    assert set(rows) == {"tiny_cwd_logits", "tiny_cwd_feature"}
    assert rows["tiny_cwd_logits"]["locations"] == ["decode_head.conv_seg"]
    assert rows["tiny_cwd_logits"]["kd_losses"] == ["loss_kd_cwd_conv_seg"]
    assert rows["tiny_cwd_feature"]["locations"] == ["decode_head.bottleneck"] and rows["tiny_cwd_feature"]["adapter"]
    assert not rows["tiny_cwd_logits"]["adapter"]
    for row in rows.values():
        assert min(row["student_s"], row["teacher_s"], row["kd_s"], row["reference_s"]) > 0
        assert row["overhead"] == pytest.approx(row["kd_s"] / (row["student_s"] + row["teacher_s"]))
        assert row["kd_vs_reference"] == pytest.approx(row["kd_s"] / row["reference_s"])
        assert row["crop"] == [64, 64] and row["batch"] == 8 and not row["reduced"]
    assert "kd/(S+T)" in result.stdout and "tiny_cwd_feature" in result.stdout
    text = page.read_text()
    assert text.startswith("# kdbench benchmarks") and "## step" in text and "tiny_cwd_feature" in text
    assert data["machine"]["cpu"] in text


def test_an_unknown_step_case_is_a_one_line_error_naming_the_valid_ones():
    result = bench("--cases", "nope", "--repeats", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kdbench bench: error: --cases: unknown step case 'nope'; valid: tiny_cwd_logits, tiny_cwd_feature, "
        "pspnet_r101_r18_cwd_logits, pspnet_r101_r18_cwd_feature"]


def test_a_json_path_in_a_missing_directory_is_refused_before_anything_is_timed(tmp_path):
    result = bench("--json", str(tmp_path / "no" / "such" / "bench.json"))
    assert result.returncode == 2 and "==" not in result.stdout
    assert result.stderr.strip().splitlines() == [
        f"kdbench bench: error: --json: {tmp_path / 'no' / 'such' / 'bench.json'}: its directory does not exist"]


@pytest.mark.slow
def test_the_step_suite_times_a_case_under_bf16_autocast_with_the_kd_terms_in_the_step(tmp_path):
    out = tmp_path / "bench.json"
    result = bench("--cases", "tiny_cwd_logits", "--repeats", "1", "--precisions", "bf16", "--json", str(out))
    assert result.returncode == 0, result.stderr
    [row] = json.loads(out.read_text())["results"]
    assert row["precision"] == "bf16" and row["kd_losses"] == ["loss_kd_cwd_conv_seg"]
    assert min(row["student_s"], row["teacher_s"], row["kd_s"], row["reference_s"]) > 0
    assert "bf16" in result.stdout


def test_an_unknown_precision_for_the_step_suite_is_a_one_line_error():
    result = bench("--precisions", "fp8", "--repeats", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kdbench bench: error: --precisions: 'fp8'; valid: fp32, bf16, fp16"]
