"""``kdbench bench`` runs at a tiny size and writes valid JSON (benchmarks are not timed tests)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bandwidth as bench_bandwidth
from benchmarks import loss_cases
from benchmarks import losses as bench_losses
from kdbench.errors import UserError
from kdbench.losses.params import BUILTINS

ROOT = Path(__file__).resolve().parents[1]
MAP_LOSSES = {name for name, (_, params) in BUILTINS.items() if not params.needs_heads}  # head losses: no case


@pytest.mark.slow
def test_bench_losses_covers_every_registered_method_at_a_tiny_size_and_every_row_agrees(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "kdbench.cli", "bench", "--suite", "losses", "--scale", "0.05",
                             "--repeats", "1", "--json", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr  # the table and its notes say which row
    data = json.loads(out.read_text())
    assert {"cpu", "cores", "torch_threads", "gpu"} <= set(data["machine"])
    rows = data["results"]
    assert {row["registry_name"] for row in rows} == MAP_LOSSES   # plugins other tests loaded have no case
    assert {(row["method"], row["input"]) for row in rows} >= {("cwd", "logits"), ("cwd", "feature_map"),
                                                               ("ho critic step", "logits")}
    for row in rows:
        assert row["agrees"], row
        assert row["time_ratio"] > 0 and row["kdbench_s"] > 0 and row["reference_s"] > 0
        assert row["kdbench_bytes"] >= 0 and row["reference_bytes"] >= 0
        assert 0 < row["scale"] <= 0.05 and len(row["shape"]) == 4
        # CWD carries the 0.5x targets, every other loss 1.0x; CWD says which of its kernels ran
        limit = "0.5" if row["registry_name"] == "cwd" else "1"
        assert f"memory_ratio<={limit}" in row["targets"] and len(row["targets"]) == 2, row["targets"]
        assert (row.get("cwd_kernel") in ("compiled", "blocked")) == (row["registry_name"] == "cwd")


@pytest.mark.slow
def test_bench_data_checks_cityscapes_and_coco_trees_of_the_official_size_complete_then_from_the_cache(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "kdbench.cli", "bench", "--suite", "data", "--repeats", "1",
                             "--json", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    rows = {row["dataset"]: row for row in json.loads(out.read_text())["results"]}
    assert rows["cityscapes"]["images"] == {"train": 2975, "val": 500} and rows["cityscapes"]["files"] == 20850
    assert rows["coco"]["images"] == {"train2017": 118287, "val2017": 5000} and rows["coco"]["files"] == 123289
    assert rows["voc"]["images"] == {"train": 10582, "val": 1449} and rows["voc"]["files"] == 2 * 12031 + 3
    assert rows["ade20k"]["images"] == {"train": 20210, "val": 2000} and rows["ade20k"]["files"] == 2 * 22210
    for row in rows.values():
        assert row["suite"] == "data" and row["target_s"] == 1.0 and row["uncached_s"] > 0 and row["cached_s"] > 0


def test_bench_cases_cover_the_registry_and_reject_an_unknown_method():
    assert {case.method for case in loss_cases.cases()} == MAP_LOSSES   # built-ins, whatever plugins are loaded
    assert MAP_LOSSES < set(BUILTINS) and not MAP_LOSSES & {"ld", "crosskd"}
    assert {case.input for case in loss_cases.cases(["cwd"])} == {"logits", "feature_map"}
    with pytest.raises(UserError, match="unknown method.*cdw"):
        loss_cases.cases(["cdw"])


def test_bench_cases_scaled_down_on_a_cpu_say_why():
    for case in loss_cases.cases():
        scale, reason = loss_cases.case_scale(case, 1.0)
        assert (scale < 1.0) == bool(reason), case.key
        assert loss_cases.case_scale(case, 1.0, device="cuda") == (1.0, "")


def _row(method, ratio, targets, reason=""):
    return {"device": "cpu", "method": method, "input": "logits", "shape": [8, 19, 64, 128], "scale": 1.0,
            "scale_reason": reason, "agrees": True, "value_rel_diff": 0.0, "grad_rel_diff": 0.0, "kdbench_s": 0.002,
            "reference_s": 0.004, "time_ratio": ratio, "kdbench_bytes": 2**20, "reference_bytes": 2**22,
            "memory_ratio": 0.25, "targets": targets}


def test_format_rows_gives_one_line_per_row_with_the_ratios_verdicts_and_reasons():
    text = bench_losses.format_rows([
        _row("cwd", 0.61, {"time_ratio<=0.5": False, "memory_ratio<=0.5": True}),
        _row("pa", 0.97, {}, reason="time: too slow"),
    ])
    lines = text.splitlines()
    cwd_line = next(line for line in lines if line.startswith("cpu") and " cwd " in line)
    assert "0.61" in cwd_line and "0.25" in cwd_line and "time_ratio<=0.5 MISSED" in cwd_line
    assert "memory_ratio<=0.5 met" in cwd_line
    assert any(line.startswith("cpu") and " pa " in line and "0.97" in line for line in lines)
    assert "* pa on logits at scale 1: time: too slow" in text


def test_every_loss_is_held_to_its_plain_formulations_time_and_memory_with_slack_for_timer_noise():
    fast = {"reference_s": 0.004, "time_ratio": 1.04, "memory_ratio": 0.99}
    assert bench_losses.targets(fast, strict=False) == {"time_ratio<=1.05": True, "memory_ratio<=1": True}
    slow = {"reference_s": 0.2, "time_ratio": 1.01, "memory_ratio": 1.02}
    assert bench_losses.targets(slow, strict=False) == {"time_ratio<=1": False, "memory_ratio<=1": False}
    assert bench_losses.targets({**slow, "time_ratio": 0.4, "memory_ratio": None}, strict=True) == {
        "time_ratio<=0.5": True, "memory_ratio<=0.5": None}


def test_gpu_bandwidth_bound_comes_from_the_data_sheet_by_device_name_and_the_bytes_that_must_move():
    assert bench_bandwidth.peak_bandwidth("NVIDIA H100 80GB HBM3") == 3350.0
    assert bench_bandwidth.peak_bandwidth("NVIDIA H100 PCIe") == 2000.0
    assert bench_bandwidth.peak_bandwidth("NVIDIA GH200 480GB") == 4000.0
    assert bench_bandwidth.peak_bandwidth("NVIDIA H200") == 4800.0
    assert bench_bandwidth.peak_bandwidth("Some Future GPU") is None
    fields = bench_bandwidth.bandwidth_fields((8, 512, 64, 64), 1e-3, {"GBps": 3350.0, "source": "data sheet"})
    assert fields["bytes_moved"] == 3 * 8 * 512 * 64 * 64 * 4  # read S, read T, write the gradient
    assert fields["bandwidth_fraction"] == pytest.approx(fields["bytes_moved"] / 3350e9 / 1e-3)


def test_a_disagreement_that_repeats_fails_and_a_one_off_is_reported_not_hidden(monkeypatch):
    bad = {"value_rel_diff": 1e-3, "grad_rel_diff": 1e-3, "agrees": False}
    good = {"value_rel_diff": 1e-7, "grad_rel_diff": 1e-7, "agrees": True}
    case = loss_cases.cases(["pi"])[0]
    answers = iter([bad, good, good])
    monkeypatch.setattr(bench_losses, "agreement", lambda *args: next(answers))
    row = bench_losses.checked_agreement(case, (1, 2, 2, 2))
    assert row["agrees"] and row["unstable_first_check"] == {"value_rel_diff": 1e-3, "grad_rel_diff": 1e-3}
    answers = iter([bad, good, dict(bad, value_rel_diff=2e-3)])
    row = bench_losses.checked_agreement(case, (1, 2, 2, 2))
    assert not row["agrees"] and row["value_rel_diff"] == 2e-3


def test_interleaved_medians_keeps_each_suites_call_order_and_drops_the_warm_up_round():
    from benchmarks.timing import interleaved_medians

    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    medians = interleaved_medians(calls, 2, lambda: None, prepare=lambda: order.append("-"))
    assert order == ["-", "a", "-", "b", "-", "c"] * 3 and set(medians) == set("abc")
    order.clear()
    interleaved_medians(calls, 2, lambda: None, rotate=True)
    assert order == list("abc" "bca" "cab")
