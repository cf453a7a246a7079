"""Fashion scenes: an offline, deterministic segmentation + detection dataset for CPU work.

Each scene is a crop of one of scikit-image's bundled photos (no download needed) with 1..N
Fashion-MNIST objects pasted on top. An object's silhouette is its resized 28x28 image thresholded
(> ``mask_threshold`` on 0..255, small enclosed holes filled); it is painted with a random hue whose
brightness is chosen to contrast with the background under it (light objects on dark backgrounds,
dark objects on light ones), textured by the Fashion-MNIST intensities. Later objects occlude
earlier ones, and every label and box comes from the *visible* part of each object.

Layout written under ``root`` (mmseg + COCO)::

    images/{train,val}/000000.png        RGB, size (h, w)
    labels/{train,val}/000000.png        uint8 single-channel ("L"), no palette
    annotations/instances_{train,val}.json   COCO instances (bbox + uncompressed RLE)
    manifest.json                        params, sources, content hash (written last)

Conventions:

* Segmentation: 11 classes, ``SEG_CLASSES[0] == 'background'``, label value = Fashion-MNIST
  class + 1; use mmseg ``reduce_zero_label=False``. 255 is the ignore index, but no pixel uses it.
* Detection: 10 categories, COCO ``category_id`` 1..10 = Fashion-MNIST class + 1 (no background
  category); ``bbox`` = ``[x, y, w, h]`` in pixel-edge units, tight around the visible mask
  (``w = x_last - x_first + 1``); ``area`` = visible pixel count; ``iscrowd`` = 0;
  ``segmentation`` = uncompressed COCO RLE (``{"size": [h, w], "counts": [...]}``, column-major,
  starting with a run of zeros). Objects whose visible area is below ``min_visible_area`` get no
  annotation (their few visible pixels stay in the label map and the image).
* Image ids are 1..N in file order; file names (``000000.png``, ...) are relative to
  ``images/<split>/``; annotation ids are 1..M per split.

Train/val separation: train scenes take objects from Fashion-MNIST's train split (60k) and
background crops from the left 75 % of every photo; val scenes take objects from the test split
(10k) and crops from the right 25 % of every photo. Both splits see every photo, never the same
pixels.

Determinism: every scene draws from its own ``numpy.random.Generator`` seeded with
``(seed, split, index)``, so the same parameters give byte-identical files (and scene ``i`` does not
depend on how many scenes were asked for). The cache key also records the numpy, Pillow and
scikit-image versions, since a change there may change the bytes.

Drawing one scene (sources, pasting, occlusion, boxes) lives in runners/data/scene_render.py; this
module holds the parameters, the writing and the cache.

API: :func:`generate` writes a dataset into a new directory; :func:`ensure` returns a cached one,
generating it atomically (temp directory + rename) only when missing or made with other params.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from kdbench.errors import UserError
from runners.data.scene_params import normalize_params
from runners.data.scene_render import (
    BACKGROUNDS,
    VAL_REGION_START,
    fashion_dir,
    load_fashion,
    sample_scene,
)

GENERATOR_VERSION = 1
FORMAT = "kdbench.fashion_scenes"
DATA_ENV = "KDBENCH_DATA"  # cache base directory (default ~/.cache/kdbench/data)

SEG_CLASSES = (
    "background",
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
DET_CLASSES = SEG_CLASSES[1:]
SEG_PALETTE = (
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
)
DET_PALETTE = SEG_PALETTE[1:]
IGNORE_INDEX = 255


_SPLITS = ("train", "val")


def _versions() -> dict[str, str]:
    import PIL
    import skimage

    return {"numpy": np.__version__, "pillow": PIL.__version__, "scikit-image": skimage.__version__}


def cache_key(params: Mapping[str, Any]) -> str:
    """SHA-256 of what determines the bytes: generator version, params, library versions."""
    blob = {
        "format": FORMAT,
        "generator_version": GENERATOR_VERSION,
        "params": normalize_params(params),
        "versions": _versions(),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# writing


def _png_bytes(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


class _Writer:
    """Writes files under a root and hashes (relative path, content) for the manifest."""

    def __init__(self, root: Path):
        self.root = root
        self.digests: dict[str, str] = {}

    def write(self, rel: str, data: bytes) -> None:
        _write_file(self.root / rel, data)
        self.digests[rel] = hashlib.sha256(data).hexdigest()

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for rel in sorted(self.digests):
            h.update(f"{rel}\0{self.digests[rel]}\n".encode())
        return h.hexdigest()


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _coco(split: str, images: list, annotations: list) -> bytes:
    doc = {
        "info": {
            "description": f"kdbench fashion_scenes ({split}): Fashion-MNIST objects on "
            "scikit-image photos",
            "version": str(GENERATOR_VERSION),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": name, "supercategory": "fashion"}
            for i, name in enumerate(DET_CLASSES)
        ],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _info(root: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    splits = {}
    for s in _SPLITS:
        rel = {
            "img_dir": f"images/{s}",
            "seg_map_dir": f"labels/{s}",
            "ann_file": f"annotations/instances_{s}.json",
        }
        splits[s] = {**rel, **{k + "_abs": str(root / v) for k, v in rel.items()}}
    return {
        "data_root": str(root),
        "manifest": str(root / "manifest.json"),
        "params": manifest["params"],
        "key": manifest["key"],
        "content_sha256": manifest["content_sha256"],
        "num_images": dict(manifest["num_images"]),
        "num_annotations": dict(manifest["num_annotations"]),
        "splits": splits,
        "img_suffix": ".png",
        "seg_map_suffix": ".png",
        "reduce_zero_label": False,
        "ignore_index": IGNORE_INDEX,
        "seg_metainfo": {"classes": SEG_CLASSES, "palette": [list(c) for c in SEG_PALETTE]},
        "det_metainfo": {"classes": DET_CLASSES, "palette": [list(c) for c in DET_PALETTE]},
        # flat aliases (runners/datasets.py reads these)
        "root": str(root),
        "seg_classes": SEG_CLASSES,
        "det_classes": DET_CLASSES,
        "palette": [list(c) for c in SEG_PALETTE],
    }


def _only(pool: tuple[np.ndarray, np.ndarray], classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The objects of ``classes`` in a Fashion-MNIST split (all of them, untouched, for every class)."""
    images, labels = pool
    if len(classes) == 10:
        return pool
    keep = np.isin(labels, classes)
    return images[keep], labels[keep]


