"""Fashion scenes: the offline dataset is deterministic, consistent between its label maps and COCO
boxes, handles occlusion, caches atomically and rejects bad parameters with a UserError."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skimage")
pytest.importorskip("scipy")
from PIL import Image  # noqa: E402

from kdbench.errors import UserError  # noqa: E402
from runners.data import fashion_scenes as fs  # noqa: E402
from runners.data import scene_render  # noqa: E402

FASHION_MNIST_FILES = [f for pair in scene_render.FASHION_MNIST_FILES.values() for f in pair]
needs_fashion_mnist = pytest.mark.skipif(
    not all((scene_render.fashion_dir() / f).is_file() for f in FASHION_MNIST_FILES),
    reason="Debian's dataset-fashion-mnist is not installed (tools/setup.sh installs it)",
)

SMALL = dict(num_train=6, num_val=3, size=(48, 64), objects_per_image=(2, 5))


def files_of(root):
    root = Path(root)
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def decode_rle(rle):
    h, w = rle["size"]
    flat = np.zeros(h * w, dtype=bool)
    pos, value = 0, False
    for run in rle["counts"]:
        flat[pos : pos + run] = value
        pos, value = pos + run, not value
    assert pos == h * w
    return flat.reshape((w, h)).T  # column-major


def solid(category, top, left, side, color=(255, 0, 0)):
    return {
        "image": np.full((28, 28), 255, np.uint8),
        "category": category,
        "top": top,
        "left": left,
        "side": side,
        "color": color,
    }


@needs_fashion_mnist
def test_the_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    a = fs.generate(tmp_path / "a", seed=3, **SMALL)
    b = fs.generate(tmp_path / "b", seed=3, **SMALL)
    c = fs.generate(tmp_path / "c", seed=4, **SMALL)
    files_a, files_b = files_of(a["data_root"]), files_of(b["data_root"])
    files_c = files_of(c["data_root"])
    assert len(files_a) == 2 * (6 + 3) + 2 + 1  # images + labels, two COCO files, manifest
    assert files_a == files_b
    assert a["content_sha256"] == b["content_sha256"] != c["content_sha256"]
    differing = [k for k in files_a if k.startswith("images/") and files_a[k] != files_c[k]]
    assert len(differing) == 9


@needs_fashion_mnist
def test_images_are_rgb_and_label_maps_single_channel_with_values_0_to_10(tmp_path):
    info = fs.generate(tmp_path / "d", seed=0, num_train=20, num_val=5, size=(48, 64))
    seen = set()
    for split, n in (("train", 20), ("val", 5)):
        for i in range(n):
            img = Image.open(Path(info["data_root"], "images", split, f"{i:06d}.png"))
            lbl = Image.open(Path(info["data_root"], "labels", split, f"{i:06d}.png"))
            assert img.mode == "RGB" and img.size == (64, 48)
            assert lbl.mode == "L" and lbl.size == (64, 48) and lbl.getpalette() is None
            values = np.unique(np.asarray(lbl))
            assert values.min() >= 0 and values.max() <= 10
            seen.update(values.tolist())
    assert 0 in seen and len(seen) >= 6  # background and several object classes
    assert info["seg_metainfo"]["classes"][0] == "background"
    assert len(info["seg_metainfo"]["classes"]) == 11 == len(info["seg_metainfo"]["palette"])
    assert len(info["det_metainfo"]["classes"]) == 10
    assert info["root"] == info["data_root"] and info["det_classes"] == info["seg_classes"][1:]


@needs_fashion_mnist
def test_every_coco_box_is_inside_its_image_and_tight_around_visible_pixels_of_its_class(tmp_path):
    info = fs.generate(tmp_path / "d", seed=1, **SMALL)
    for split in ("train", "val"):
        coco = json.loads(Path(info["splits"][split]["ann_file_abs"]).read_text())
        assert [c["id"] for c in coco["categories"]] == list(range(1, 11))
        images = {im["id"]: im for im in coco["images"]}
        assert coco["annotations"], "a few scenes with 2..5 objects must give annotations"
        for ann in coco["annotations"]:
            im = images[ann["image_id"]]
            label = np.asarray(
                Image.open(Path(info["data_root"], "labels", split, im["file_name"]))
            )
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and w >= 1 and h >= 1
            assert x + w <= im["width"] and y + h <= im["height"]
            assert 1 <= ann["category_id"] <= 10 and ann["iscrowd"] == 0
            mask = decode_rle(ann["segmentation"])
            assert mask.sum() == ann["area"] >= info["params"]["min_visible_area"]
            assert (label[mask] == ann["category_id"]).all()
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            assert [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1] == ann["bbox"]
            inside = label[y : y + h, x : x + w] == ann["category_id"]
            assert (
                inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            )


def test_a_fully_occluded_object_has_no_annotation_and_a_half_hidden_one_a_shrunk_box():
    bg = np.zeros((40, 40, 3), np.uint8)
    image, label, anns = scene_render.render_scene(
        bg,
        [
            solid(0, 5, 5, 8),
            solid(4, 0, 0, 20, (0, 255, 0)),
            solid(2, 20, 0, 20),
            solid(8, 20, 10, 20, (0, 0, 255)),
        ],
        min_visible_area=16,
    )
    assert [a["object_index"] for a in anns] == [1, 2, 3]  # object 0 is fully hidden under 1
    assert not (label == 1).any()
    by_index = {a["object_index"]: a for a in anns}
    assert by_index[2]["bbox"] == [0, 20, 10, 20] and by_index[2]["area"] == 200
    assert by_index[3]["bbox"] == [10, 20, 20, 20] and by_index[3]["category_id"] == 9
    assert (image[25, 15] == (0, 0, 255)).all() and label[25, 15] == 9


def test_an_object_left_with_fewer_visible_pixels_than_the_minimum_is_dropped():
    bg = np.full((32, 32, 3), 200, np.uint8)
    objects = [solid(1, 0, 0, 10), solid(3, 0, 3, 10)]  # the second hides all but 3 columns
    _, label, anns = scene_render.render_scene(bg, objects, min_visible_area=31)
    assert (label == 2).sum() == 30  # a 10x3 sliver of the first object is still labelled
    assert [a["category_id"] for a in anns] == [4]


@needs_fashion_mnist
def test_ensure_reuses_a_cached_dataset_and_regenerates_for_other_params(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "cache"))
    first = fs.ensure(**SMALL)
    assert Path(first["data_root"]).parent == tmp_path / "cache"
    assert Path(first["data_root"]).name.startswith("fashion_scenes-")
    manifest = Path(first["manifest"])
    mtime = manifest.stat().st_mtime_ns

    calls = []
    real_generate = fs.generate
    monkeypatch.setattr(fs, "generate", lambda *a, **k: calls.append(k) or real_generate(*a, **k))
    again = fs.ensure(**{**SMALL, "size": list(SMALL["size"])}, check_content=True)
    assert calls == [] and manifest.stat().st_mtime_ns == mtime
    assert again["content_sha256"] == first["content_sha256"]

    other = fs.ensure(**{**SMALL, "seed": 9})
    assert len(calls) == 1 and other["data_root"] != first["data_root"]

    explicit = tmp_path / "mine"
    fs.ensure(explicit, **SMALL)
    fs.ensure(explicit, **{**SMALL, "num_val": 4})  # same root, other params: replaced
    assert len(calls) == 3
    assert len(list((explicit / "images" / "val").iterdir())) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "mine"]  # no temp left over


@needs_fashion_mnist
def test_an_interrupted_generation_leaves_no_complete_looking_dataset(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    old = fs.ensure(root, **SMALL)
    real_write = fs._write_file
    written = []

    def failing_write(path, data):
        written.append(path)
        if len(written) == 7:
            raise KeyboardInterrupt("simulated interrupt")
        real_write(path, data)

    monkeypatch.setattr(fs, "_write_file", failing_write)
    with pytest.raises(KeyboardInterrupt):
        fs.ensure(root, **{**SMALL, "seed": 5})
    assert all(root not in p.parents for p in written)  # only ever wrote to a temp directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["params"]["seed"] == 0 and manifest["content_sha256"] == old["content_sha256"]
    assert fs.verify(root)

    written.clear()
    with pytest.raises(KeyboardInterrupt):
        fs.ensure(tmp_path / "fresh", **SMALL)
    assert not (tmp_path / "fresh").exists()

    monkeypatch.setattr(fs, "_write_file", real_write)
    assert fs.ensure(tmp_path / "fresh", **SMALL)["content_sha256"] == old["content_sha256"]


@needs_fashion_mnist
def test_scenes_limited_to_some_classes_show_only_those_and_all_classes_are_the_default(tmp_path):
    # Trouser (1) and bag (8): label values 2 and 9, besides the background 0.
    info = fs.generate(tmp_path / "two", classes=[8, 1], **SMALL)
    assert info["params"]["classes"] == [1, 8]
    for split in ("train", "val"):
        labels = set()
        for path in sorted((tmp_path / "two" / "labels" / split).glob("*.png")):
            labels |= set(np.unique(np.asarray(Image.open(path))).tolist())
        assert labels == {0, 2, 9}, split
        coco = json.loads((tmp_path / "two" / "annotations" / f"instances_{split}.json").read_text())
        assert {a["category_id"] for a in coco["annotations"]} == {2, 9}
    # Naming every class is the default itself: the same files.
    every = fs.generate(tmp_path / "every", classes=list(range(10)), **SMALL)
    assert every["content_sha256"] == fs.generate(tmp_path / "default", **SMALL)["content_sha256"]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"num_train": 0}, "num_train"),
        ({"num_val": 2.5}, "num_val"),
        ({"seed": -1}, "seed"),
        ({"size": 8}, "size"),
        ({"size": (64,)}, "size"),
        ({"objects_per_image": (3, 2)}, "objects_per_image"),
        ({"objects_per_image": (0, 2)}, "objects_per_image"),
        ({"object_scale": (0.1, 1.0)}, "object_scale"),
        ({"min_visible_area": 0}, "min_visible_area"),
        ({"mask_threshold": 300}, "mask_threshold"),
        ({"colour": "red"}, "colour"),
        ({"classes": []}, "classes"),
        ({"classes": [1, 10]}, "classes"),
        ({"classes": [1, 1]}, "classes"),
    ],
)
def test_bad_parameters_raise_a_one_line_user_error_naming_the_parameter(tmp_path, params, named):
    with pytest.raises(UserError) as err:
        fs.ensure(tmp_path / "ds", **params)
    assert named in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "ds").exists()


def test_a_root_that_holds_something_else_is_refused_not_replaced(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a fashion_scenes dataset"):
        fs.ensure(tmp_path / "ds", num_train=1, num_val=1)
    with pytest.raises(UserError, match="not an empty directory"):
        fs.generate(tmp_path / "ds", num_train=1, num_val=1)
    assert (tmp_path / "ds" / "precious.txt").read_text() == "keep me"


def test_missing_fashion_mnist_tells_to_install_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv(scene_render.FASHION_MNIST_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        fs.generate(tmp_path / "ds", num_train=1, num_val=1)


def test_train_and_val_scenes_draw_on_disjoint_objects_and_background_regions(
    tmp_path, monkeypatch
):
    # Fashion-MNIST: the train split feeds train scenes, the test split val scenes.
    def fake_pool(directory, split):
        category = 0 if split == "train" else 9
        return np.full((5, 28, 28), 255, np.uint8), np.full(5, category, np.uint8)

    # Photos: the left 75 % of each is black, the right 25 % white.
    photo = np.zeros((200, 400, 3), np.uint8)
    photo[:, 300:] = 255
    monkeypatch.setattr(fs, "load_fashion", fake_pool)
    monkeypatch.setattr(scene_render, "_load_backgrounds", lambda: (photo,))
    info = fs.generate(tmp_path / "d", num_train=8, num_val=8, size=32, object_scale=(0.3, 0.3))
    for split, category, lo, hi in (("train", 1, 0, 60), ("val", 10, 195, 255)):
        coco = json.loads(Path(info["splits"][split]["ann_file_abs"]).read_text())
        assert {a["category_id"] for a in coco["annotations"]} == {category}
        for i in range(8):
            name = f"{i:06d}.png"
            image = np.asarray(Image.open(Path(info["data_root"], "images", split, name)))
            label = np.asarray(Image.open(Path(info["data_root"], "labels", split, name)))
            background = image[label == 0]
            assert background.size and lo <= background.min() and background.max() <= hi
