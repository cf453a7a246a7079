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
