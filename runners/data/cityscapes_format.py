"""A Cityscapes-format tree made from generated fashion scenes, so that mmseg's CityscapesDataset
with the paper's pipeline (runners.datasets) runs end to end without the real data: the pipeline
tests and the GPU acceptance check (benchmarks/gpu_check.py) train on it. Nothing is downloaded."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from runners.data.fashion_scenes import generate


def make_cityscapes(root: Path, num_train: int = 4, num_val: int = 2, size: int | tuple[int, int] = 64,
                    seed: int = 3) -> Path:
    """leftImg8bit/<split>/<city>/<id>_leftImg8bit.png + gtFine/.../<id>_gtFine_labelTrainIds.png;
    train ids 0..10 come from the scene labels (Cityscapes has 19 classes, 255 = ignore)."""
    root = Path(root)
    generate(root / "_scenes", num_train=num_train, num_val=num_val, size=size, seed=seed)
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
