"""``kdbench data prepare cityscapes ROOT``: the official download's label maps, converted into
what mmseg's CityscapesDataset reads.

The download (``gtFine_trainvaltest.zip``) holds ``*_gtFine_labelIds.png``, a pixel's class as one
of Cityscapes' 34 ids; mmseg reads ``*_gtFine_labelTrainIds.png``, the 19 evaluated classes as
train ids 0-18 and everything else 255 (ignored). mmseg's own converter
(``tools/dataset_converters/cityscapes.py``) draws them again from the polygons; mapping the label
ids pixel by pixel gives the same maps, since the ids were drawn from the same polygons.

Each map is written atomically beside its source (a temporary file renamed into place), so an
interrupted conversion leaves whole maps only and a second call converts what is left: nothing,
once all are there.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from kdbench import store
from kdbench.errors import UserError
from runners.data.layout import LABEL_IDS_SUFFIX, OFFICIAL, TRAIN_IDS_SUFFIX

IGNORE = 255
# The 19 evaluated classes in train-id order (0-18), each with its label id (cityscapesScripts'
# helpers/labels.py); every other id is ignored.
EVALUATED = [("road", 7), ("sidewalk", 8), ("building", 11), ("wall", 12), ("fence", 13), ("pole", 17),
             ("traffic light", 19), ("traffic sign", 20), ("vegetation", 21), ("terrain", 22), ("sky", 23),
             ("person", 24), ("rider", 25), ("car", 26), ("truck", 27), ("bus", 28), ("train", 31),
             ("motorcycle", 32), ("bicycle", 33)]


def lookup_table() -> np.ndarray:
    """A 256-entry uint8 table: label id -> train id (255 for every id not evaluated)."""
    table = np.full(256, IGNORE, dtype=np.uint8)
    for train_id, (_, label_id) in enumerate(EVALUATED):
        table[label_id] = train_id
    return table


def pending(root: Path) -> tuple[list[Path], int]:
    """(label-id maps of the train and val splits without their train-id map, how many have one)."""
    todo, done = [], 0
    for split in OFFICIAL["cityscapes"]:
        for source in sorted((root / "gtFine" / split).glob(f"*/*{LABEL_IDS_SUFFIX}")):
            if _target(source).is_file():
                done += 1
            else:
                todo.append(source)
    return todo, done


def _target(source: Path) -> Path:
    return source.with_name(source.name[: -len(LABEL_IDS_SUFFIX)] + TRAIN_IDS_SUFFIX)


def convert(source: Path, table: np.ndarray) -> None:
    """One map: read the label ids, look up the train ids, write the PNG whole or not at all."""
    import cv2

    ids = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
    if ids is None or ids.ndim != 2 or ids.dtype != np.uint8:
        raise UserError(f"{source}: not a one-channel 8-bit PNG of label ids; unzip gtFine_trainvaltest.zip again")
    ok, png = cv2.imencode(".png", table[ids])
    if not ok:
        raise UserError(f"{source}: its train-id map could not be encoded as a PNG")
    store.write_bytes_atomic(_target(source), png.tobytes())


def _remove_leftovers(root: Path) -> None:
    """Temporary files of a conversion that was killed before its rename."""
    for split in OFFICIAL["cityscapes"]:
        for leftover in (root / "gtFine" / split).glob(f"*/.*{TRAIN_IDS_SUFFIX}.*.tmp"):
            leftover.unlink(missing_ok=True)


def prepare(root: str | Path, workers: int | None = None, progress: bool = True) -> tuple[int, int]:
    """Convert every label-id map of ``root`` that has no train-id map yet; (converted, already there)."""
    root = Path(root)
    _remove_leftovers(root)
    todo, done = pending(root)
    if not todo:
        return 0, done
    table = lookup_table()
    bar = _bar(len(todo), progress)
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:  # cv2 frees the GIL
        for _ in pool.map(lambda source: convert(source, table), todo):
            bar.update(1)
    bar.close()
    return len(todo), done


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="cityscapes train ids", unit="map", file=sys.stderr, dynamic_ncols=True,
                disable=not enabled)