def generate(root: str | os.PathLike, **params: Any) -> dict[str, Any]:
    """Write a dataset into ``root`` (must be new or empty) and return its description.

    Parameters (defaults in ``DEFAULTS``): ``seed`` (0), ``num_train`` (512), ``num_val`` (128),
    ``size`` (64 or (h, w), each 16..1024), ``objects_per_image`` ((1, 4), each 1..32),
    ``object_scale`` ((0.8, 2.0): object side = scale * 28 px * min(h, w) / 64, 0.25..4),
    ``min_visible_area`` (16 px: smaller visible parts get no COCO annotation),
    ``mask_threshold`` (40: silhouette = resized Fashion-MNIST pixel > threshold, 0..254),
    ``classes`` (all of 0..9: the Fashion-MNIST classes whose objects are pasted; the label values
    and the 11 segmentation classes stay as they are, the others are simply never drawn).
    Not atomic: use :func:`ensure` for a cache that is never seen half-written.
    """
    p = normalize_params(params)
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UserError(f"fashion_scenes: {root} exists and is not an empty directory")
    source = str(fashion_dir())
    pools = {s: _only(load_fashion(source, s), p["classes"]) for s in _SPLITS}

    for sub in ("images", "labels"):
        for s in _SPLITS:
            (root / sub / s).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)

    writer = _Writer(root)
    h, w = p["size"]
    counts = {"train": p["num_train"], "val": p["num_val"]}
    num_anns = {}
    for split_index, s in enumerate(_SPLITS):
        images, annotations = [], []
        for i in range(counts[s]):
            rng = np.random.default_rng([p["seed"], split_index, i])
            image, label, anns = sample_scene(rng, s, p, pools[s])
            name = f"{i:06d}.png"
            writer.write(f"images/{s}/{name}", _png_bytes(image, "RGB"))
            writer.write(f"labels/{s}/{name}", _png_bytes(label, "L"))
            images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
            for a in anns:
                a.pop("object_index")
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **a})
        writer.write(f"annotations/instances_{s}.json", _coco(s, images, annotations))
        num_anns[s] = len(annotations)

    manifest = {
        "format": FORMAT,
        "generator_version": GENERATOR_VERSION,
        "key": cache_key(p),
        "params": p,
        "versions": _versions(),
        "sources": {
            "fashion_mnist": source,
            "backgrounds": list(BACKGROUNDS),
            "val_region_start": VAL_REGION_START,
        },
        "num_images": counts,
        "num_annotations": num_anns,
        "files": sorted(writer.digests),
        "content_sha256": writer.content_hash(),
    }
    # Written last: a directory with a manifest is a complete dataset.
    _write_file(root / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
    return _info(root, manifest)


# --------------------------------------------------------------------------------------------
# cache


def default_root(params: Mapping[str, Any] | None = None) -> Path:
    """``$KDBENCH_DATA`` (or ``~/.cache/kdbench/data``) / ``fashion_scenes-<key[:12]>``."""
    base = Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "kdbench" / "data")
    return base.expanduser() / f"fashion_scenes-{cache_key(params or {})[:12]}"


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        m = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("format") == FORMAT else None


