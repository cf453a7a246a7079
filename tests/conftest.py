"""Shared pytest set-up: deterministic torch on few threads, so tests behave the same on 2 cores."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded_torch():
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield


@pytest.fixture(autouse=True)
def _fresh_mmengine_loggers():
    """mmengine keeps every MMLogger it creates, each writing to the sys.stdout of its time; under
    pytest that is one test's capture, closed when the test ends. Forget them after each test so a
    later test logs to its own stdout (in a real process each run has its own, so this is a
    test-isolation matter only)."""
    yield
    import sys

    if "mmengine.logging" in sys.modules:
        from mmengine.logging import MMLogger

        for logger in list(MMLogger._instance_dict.values()):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
                handler.close()
        MMLogger._instance_dict.clear()


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local SLURM cluster (tools/slurm/up.sh), brought up once for the session and stopped after
    it; skips with the reason where it cannot run (not root, KDBENCH_SKIP_SLURM set)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (apt-get, daemons)")
    if os.environ.get("KDBENCH_SKIP_SLURM"):
        pytest.skip("KDBENCH_SKIP_SLURM is set")
    up = subprocess.run(["bash", str(root / "tools" / "slurm" / "up.sh")], capture_output=True, text=True,
                        timeout=600, stdin=subprocess.DEVNULL)
    if up.returncode != 0:
        pytest.fail(f"tools/slurm/up.sh failed:\n{up.stdout}\n{up.stderr}")
    yield
    subprocess.run(["bash", str(root / "tools" / "slurm" / "down.sh")], capture_output=True, timeout=120,
                   stdin=subprocess.DEVNULL)
