"""Dataset and evaluator configs for mmengine's Runner, per dataset and task.

- ``fashion_scenes``: the offline built-in dataset (runners/data/fashion_scenes.py), generated
  on first use and cached.
- ``cityscapes``: mmseg's CityscapesDataset. ``pipeline: default`` trains with mmseg's
  augmentation (random resize 0.5-2.0 of 2048x1024, random crop with cat_max_ratio 0.75, flip,
  photometric distortion), as mmseg's and MMRazor's configs do; ``crop_only`` with a plain random
  crop of the full-resolution image and nothing else, as the CWD paper's official code trains
  (its random scale and mirror exist but are off in its training script).
- ``coco``: mmdet's CocoDataset with the 1x schedule's pipeline (resize to 1333x800, flip).
- ``voc``: mmseg's PascalVOCDataset as ``configs/_base_/datasets/pascal_voc12_aug.py`` reads it:
  VOC 2012's train (SegmentationClass labels) and SBD's extra images (``aug.txt``,
  SegmentationClassAug labels) concatenated, 10,582 images; val's 1,449 with SegmentationClass.
- ``ade20k``: mmseg's ADE20KDataset as ``configs/_base_/datasets/ade20k.py`` reads it (the zero
  label, "other", ignored). Both train with mmseg's augmentation for them (random resize 0.5-2.0 of
  2048x512, random 512x512 crop with cat_max_ratio 0.75, flip, photometric distortion) and
  evaluate on the image resized to 2048x512 (keeping its ratio).

``params.scale`` overrides the resize target of cityscapes, coco, voc and ade20k (tests use small fixtures).

``dataset.holdout`` (a study's tune stage): both loaders read the training split, training on
all but a held-out share of it and evaluating on that share under the test pipeline
(runners.data.holdout); val is never read.
"""

from __future__ import annotations

from pathlib import Path

from kdbench.errors import UserError
from kdbench.spec import RunSpec

SEG_EVALUATOR = {"type": "KDIoUMetric", "iou_metrics": ["mIoU"]}
CITYSCAPES_CROP = (512, 1024)  # mmseg's Cityscapes crop, when the schedule names none
COCO_SCALE = (1333, 800)       # (w, h) of mmdet's 1x resize, when the dataset's params name none
SEG_512_SCALE = (2048, 512)    # mmseg's VOC-aug and ADE20K resize target (configs/_base_/datasets/)
SEG_512_CROP = (512, 512)      # ... and crop, when the schedule names none
# FEW_IMAGES: the fashion scenes' datasets keep their few hundred annotation entries as a plain list
# (serialize_data off). mmengine packs a dataset's list into one buffer so that dataloader workers
# share it, and runs a full garbage collection of the process each time, a quarter of a second of
# CPU for each of a run's two datasets once torch and the OpenMMLab stack are imported. Each entry
# read is the same either way (a copy of the list's dict, or that dict unpickled), so the numbers are too.


def training_size(run: RunSpec) -> tuple[int, int]:
    """(h, w) of a segmentation training image after the pipeline: the schedule's crop, else the
    fashion scenes' own size, else the Cityscapes crop."""
    if run.schedule.crop is not None:
        return tuple(run.schedule.crop)
    if run.dataset.name == "fashion_scenes":
        return fashion_size(run.dataset.params)
    return SEG_512_CROP if run.dataset.name in ("voc", "ade20k") else CITYSCAPES_CROP


def fashion_size(params: dict) -> tuple[int, int]:
    """(h, w) of the fashion scenes' images: ``size``, one int or a pair (default 64)."""
    size = params.get("size", 64)
    return (size, size) if isinstance(size, int) else tuple(size)


def _loader(dataset: dict, batch_size: int, num_workers: int, train: bool) -> dict:
    return {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "sampler": {"type": "InfiniteSampler" if train else "DefaultSampler", "shuffle": train},
        "dataset": dataset,
    }


def _fashion_seg(info: dict, crop) -> tuple[dict, dict, dict]:
    train_pipeline = [
        {"type": "LoadImageFromFile"},
        {"type": "LoadAnnotations"},
        *([{"type": "RandomCrop", "crop_size": tuple(crop), "cat_max_ratio": 0.75}] if crop else []),
        {"type": "RandomFlip", "prob": 0.5},
        {"type": "PackSegInputs"},
    ]
    test_pipeline = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations"}, {"type": "PackSegInputs"}]

    def dataset(split, pipeline):
        return {
            "type": "BaseSegDataset",
            "data_root": str(info["root"]),
            "data_prefix": {"img_path": f"images/{split}", "seg_map_path": f"labels/{split}"},
            "img_suffix": ".png",
            "seg_map_suffix": ".png",
            "reduce_zero_label": False,
            "metainfo": {"classes": tuple(info["seg_classes"]), "palette": [list(p) for p in info["palette"]]},
            "pipeline": pipeline,
            "serialize_data": False,  # see FEW_IMAGES
        }

    return dataset("train", train_pipeline), dataset("val", test_pipeline), dict(SEG_EVALUATOR)


