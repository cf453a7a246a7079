"""A held-out split of a training set: the tune stage trains on the rest and evaluates on it.

``split(count, fraction, seed)`` draws the held-out indices (a seeded permutation: the same on
every machine and for every run of a study, disjoint from the rest and together all of it).
``HeldOutSplit`` is the dataset wrapper mmengine's Runner builds: the training set's config with
``part: rest`` (training) or ``part: holdout`` (evaluation, under the test pipeline). Both parts are
drawn from the same training split, so a run with a holdout never reads val.
"""

from __future__ import annotations

import random

from mmengine.registry import DATASETS

PARTS = ("rest", "holdout")


def split(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(rest, held out): sorted indices of ``count`` items, ``round(fraction * count)`` of them held
    out (at least one, and at least one left to train on)."""
    if count < 2:
        raise ValueError(f"a holdout needs at least 2 training images, the training set has {count}")
    held = min(count - 1, max(1, round(fraction * count)))
    order = list(range(count))
    random.Random(seed).shuffle(order)   # random.Random: a fixed algorithm, the same on every platform
    return sorted(order[held:]), sorted(order[:held])


@DATASETS.register_module(force=True)
class HeldOutSplit:
    """One part of a training set: the dataset ``dataset`` (a config) restricted to ``part`` of
    ``split(len, fraction, seed)``. Metainfo and items are the wrapped dataset's."""

    def __init__(self, dataset: dict, part: str, fraction: float, seed: int = 0):
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {part!r}")
        self.dataset = DATASETS.build(dataset)
        rest, held = split(len(self.dataset), fraction, seed)
        self.indices = held if part == "holdout" else rest
        self.part = part

    @property
    def metainfo(self) -> dict:
        return self.dataset.metainfo

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[self.indices[index]]

    def get_data_info(self, index: int) -> dict:
        return self.dataset.get_data_info(self.indices[index])
