"""What a local launch pays per run to start it: one tiny run (a 2-iteration tiny teacher on 8
generated images, evaluated once), start to exit, in a fresh interpreter (``kdbench run``: every
run imports torch, mmengine, mmseg and mmdet again) and forked from a local worker that imported
them once (runners.launch.worker, how a local launch starts its runs). Same run file, same thread
count; each start writes into a directory of its own. The difference of the two rows is the
per-run start overhead the worker saves; part of ``kdbench bench --suite grid`` (its CLI rows).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runners.launch.worker import Worker

REPO = Path(__file__).resolve().parents[1]
RUN = {"task": "seg", "role": "teacher", "name": "bench_start", "teacher": {"config": "tiny_seg_teacher"},
       "dataset": {"name": "fashion_scenes", "params": {"num_train": 8, "num_val": 4, "size": 64, "seed": 1}},
       "schedule": {"iterations": 2, "batch_size": 2, "checkpoint_interval": 2}, "threads": 1}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _fresh(run_file: Path, out: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kdbench.cli", "run", str(run_file), "--out", str(out)], check=True,
                   capture_output=True, env=env, cwd=REPO, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def _forked(worker: Worker, run_file: Path, out: Path, env: dict) -> float:
    start = time.perf_counter()
    pid = worker.start(["run", str(run_file), "--out", str(out)], env, str(out) + ".log")
    if pid is None:
        raise RuntimeError("the local worker did not start the run")
    while _alive(pid):
        time.sleep(0.01)
    if not (out / "final.json").is_file():
        raise RuntimeError(f"the forked run did not complete: {Path(str(out) + '.log').read_text()[-2000:]}")
    return time.perf_counter() - start


def run(repeats: int = 3) -> list[dict]:
    """Two rows, ``run_start_fresh`` and ``run_start_forked``: the median wall time of the tiny run
    each way, after one run each way that is not timed (data generated, page cache warm)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    old_dir = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        run_file = root / "run.json"
        run_file.write_text(json.dumps(RUN))
        env["KDBENCH_DATA"] = env.get("KDBENCH_DATA", str(root / "data"))
        os.chdir(REPO)  # the worker's children start where the worker's caller is
        try:
            worker = Worker(env)
            seconds: dict[str, list[float]] = {"run_start_fresh": [], "run_start_forked": []}
            for index in range(repeats + 1):  # the first of each is the warm-up
                fresh = _fresh(run_file, root / f"fresh{index}", env)
                forked = _forked(worker, run_file, root / f"forked{index}", env)
                if index:
                    seconds["run_start_fresh"].append(fresh)
                    seconds["run_start_forked"].append(forked)
        finally:
            os.chdir(old_dir)
    return [{"suite": "grid", "operation": name, "runs": 1, "seconds": round(statistics.median(values), 4),
             "target_s": None, "meets_target": None, "growth_ratio": None, "runs_ratio": None,
             "no_worse_than_linear": None} for name, values in seconds.items()]
