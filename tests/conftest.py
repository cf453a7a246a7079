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
