"""tools/gpu_check.sh, the GPU acceptance check (benchmarks/gpu_check.py), as a real process: on a
GPU node at full size; here ``--device cpu --quick``, the same code at reduced sizes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def gpu_check(*args, timeout=900):
    return subprocess.run([str(ROOT / "tools" / "gpu_check.sh"), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHON": sys.executable})


@pytest.mark.slow
def test_the_quick_cpu_check_trains_both_precisions_steps_gfl_and_writes_one_json_that_passes(tmp_path):
    """Guarantee: The GPU acceptance check runs in one command and writes one JSON (here `--device cpu --quick`)."""
    out = tmp_path / "check.json"
    result = gpu_check("--device", "cpu", "--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["passed"] and data["problems"] == [] and data["device"] == "cpu" and data["quick"]
    assert data["machine"]["cores"] >= 1 and data["machine"]["gpu"] is None
    assert {(r["method"], r["input"]) for r in data["losses"]} == {("cwd", "logits"), ("cwd", "feature_map")}
    assert all(r["agrees"] and r["time_ratio"] > 0 for r in data["losses"])
    runs = {r["precision"]: r for r in data["training"]}
    assert set(runs) == {"fp32", "bf16"}
    for run in runs.values():
        assert run["status"] == "complete" and run["losses_finite"] and run["logged_losses"] >= 1
        assert run["teacher"].endswith("pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py")
        assert run["student"].endswith("pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py")
        assert run["seconds_per_iter"] > 0 and run["peak_memory_mb"] > 0 and 0 < run["kd_share"] < 1
        assert run["iterations_timed"] == run["iterations"] == 3 and run["crop"] == [64, 64]
    gfl = data["gfl_step"]
    assert gfl["teacher"].endswith("gfl_r101_fpn_ms-2x_coco.py") and gfl["student"].endswith("gfl_r50_fpn_1x_coco.py")
    assert gfl["losses_finite"] and gfl["losses"]["loss_kd_cwd_gfl_cls"] > 0 and gfl["kd_s"] > 0
    assert data["summary"]["bf16_speedup"] == pytest.approx(
        runs["fp32"]["seconds_per_iter"] / runs["bf16"]["seconds_per_iter"])
    assert f"gpu_check: wrote {out}" in result.stdout


def test_the_check_refuses_cuda_without_a_gpu_and_an_out_file_in_a_missing_directory(tmp_path):
    missing = gpu_check("--device", "cpu", "--out", str(tmp_path / "no" / "check.json"), timeout=120)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"gpu_check: error: --out: {tmp_path / 'no' / 'check.json'}: its directory does not exist"]
    import torch

    if not torch.cuda.is_available():
        no_gpu = gpu_check("--out", str(tmp_path / "check.json"), timeout=120)
        assert no_gpu.returncode == 2 and len(no_gpu.stderr.strip().splitlines()) == 1
        assert "no GPU is visible" in no_gpu.stderr and not (tmp_path / "check.json").exists()