def _fashion_det(info: dict, crop) -> tuple[dict, dict, dict]:
    height, width = info["params"]["size"]
    # A resize to the images' own size: a no-op that records scale_factor, which mmdet needs.
    resize = {"type": "Resize", "scale": (width, height), "keep_ratio": True}
    train_pipeline = [
        {"type": "LoadImageFromFile"},
        {"type": "LoadAnnotations", "with_bbox": True},
        resize,
        {"type": "RandomFlip", "prob": 0.5},
        {"type": "PackDetInputs"},
    ]
    test_pipeline = [
        {"type": "LoadImageFromFile"},
        resize,
        {"type": "LoadAnnotations", "with_bbox": True},
        {"type": "PackDetInputs", "meta_keys": ("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")},
    ]

    def dataset(split, pipeline):
        return {
            "type": "CocoDataset",
            "data_root": str(info["root"]),
            "ann_file": f"annotations/instances_{split}.json",
            "data_prefix": {"img": f"images/{split}/"},
            "metainfo": {"classes": tuple(info["det_classes"])},
            "filter_cfg": {"filter_empty_gt": split == "train", "min_size": 0},
            "test_mode": split != "train",
            "pipeline": pipeline,
            "serialize_data": False,  # see FEW_IMAGES
        }

    evaluator = {"type": "KDCocoMetric", "ann_file": str(Path(info["root"]) / "annotations/instances_val.json"),
                 "metric": "bbox"}
    return dataset("train", train_pipeline), dataset("val", test_pipeline), evaluator


def _cityscapes(root: str, params: dict, crop, pipeline: str = "default") -> tuple[dict, dict, dict]:
    scale = tuple(params.get("scale", (2048, 1024)))
    crop = tuple(crop or CITYSCAPES_CROP)
    if pipeline == "crop_only":  # a uniform random offset, no category constraint (the preprocessor pads)
        augment = [{"type": "RandomCrop", "crop_size": crop}]
    else:
        augment = [{"type": "RandomResize", "scale": scale, "ratio_range": (0.5, 2.0), "keep_ratio": True},
                   {"type": "RandomCrop", "crop_size": crop, "cat_max_ratio": 0.75},
                   {"type": "RandomFlip", "prob": 0.5},
                   {"type": "PhotoMetricDistortion"}]
    train_pipeline = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations"}, *augment,
                      {"type": "PackSegInputs"}]
    test_pipeline = [
        {"type": "LoadImageFromFile"},
        {"type": "Resize", "scale": scale, "keep_ratio": True},
        {"type": "LoadAnnotations"},
        {"type": "PackSegInputs"},
    ]

    def dataset(split, pipeline):
        return {
            "type": "CityscapesDataset",
            "data_root": root,
            "data_prefix": {"img_path": f"leftImg8bit/{split}", "seg_map_path": f"gtFine/{split}"},
            "pipeline": pipeline,
        }

    return dataset("train", train_pipeline), dataset("val", test_pipeline), dict(SEG_EVALUATOR)


def _mmseg_512(params: dict, crop, load: dict, pad: bool) -> tuple[list, list]:
    """The train and test pipelines of mmseg's VOC-aug (``pad``: its Pad to the crop) and ADE20K configs."""
    scale, crop = tuple(params.get("scale", SEG_512_SCALE)), tuple(crop or SEG_512_CROP)
    train = [{"type": "LoadImageFromFile"}, load,
             {"type": "RandomResize", "scale": scale, "ratio_range": (0.5, 2.0), "keep_ratio": True},
             {"type": "RandomCrop", "crop_size": crop, "cat_max_ratio": 0.75}, {"type": "RandomFlip", "prob": 0.5},
             {"type": "PhotoMetricDistortion"}, *([{"type": "Pad", "size": crop}] if pad else []),
             {"type": "PackSegInputs"}]
    test = [{"type": "LoadImageFromFile"}, {"type": "Resize", "scale": scale, "keep_ratio": True}, load,
            {"type": "PackSegInputs"}]
    return train, test


def _voc(root: str, params: dict, crop) -> tuple[dict, dict, dict]:
    train_pipeline, test_pipeline = _mmseg_512(params, crop, {"type": "LoadAnnotations"}, pad=True)

    def part(listed: str, labels: str, pipeline: list) -> dict:
        return {"type": "PascalVOCDataset", "data_root": root, "ann_file": f"ImageSets/Segmentation/{listed}.txt",
                "data_prefix": {"img_path": "JPEGImages", "seg_map_path": labels}, "pipeline": pipeline}

    train = {"type": "ConcatDataset", "datasets": [part("train", "SegmentationClass", train_pipeline),
                                                   part("aug", "SegmentationClassAug", train_pipeline)]}
    return train, part("val", "SegmentationClass", test_pipeline), dict(SEG_EVALUATOR)


