"""``kdbench data prepare voc ROOT``: Pascal VOC 2012's augmented training set, built from the SBD
download (Hariharan et al. 2011, ``benchmark.tgz``) as mmseg's ``tools/dataset_converters/voc_aug.py``
builds it.

ROOT is ``VOCdevkit/VOC2012``; SBD is looked for beside it, as ``VOCaug`` (mmseg's docs) or
``benchmark_RELEASE`` (the tarball's own name), holding ``dataset/cls/*.mat``, ``dataset/train.txt``
and ``dataset/val.txt``. Each ``cls/<id>.mat`` holds a struct ``GTcls`` whose ``Segmentation`` field
is the image's class map (0 background, 1-20 the VOC classes, 255 the void border); it is written
as the one-channel PNG ``SegmentationClassAug/<id>.png``. Then the lists, in
``ImageSets/Segmentation/``:

- ``aug.txt``: SBD's train and val images that are neither in VOC's train nor val (9,118 with the
  official downloads): mmseg trains on these (SegmentationClassAug labels) together with VOC's
  train (1,464, SegmentationClass labels), 10,582 images;
- ``trainaug.txt``: VOC's train and SBD's train and val, less VOC's val (the same 10,582).

Unlike mmseg's script, the lists are sorted (the same file on every machine). Each map and each
list is written atomically (a temporary file renamed into place): an interrupted preparation
leaves whole files only, and a second call converts what is left (nothing, once all are there)
and rewrites no list whose content would not change.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from kdbench import store
from kdbench.errors import UserError
from runners.data.layout import SBD_DOWNLOAD, SBD_FOLDERS, VOC_DOWNLOAD, VOC_LISTS

AUG = "SegmentationClassAug"


def sbd_folder(root: Path) -> Path | None:
    """SBD's ``dataset`` folder beside ``root``, or None."""
    for name in SBD_FOLDERS:
        if (root.parent / name / "dataset" / "cls").is_dir():
            return root.parent / name / "dataset"
    return None


def _ids(path: Path, fix: str) -> list[str]:
    if not path.is_file():
        raise UserError(f"{path}: does not exist; fix: {fix}")
    return [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]


def convert(source: Path, target: Path) -> None:
    """One SBD class map: ``GTcls.Segmentation`` of the .mat, as an 8-bit PNG, whole or not at all."""
    import cv2
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        found = loadmat(str(source))["GTcls"][0]["Segmentation"][0]
    except (MatReadError, NotImplementedError, KeyError, IndexError, ValueError, TypeError, OSError) as error:
        raise UserError(f"{source}: not an SBD class map (a .mat with GTcls.Segmentation): {error}; "
                        "unpack benchmark.tgz again") from None
    classes = np.asarray(found)
    if classes.ndim != 2:
        raise UserError(f"{source}: GTcls.Segmentation is not a 2-D map (shape {classes.shape})")
    ok, png = cv2.imencode(".png", classes.astype(np.uint8))
    if not ok:
        raise UserError(f"{source}: its label map could not be encoded as a PNG")
    store.write_bytes_atomic(target, png.tobytes())


def _write_list(path: Path, ids: list[str]) -> None:
    text = "".join(f"{i}\n" for i in ids)
    if not path.is_file() or path.read_text(errors="replace") != text:
        store.write_text_atomic(path, text)


def prepare(root: str | Path, workers: int | None = None, progress: bool = True) -> tuple[int, int]:
    """Convert SBD's class maps into ``SegmentationClassAug/`` and write ``aug.txt`` and
    ``trainaug.txt``; (maps converted, maps already there)."""
    root = Path(root)
    sbd = sbd_folder(root)
    if sbd is None:
        raise UserError(f"{root}: no SBD beside it ({' or '.join(f'../{n}/dataset/cls' for n in SBD_FOLDERS)}); "
                        f"fix: {SBD_DOWNLOAD.format(parent=root.parent, root=root)}")
    lists = root / VOC_LISTS
    download = VOC_DOWNLOAD.format(root=root)
    voc_train, voc_val = _ids(lists / "train.txt", download), _ids(lists / "val.txt", download)
    get_sbd = SBD_DOWNLOAD.format(parent=root.parent, root=root)
    sbd_ids = _ids(sbd / "train.txt", get_sbd) + _ids(sbd / "val.txt", get_sbd)
    out = root / AUG
    out.mkdir(exist_ok=True)
    for leftover in out.glob(".*.png.*.tmp"):   # a conversion killed before its rename
        leftover.unlink(missing_ok=True)
    sources = sorted((sbd / "cls").glob("*.mat"))
    todo = [s for s in sources if not (out / f"{s.stem}.png").is_file()]
    bar = _bar(len(todo), progress)
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for _ in pool.map(lambda source: convert(source, out / f"{source.stem}.png"), todo):
            bar.update(1)
    bar.close()
    _write_list(lists / "aug.txt", sorted(set(sbd_ids) - set(voc_train) - set(voc_val)))
    _write_list(lists / "trainaug.txt", sorted(set(voc_train + sbd_ids) - set(voc_val)))
    return len(todo), len(sources) - len(todo)


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="voc SBD label maps", unit="map", file=sys.stderr, dynamic_ncols=True,
                disable=not enabled)
