"""Tuned baselines (a study's ``tune:`` block): the held-out split of the training set, the
tune stage's runs, the choice of each method's setting and the final stage planned from it."""

from pathlib import Path

import pytest

from kdbench.spec import parse_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path_factory.getbasetemp() / "data"))


def test_the_holdout_split_is_disjoint_covers_the_training_set_and_depends_only_on_its_seed():
    from runners.data.holdout import split

    rest, held = split(50, 0.2, seed=3)
    assert len(held) == 10 and len(rest) == 40
    assert not set(rest) & set(held) and sorted(rest + held) == list(range(50))
    assert split(50, 0.2, seed=3) == (rest, held)          # the same draw every time
    assert split(50, 0.2, seed=4)[1] != held                # another seed, another share
    assert split(3, 0.01, seed=0)[1] and split(3, 0.99, seed=0)[0]   # never an empty part


def test_a_holdout_run_trains_and_evaluates_on_disjoint_training_images_and_never_reads_val(tmp_path):
    from mmengine.runner import Runner

    from runners.build import register_scope
    from runners.data import holdout  # noqa: F401  (registers HeldOutSplit)
    from runners.datasets import dataset_configs

    params = {"num_train": 10, "num_val": 4, "size": 32, "seed": 1}
    run = parse_run({"task": "seg", "student": {"config": "tiny_seg_student"},
                     "dataset": {"name": "fashion_scenes", "params": params, "holdout": {"fraction": 0.3, "seed": 2}},
                     "schedule": {"iterations": 2, "batch_size": 2}})
    register_scope("seg")
    data = dataset_configs(run)
    assert "/val" not in repr(data)                         # no loader, no evaluator names val
    train = Runner.build_dataloader(data["train_dataloader"]).dataset
    held = Runner.build_dataloader(data["val_dataloader"]).dataset
    paths = [{held.get_data_info(i)["img_path"] for i in range(len(held))},
             {train.get_data_info(i)["img_path"] for i in range(len(train))}]
    assert len(paths[0]) == 3 and len(paths[1]) == 7
    assert not paths[0] & paths[1]
    assert all("/images/train/" in p for p in paths[0] | paths[1])
    # The held-out images go through the test pipeline: whole, unflipped, as val would be.
    assert held[0]["inputs"].shape[-2:] == (32, 32)
