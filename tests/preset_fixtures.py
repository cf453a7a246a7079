"""Tiny Cityscapes- and COCO-format trees, made from generated fashion scenes, so that mmseg's
CityscapesDataset and mmdet's CocoDataset pipelines (exactly as the paper presets use them) run
end to end on CPU. Nothing is downloaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image

from runners.data.fashion_scenes import generate

# Ten of COCO's 80 category names stand in for the ten Fashion-MNIST classes.
COCO_STAND_INS = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
                  "boat", "traffic light"]


def make_cityscapes(root: Path, num_train: int = 4, num_val: int = 2, size: int = 64) -> Path:
    """leftImg8bit/<split>/<city>/<id>_leftImg8bit.png + gtFine/.../<id>_gtFine_labelTrainIds.png;
    train ids 0..10 come from the scene labels (Cityscapes has 19 classes, 255 = ignore)."""
    generate(root / "_scenes", num_train=num_train, num_val=num_val, size=size, seed=3)
    for split in ("train", "val"):
        images = sorted((root / "_scenes" / "images" / split).glob("*.png"))
        for index, image in enumerate(images):
            stem = f"fixture_{index:06d}_000019"
            img_dir = root / "leftImg8bit" / split / "fixture"
            gt_dir = root / "gtFine" / split / "fixture"
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(image, img_dir / f"{stem}_leftImg8bit.png")
            label = Image.open(root / "_scenes" / "labels" / split / image.name)
            label.save(gt_dir / f"{stem}_gtFine_labelTrainIds.png")
    shutil.rmtree(root / "_scenes")
    return root


def make_coco(root: Path, num_train: int = 4, num_val: int = 2, size: int = 64) -> Path:
    """train2017/, val2017/ (JPEG) and annotations/instances_{train,val}2017.json."""
    generate(root / "_scenes", num_train=num_train, num_val=num_val, size=size, seed=5)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        doc = json.loads((root / "_scenes" / "annotations" / f"instances_{split}.json").read_text())
        out_dir = root / f"{split}2017"
        out_dir.mkdir(parents=True, exist_ok=True)
        for image in doc["images"]:
            name = Path(image["file_name"]).with_suffix(".jpg").name
            Image.open(root / "_scenes" / "images" / split / image["file_name"]).convert("RGB").save(
                out_dir / name, quality=95)
            image["file_name"] = name
        doc["categories"] = [{"id": i + 1, "name": n, "supercategory": "fixture"}
                             for i, n in enumerate(COCO_STAND_INS)]
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(doc))
    shutil.rmtree(root / "_scenes")
    return root


# Cityscapes' label id of each train id 0..18 (cityscapesScripts' labels.py), and ids it ignores.
CITYSCAPES_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
IGNORED_IDS = [0, 1, 4, 9, 14, 29, 30]


def make_cityscapes_download(root: Path, num_train: int = 4, num_val: int = 2, size: int = 32) -> dict:
    """A Cityscapes tree as the official zips unpack: images, and per image ``*_gtFine_labelIds.png``
    (with a band of ids that are not evaluated), ``_color``, ``_instanceIds`` and ``_polygons.json``,
    but no ``*_gtFine_labelTrainIds.png``. Returns {label-id map: the train-id map mmseg must get}."""
    import numpy as np

    make_cityscapes(root, num_train, num_val, size)
    expected = {}
    for train_map in sorted(root.glob("gtFine/*/*/*_gtFine_labelTrainIds.png")):
        train_ids = np.array(Image.open(train_map))
        ids = np.array(CITYSCAPES_IDS, dtype=np.uint8)[train_ids]
        band = np.resize(np.array(IGNORED_IDS, dtype=np.uint8), ids.shape[1])
        ids[0], train_ids[0] = band, 255  # the first row: ids mmseg ignores
        stem = train_map.name.removesuffix("_gtFine_labelTrainIds.png")
        label_ids = train_map.with_name(f"{stem}_gtFine_labelIds.png")
        Image.fromarray(ids).save(label_ids)
        for other in ("_gtFine_color.png", "_gtFine_instanceIds.png", "_gtFine_polygons.json"):
            train_map.with_name(stem + other).write_bytes(b"")
        train_map.unlink()
        expected[label_ids] = train_ids
    return expected
