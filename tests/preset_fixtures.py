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
