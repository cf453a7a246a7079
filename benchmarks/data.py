"""The dataset preflight on trees of the official size: ``kdbench bench --suite data``.

``run(repeats)`` writes, in a temporary directory (in /dev/shm when there is one), a Cityscapes tree
as ``kdbench data prepare`` leaves it (2,975 train and 500 val images in their 18 and 3 cities,
each with the five gtFine files: 20,850 files), a COCO 2017 tree (118,287 + 5,000 images and
both annotation files, listing every image), a VOC 2012 tree with SBD's augmented set as
``kdbench data prepare voc`` leaves it (10,582 + 1,449 images with their label maps and lists) and
an ADE20K tree (20,210 + 2,000 images and label maps): real file names, empty files, no pixels. It then
times ``runners.data.layout.check`` as the preflight calls it:

- ``uncached``: with an empty cache (``$KDBENCH_CACHE``), every folder listed and the annotation
  files scanned; here from the page cache, so a cluster file system's first listing is slower;
- ``cached``: the same tree again, unchanged: its folders' times compared with the cache's.

Target: the cached check under a second. The annotation files here list images only (about 10 MB
for train2017); the official one also holds 860k annotations (448 MB), which only the uncached
scan reads.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from kdbench.table import text_table
from runners.data import layout

TARGET_S = 1.0
# Images per city in Cityscapes' fine train and val splits (the official leftImg8bit_trainvaltest.zip).
CITIES = {
    "train": {"aachen": 174, "bochum": 96, "bremen": 316, "cologne": 154, "darmstadt": 85, "dusseldorf": 221,
              "erfurt": 109, "hamburg": 248, "hanover": 196, "jena": 119, "krefeld": 99, "monchengladbach": 94,
              "strasbourg": 365, "stuttgart": 196, "tubingen": 144, "ulm": 95, "weimar": 142, "zurich": 122},
    "val": {"frankfurt": 267, "lindau": 59, "munster": 174},
}
GT_FILES = ("_gtFine_color.png", "_gtFine_instanceIds.png", "_gtFine_labelIds.png", "_gtFine_labelTrainIds.png",
            "_gtFine_polygons.json")
SETTLED = 3600  # seconds: the generated tree is dated an hour back, as a download made earlier


def _touch(path: Path) -> None:
    with open(path, "wb"):
        pass


def _cityscapes(root: Path) -> None:
    for split, cities in CITIES.items():
        for city, count in cities.items():
            images, labels = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
            images.mkdir(parents=True), labels.mkdir(parents=True)
            for index in range(count):
                stem = f"{city}_{index:06d}_000019"
                _touch(images / f"{stem}_leftImg8bit.png")
                for suffix in GT_FILES:
                    _touch(labels / f"{stem}{suffix}")


def _coco(root: Path) -> None:
    (root / "annotations").mkdir(parents=True)
    first = 1
    for split, count in layout.OFFICIAL["coco"].items():
        folder = root / split
        folder.mkdir()
        images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 480, "width": 640}
                  for i in range(first, first + count)]
        for image in images:
            _touch(folder / image["file_name"])
        text = json.dumps({"info": {"description": "kdbench bench"}, "licenses": [], "images": images,
                           "annotations": [], "categories": [{"id": 1, "name": "person"}]})
        (root / "annotations" / f"instances_{split}.json").write_text(text)
        first += count


# VOC 2012's segmentation train and val lists, and SBD's images beyond both (aug.txt): 1,464 + 9,118 = 10,582.
VOC_SPLITS = {"train": 1464, "val": 1449, "aug": 9118}


def _voc(root: Path) -> None:
    """VOC2012 as ``kdbench data prepare voc`` leaves it: the three lists, every image they name, and
    each one's label map (SegmentationClass for train and val, SegmentationClassAug for aug)."""
    lists = root / layout.VOC_LISTS
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", layout.VOC_LISTS):
        (root / folder).mkdir(parents=True)
    first = 0
    for name, count in VOC_SPLITS.items():
        ids = [f"20{first + i:08d}" for i in range(count)]
        labels = root / ("SegmentationClassAug" if name == "aug" else "SegmentationClass")
        for image in ids:
            _touch(root / "JPEGImages" / f"{image}.jpg")
            _touch(labels / f"{image}.png")
        (lists / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
        first += count


def _ade20k(root: Path) -> None:
    for (split, count), folder in zip(layout.OFFICIAL["ade20k"].items(), ("training", "validation")):
        (root / "images" / folder).mkdir(parents=True), (root / "annotations" / folder).mkdir(parents=True)
        for index in range(count):
            stem = f"ADE_{split}_{index + 1:08d}"
            _touch(root / "images" / folder / f"{stem}.jpg")
            _touch(root / "annotations" / folder / f"{stem}.png")


def make_tree(root: Path, name: str) -> Path:
    """A tree of dataset ``name`` of the official size in file names (empty files), dated an hour back."""
    root = Path(root)
    {"cityscapes": _cityscapes, "coco": _coco, "voc": _voc, "ade20k": _ade20k}[name](root)
    date_back(root)
    return root


def date_back(root: Path) -> None:
    """Every folder of ``root`` and the files that are read (COCO's annotations, VOC's lists) dated an
    hour back."""
    past = time.time() - SETTLED
    for folder, _, files in os.walk(root):
        for file in files if folder.endswith(("annotations", layout.VOC_LISTS)) else ():
            os.utime(Path(folder) / file, (past, past))
        os.utime(folder, (past, past))


def _median_check(name: str, root: Path, repeats: int, fresh_cache: bool) -> tuple[float, layout.Layout]:
    seconds, found = [], None
    previous = os.environ.get("KDBENCH_CACHE")
    with tempfile.TemporaryDirectory() as cache:
        try:
            for attempt in range(repeats):
                os.environ["KDBENCH_CACHE"] = f"{cache}/{attempt}" if fresh_cache else cache
                if not fresh_cache and attempt == 0:
                    layout.check(name, root)  # the first listing, which fills the cache
                start = time.perf_counter()
                found = layout.check(name, root)
                seconds.append(time.perf_counter() - start)
        finally:
            if previous is None:
                os.environ.pop("KDBENCH_CACHE", None)
            else:
                os.environ["KDBENCH_CACHE"] = previous
    return statistics.median(seconds), found


def run(repeats: int = 5) -> list[dict]:
    """One row per dataset: its files, the uncached and cached check (medians of ``repeats``)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="kdbench-data-",
                                     dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as base:
        for name in layout.LAYOUTS:
            root = make_tree(Path(base) / name, name)
            files = sum(len(f) for _, _, f in os.walk(root))
            uncached, found = _median_check(name, root, repeats, fresh_cache=True)
            cached, again = _median_check(name, root, repeats, fresh_cache=False)
            if not found.complete or again != found:  # a tree of the official size must check complete
                raise RuntimeError(f"kdbench bench --suite data: {name}: {layout.describe(found)}")
            rows.append({"suite": "data", "dataset": name, "files": files,
                         "images": {split: s["images"] for split, s in found.splits.items()},
                         "uncached_s": round(uncached, 4), "cached_s": round(cached, 5), "target_s": TARGET_S,
                         "meets_target": cached <= TARGET_S, "speedup": round(uncached / cached, 1)})
    return rows


def format_rows(rows: list[dict]) -> str:
    header = ("dataset", "files", "images", "uncached s", "cached s", "target", "met", "uncached/cached")
    return "\n".join(text_table(header, [
        (r["dataset"], str(r["files"]), " + ".join(str(n) for n in r["images"].values()), f"{r['uncached_s']:.3f}",
         f"{r['cached_s']:.4f}", f"<= {r['target_s']:g}", "yes" if r["meets_target"] else "NO", f"{r['speedup']:.0f}")
        for r in rows], right=range(1, len(header))))