def verify(root: str | os.PathLike) -> bool:
    """Recompute the content hash of a dataset directory and compare it with its manifest."""
    root = Path(root)
    m = _read_manifest(root)
    if m is None:
        return False
    h = hashlib.sha256()
    for rel in sorted(m["files"]):
        try:
            digest = hashlib.sha256((root / rel).read_bytes()).hexdigest()
        except OSError:
            return False
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest() == m["content_sha256"]


def _valid(root: Path, key: str, check_content: bool) -> dict[str, Any] | None:
    m = _read_manifest(root)
    if m is None or m.get("key") != key:
        return None
    if check_content and not verify(root):
        return None
    return m


def _sweep_stale(parent: Path, name: str, max_age_s: float = 3600.0) -> None:
    """Remove temp/old directories of ``name`` left by killed processes (older than an hour)."""
    now = time.time()
    for d in parent.glob(f".{name}.*-*"):
        try:
            if d.is_dir() and now - d.stat().st_mtime > max_age_s:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def ensure(
    root: str | os.PathLike | None = None, *, check_content: bool = False, **params: Any
) -> dict[str, Any]:
    """Return the dataset for ``params``, generating it only if missing or made differently.

    ``root`` is the dataset directory itself; by default :func:`default_root`. It is (re)generated
    when it has no manifest or one whose key (generator version, params, library versions)
    differs; ``check_content=True`` also re-hashes every file. Generation goes to a temporary
    sibling directory that is renamed into place, so an interrupted run never leaves a dataset
    that looks complete. A ``root`` that exists but is neither empty nor a fashion_scenes
    dataset is refused rather than replaced.
    """
    p = normalize_params(params)
    key = cache_key(p)
    root = Path(root) if root is not None else default_root(p)
    root = root.expanduser().absolute()
    m = _valid(root, key, check_content)
    if m is not None:
        return _info(root, m)
    if root.exists() and _read_manifest(root) is None:
        if not root.is_dir() or any(root.iterdir()):
            raise UserError(
                f"fashion_scenes: {root} exists and is not a fashion_scenes dataset; "
                "pass a new or empty directory as root"
            )

    parent = root.parent
    parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(parent, root.name)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = parent / f".{root.name}.tmp-{token}"
    try:
        generate(tmp, **p)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    old = None
    if root.exists():  # stale/different dataset or empty dir: move aside, then swap in
        old = parent / f".{root.name}.old-{token}"
        try:
            os.rename(root, old)
        except FileNotFoundError:
            old = None  # someone else removed it meanwhile
    try:
        os.rename(tmp, root)
    except OSError:
        # Another process committed first: keep theirs if it is the dataset we want.
        shutil.rmtree(tmp, ignore_errors=True)
        m = _valid(root, key, False)
        if m is None:
            raise
        return _info(root, m)
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return _info(root, json.loads((root / "manifest.json").read_text()))
