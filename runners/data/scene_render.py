"""Fashion scenes, the drawing half: Fashion-MNIST and scikit-image photos as sources, and one
scene rendered from them (objects pasted with occlusion, labels and boxes from what stays
visible). runners/data/fashion_scenes.py writes datasets of such scenes and caches them; its
docstring describes the scenes and their conventions.
"""

from __future__ import annotations

import colorsys
import functools
import gzip
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from kdbench.errors import UserError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV = "KDBENCH_FASHION_MNIST_DIR"  # override for the directory above

FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


# scikit-image photos that ship with the wheel (no pooch/network); grey ones are used as RGB.
BACKGROUNDS = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "stereo_motorcycle",
    "text",
)
# The defaults of runners/data/fashion_scenes.py's parameters of the same names.
MASK_THRESHOLD, MIN_VISIBLE_AREA = 40, 16
VAL_REGION_START = 0.75  # val crops come from x >= 0.75 * width, train crops from x < that


# --------------------------------------------------------------------------------------------
# sources


def fashion_dir() -> Path:
    return Path(os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, dims = data[0:2], data[2], data[3]
    if zero != b"\0\0" or dtype_code != 0x08 or dims != ndim:
        raise UserError(f"fashion_scenes: {path} is not a uint8 idx file with {ndim} dimensions")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if arr.size != int(np.prod(shape)):
        raise UserError(f"fashion_scenes: {path} is truncated ({arr.size} values, shape {shape})")
    return arr.reshape(shape)


@functools.lru_cache(maxsize=4)
def load_fashion(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    d = Path(directory)
    img_name, lbl_name = FASHION_MNIST_FILES[split]
    if not (d / img_name).is_file() or not (d / lbl_name).is_file():
        raise UserError(
            f"fashion_scenes: Fashion-MNIST not found in {d} (need {img_name}, {lbl_name}); "
            f"install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
            f"or set {FASHION_MNIST_ENV}"
        )
    images = _read_idx(d / img_name, 3)
    labels = _read_idx(d / lbl_name, 1)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28) or labels.max() > 9:
        raise UserError(f"fashion_scenes: unexpected Fashion-MNIST files in {d}")
    return images, labels


@functools.lru_cache(maxsize=1)
def _load_backgrounds() -> tuple[np.ndarray, ...]:
    try:
        import skimage.data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise UserError(
            "fashion_scenes: needs scikit-image for its bundled photos (pip install scikit-image)"
        ) from e
    out = []
    for name in BACKGROUNDS:
        img = getattr(skimage.data, name)()
        if isinstance(img, tuple):  # stereo_motorcycle -> (left, right, disparity)
            img = img[0]
        img = np.asarray(img)
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        out.append(np.ascontiguousarray(img[:, :, :3].astype(np.uint8)))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# rendering


def _fill_small_holes(mask: np.ndarray, max_hole: int) -> np.ndarray:
    """Fill background components of ``mask`` that do not touch the border and are small."""
    holes, n = ndimage.label(~mask)
    if n <= 1:  # only the outside (or nothing): no enclosed hole
        return mask
    sizes = np.bincount(holes.ravel())
    border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    small = sizes <= max_hole
    small[0] = False
    small[border] = False
    return mask | small[holes]


def _object_raster(image28: np.ndarray, side: int, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    im = Image.fromarray(image28).resize((side, side), Image.BILINEAR)
    intensity = np.asarray(im)
    mask = intensity > threshold
    mask = _fill_small_holes(mask, max(2, (side * side) // 100))
    return intensity, mask


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE: column-major run lengths, the first run counts zeros."""
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def render_scene(
    background: np.ndarray,
    objects: list[Mapping[str, Any]],
    *,
    mask_threshold: int = MASK_THRESHOLD,
    min_visible_area: int = MIN_VISIBLE_AREA,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Paste ``objects`` (in order, later on top) onto ``background`` (h, w, 3 uint8).

    Each object: ``image`` (28x28 uint8), ``category`` (0..9), ``top``, ``left``, ``side`` (pixels;
    the square must lie inside the scene), and either ``color`` (r, g, b) or ``hue``, ``sat``,
    ``tone`` in [0, 1] (brightness picked to contrast with the background under the object).
    Returns ``(image, label_map, annotations)``; annotations are COCO dicts without ids, each with
    ``object_index`` (position in ``objects``).
    """
    canvas = np.array(background, dtype=np.uint8, copy=True)
    h, w = canvas.shape[:2]
    owner = np.full((h, w), -1, dtype=np.int16)
    categories = []
    for k, obj in enumerate(objects):
        side, top, left = int(obj["side"]), int(obj["top"]), int(obj["left"])
        if not (0 <= top and top + side <= h and 0 <= left and left + side <= w):
            raise ValueError(f"object {k} ({top}, {left}, side {side}) outside {h}x{w} scene")
        intensity, mask = _object_raster(np.asarray(obj["image"], np.uint8), side, mask_threshold)
        window = canvas[top : top + side, left : left + side]
        if "color" in obj:
            color = np.asarray(obj["color"], dtype=np.float64)
        else:
            under = _luminance(window[mask].astype(np.float64)).mean() if mask.any() else 128.0
            value = 0.70 + 0.30 * obj["tone"] if under < 128 else 0.08 + 0.30 * obj["tone"]
            color = np.array(colorsys.hsv_to_rgb(obj["hue"], obj["sat"], value)) * 255.0
        shade = 0.5 + 0.5 * (intensity.astype(np.float64) / 255.0)
        painted = np.clip(shade[..., None] * color, 0, 255).round().astype(np.uint8)
        window[mask] = painted[mask]
        owner[top : top + side, left : left + side][mask] = k
        categories.append(int(obj["category"]))

    lut = np.array([c + 1 for c in categories] + [0], dtype=np.uint8)  # owner -1 -> last entry
    label = lut[owner]
    anns = []
    for k, cat in enumerate(categories):
        vis = owner == k
        area = int(vis.sum())
        if area < min_visible_area:
            continue
        rows = np.flatnonzero(vis.any(axis=1))
        cols = np.flatnonzero(vis.any(axis=0))
        x0, y0 = int(cols[0]), int(rows[0])
        bw, bh = int(cols[-1]) - x0 + 1, int(rows[-1]) - y0 + 1
        anns.append(
            {
                "object_index": k,
                "category_id": cat + 1,
                "bbox": [x0, y0, bw, bh],
                "area": area,
                "iscrowd": 0,
                "segmentation": _rle(vis),
            }
        )
    return canvas, label, anns


def _background_crop(rng: np.random.Generator, split: str, h: int, w: int) -> np.ndarray:
    photos = _load_backgrounds()
    photo = photos[int(rng.integers(len(photos)))]
    ph, pw = photo.shape[:2]
    split_x = int(pw * VAL_REGION_START)
    x_lo, x_hi = (0, split_x) if split == "train" else (split_x, pw)
    aspect = w / h
    ch_max = min(ph, (x_hi - x_lo) / aspect)
    ch_hi = min(ch_max, 192.0 * h / 64)
    ch_lo = min(ch_hi, 48.0 * h / 64)
    ch = float(rng.uniform(ch_lo, ch_hi))
    cw = ch * aspect
    y = float(rng.uniform(0, ph - ch))
    x = float(rng.uniform(x_lo, x_hi - cw))
    flip = bool(rng.random() < 0.5)
    crop = Image.fromarray(photo).resize((w, h), Image.BILINEAR, box=(x, y, x + cw, y + ch))
    arr = np.asarray(crop)
    return arr[:, ::-1] if flip else arr


def sample_scene(
    rng: np.random.Generator, split: str, p: Mapping[str, Any], pool: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    h, w = p["size"]
    background = _background_crop(rng, split, h, w)
    images, labels = pool
    lo, hi = p["objects_per_image"]
    n = int(rng.integers(lo, hi + 1))
    unit = min(h, w) / 64.0
    objects = []
    for _ in range(n):
        idx = int(rng.integers(images.shape[0]))
        scale = float(rng.uniform(*p["object_scale"]))
        side = int(np.clip(round(28 * scale * unit), 8, min(h, w)))
        objects.append(
            {
                "image": images[idx],
                "category": int(labels[idx]),
                "side": side,
                "top": int(rng.integers(0, h - side + 1)),
                "left": int(rng.integers(0, w - side + 1)),
                "hue": float(rng.random()),
                "sat": float(rng.uniform(0.35, 1.0)),
                "tone": float(rng.random()),
            }
        )
    return render_scene(
        background,
        objects,
        mask_threshold=p["mask_threshold"],
        min_visible_area=p["min_visible_area"],
    )