def _ade20k(root: str, params: dict, crop) -> tuple[dict, dict, dict]:
    load = {"type": "LoadAnnotations", "reduce_zero_label": True}
    train_pipeline, test_pipeline = _mmseg_512(params, crop, load, pad=False)

    def dataset(folder: str, pipeline: list) -> dict:
        return {"type": "ADE20KDataset", "data_root": root, "pipeline": pipeline,
                "data_prefix": {"img_path": f"images/{folder}", "seg_map_path": f"annotations/{folder}"}}

    return dataset("training", train_pipeline), dataset("validation", test_pipeline), dict(SEG_EVALUATOR)


def _coco(root: str, params: dict, crop) -> tuple[dict, dict, dict]:
    scale = tuple(params.get("scale", COCO_SCALE))
    train_pipeline = [
        {"type": "LoadImageFromFile"},
        {"type": "LoadAnnotations", "with_bbox": True},
        {"type": "Resize", "scale": scale, "keep_ratio": True},
        {"type": "RandomFlip", "prob": 0.5},
        {"type": "PackDetInputs"},
    ]
    test_pipeline = [
        {"type": "LoadImageFromFile"},
        {"type": "Resize", "scale": scale, "keep_ratio": True},
        {"type": "LoadAnnotations", "with_bbox": True},
        {"type": "PackDetInputs", "meta_keys": ("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")},
    ]

    def dataset(split, pipeline):
        return {
            "type": "CocoDataset",
            "data_root": root,
            "ann_file": f"annotations/instances_{split}2017.json",
            "data_prefix": {"img": f"{split}2017/"},
            "filter_cfg": {"filter_empty_gt": split == "train", "min_size": 32},
            "test_mode": split != "train",
            "pipeline": pipeline,
            "serialize_data": False,  # see FEW_IMAGES
        }

    evaluator = {"type": "KDCocoMetric", "ann_file": str(Path(root) / "annotations/instances_val2017.json"),
                 "metric": "bbox"}
    return dataset("train", train_pipeline), dataset("val", test_pipeline), evaluator


def _held_out(train: dict, val: dict, evaluator: dict, holdout) -> tuple[dict, dict, dict]:
    """The training split in two: the rest to train on, the held-out share to evaluate on (the
    training set's config under the test pipeline: the same images, in the same order, so the
    same indices). A COCO evaluator reads the training set's annotations, over the held-out images only."""
    parts = {"type": "HeldOutSplit", "fraction": holdout.fraction, "seed": holdout.seed}
    held = {**train, "pipeline": val["pipeline"]} if train["type"] != "ConcatDataset" else \
        {**train, "datasets": [{**part, "pipeline": val["pipeline"]} for part in train["datasets"]]}
    if evaluator.get("type") == "KDCocoMetric":
        evaluator = {**evaluator, "ann_file": str(Path(train["data_root"]) / train["ann_file"]), "evaluated_only": True}
    return ({**parts, "dataset": train, "part": "rest"}, {**parts, "dataset": held, "part": "holdout"}, evaluator)


def dataset_configs(run: RunSpec, check_root: bool = True) -> dict:
    """``train_dataloader``, ``val_dataloader`` and ``val_evaluator`` for a resolved run;
    ``check_root=False`` builds them for a dataset root that is not on this machine (plan --config)."""
    task, spec, schedule = run.task, run.dataset, run.schedule
    name, params, crop = spec.name, dict(spec.params), schedule.crop
    if name == "fashion_scenes":
        from runners.data.fashion_scenes import ensure

        info = ensure(root=spec.root, **params)
        train, val, evaluator = (_fashion_seg if task == "seg" else _fashion_det)(info, crop)
    else:
        root = spec.root
        if check_root and not Path(root).is_dir():
            raise UserError(f"dataset.root: {root!r} is not a directory")
        if name == "cityscapes" and task == "seg":
            train, val, evaluator = _cityscapes(root, params, crop, spec.pipeline)
        elif name == "coco" and task == "det":
            train, val, evaluator = _coco(root, params, crop)
        elif name in ("voc", "ade20k") and task == "seg":
            train, val, evaluator = (_voc if name == "voc" else _ade20k)(root, params, crop)
        else:
            raise UserError(f"dataset.name: {name!r} does not fit task {task!r}")
    if spec.holdout is not None:
        train, val, evaluator = _held_out(train, val, evaluator, spec.holdout)
    return {
        "train_dataloader": _loader(train, schedule.batch_size, schedule.num_workers, True),
        "val_dataloader": _loader(val, 1, schedule.num_workers, False),
        "val_evaluator": evaluator,
    }
