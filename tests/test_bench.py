"""``kdbench bench`` runs at a tiny size and writes valid JSON (benchmarks are not timed tests)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_losses_runs_at_a_tiny_size_and_writes_valid_json(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "kdbench.cli", "bench", "--suite", "losses", "--scale", "0.05",
                             "--repeats", "1", "--json", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert {"cpu", "cores", "torch_threads", "gpu"} <= set(data["machine"])
    rows = data["results"]
    assert [r["input"] for r in rows] == ["logits", "feature_map"]
    for row in rows:
        assert row["agrees"] and row["time_ratio"] > 0 and row["kdbench_s"] > 0
        assert row["kdbench_bytes"] >= 0 and row["reference_bytes"] >= 0
