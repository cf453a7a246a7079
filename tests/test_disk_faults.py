"""A full disk or a read-only file system while a run writes its results, on a real tmpfs mount (the
kernel's own ENOSPC and EROFS; root can write through chmod, so permissions cannot fake this):
no partial or empty final.json, no temporary file left, one line naming the file and the OS error.
A launch into a read-only results root is refused with exit code 2 before anything runs; plan,
which writes nothing, still works there. Skips with the reason where mounting is not permitted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launch_helpers import dump_yaml

ROOT = Path(__file__).resolve().parents[1]

RUN = {"task": "seg", "student": {"config": "tiny_seg_student"},
       "dataset": {"name": "fashion_scenes", "params": {"num_train": 4, "num_val": 2, "size": 32, "seed": 1}},
       "schedule": {"iterations": 2, "batch_size": 2, "checkpoint_interval": 2}, "device": "cpu"}

# Runs `kdbench run`, and at the moment final.json is about to be written makes the file system
# fail for real: fills the tmpfs to the last byte, or bind-mounts the run's directory read-only.
FAULTY_RUN = """
import os, subprocess, sys
from pathlib import Path
from kdbench import store
from kdbench.cli import main

mode, mount = sys.argv[1], Path(sys.argv[2])
original = store.write_bytes_atomic
target = "model_final.pth" if mode == "full-at-weights" else "final.json"

def fail_then_write(path, data):
    if Path(path).name == target:
        if mode.startswith("full"):
            # Unbuffered: a write that fails leaves nothing for close() to flush (and fail on) again.
            with open(mount / "ballast", "wb", buffering=0) as ballast:
                try:
                    while True:
                        ballast.write(b"x" * 65536)
                except OSError:
                    pass
        else:  # a read-only bind mount over the run's directory (the tmpfs itself is busy: open logs)
            folder = str(Path(path).parent)
            subprocess.run(["mount", "--bind", folder, folder], check=True)
            subprocess.run(["mount", "-o", "remount,bind,ro", folder], check=True)
    return original(path, data)

store.write_bytes_atomic = fail_then_write
sys.exit(main(sys.argv[3:]))
"""


def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'}): "
                    f"the full-disk and read-only tests need mount permission (root, CAP_SYS_ADMIN)")


@pytest.fixture
def mounts():
    mounted = []

    def mount(path: Path, options: str) -> Path:
        mount_tmpfs(path, options)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def env(tmp_path_factory):
    import os

    data = tmp_path_factory.getbasetemp() / "disk_faults_data"
    return {**os.environ, "KDBENCH_DATA": str(data), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("mode, message", [("full", "No space left on device"), ("read-only", "Read-only file system"),
                                           ("full-at-weights", "No space left on device")])
def test_a_full_or_read_only_disk_at_the_result_leaves_no_partial_final_json_and_one_clear_line(
        mode, message, tmp_path, mounts, env):
    """Guarantee: A full disk or a read-only file system while a run writes its result (a real tmpfs, filled to the
    last byte or bind-mounted read-only at that moment, at `final.json` or at the final weights): no partial
    `final.json` or `model_final.pth`, no temporary file, one line naming the file and the OS error, exit 1, the
    run left to rerun."""
    disk = mounts(tmp_path / "disk", "size=32m")
    run_file = tmp_path / "tiny.json"
    run_file.write_text(json.dumps(RUN))
    out = disk / "run"
    command = [sys.executable, "-c", FAULTY_RUN, mode, str(disk), "run", str(run_file), "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    subprocess.run(["umount", "-l", str(out)], capture_output=True)  # the read-only bind, if any
    assert result.returncode == 1, result.stderr[-2000:]
    ours = [line for line in result.stderr.splitlines() if line.startswith("kdbench run:")]
    failed = "model_final.pth" if mode == "full-at-weights" else "final.json"
    assert ours == [f"kdbench run: tiny stopped: cannot write {out}/{failed}: {message}"], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert "final.json" not in names and not [n for n in names if n.endswith(".tmp")], names
    assert "spec.json" in names
    # it got that far: the fault hit the result (or, at the weights, no truncated weights file is left)
    assert ("model_final.pth" in names) == (mode != "full-at-weights")
    from kdbench import store

    assert store.run_state(out) == "started"  # not complete: a relaunch runs it again


def test_a_launch_into_a_read_only_results_root_is_refused_with_one_line_and_plan_still_works(tmp_path, mounts,
                                                                                             env):
    """Guarantee: A launch into a read-only results root: one line, exit 2, nothing run; `plan`, which writes nothing,
    still works there."""

    results = mounts(tmp_path / "results", "size=1m,ro")
    study = tmp_path / "ro.yaml"
    study.write_text(dump_yaml({"name": "ro", "base": {k: v for k, v in RUN.items() if k != "device"}}))
    launch = subprocess.run([sys.executable, "-m", "kdbench.cli", "launch", str(study), "--results", str(results),
                             "--no-progress"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert launch.returncode == 2, launch.stderr
    assert launch.stderr.splitlines() == [
        f"kdbench launch: error: {results}/ro: cannot write the study's results directory (Read-only file system); "
        f"choose another --results"]
    assert list(results.iterdir()) == []
    plan = subprocess.run([sys.executable, "-m", "kdbench.cli", "plan", str(study), "--results", str(results)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert plan.returncode == 0 and "study ro: 1 runs" in plan.stdout, plan.stderr
