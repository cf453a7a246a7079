"""Pascal VOC 2012 with SBD's augmented set, and ADE20K: ``kdbench data check`` counts what mmseg
will read against the official splits (VOC aug 10,582 train / 1,449 val; ADE20K 20,210 / 2,000),
and ``kdbench data prepare voc`` builds the augmented set from the SBD download as mmseg's
``voc_aug.py`` does. All through the CLI, on generated trees in the downloads' layouts."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from kdbench.spec import parse_run
from runners.datasets import dataset_configs
from tests.launch_helpers import dump_yaml, run_cli

VOC_TRAIN, VOC_VAL = ["2007_000032", "2007_000039", "2007_000063"], ["2007_000033", "2007_000042"]
# SBD's lists overlap VOC's: 2007_000039 is also VOC train, 2007_000033 and 2007_000042 are VOC val.
SBD_TRAIN, SBD_VAL = ["2007_000039", "2008_000002", "2008_000003", "2007_000033"], ["2008_000007", "2007_000042"]
AUG = ["2008_000002", "2008_000003", "2008_000007"]           # SBD's, less VOC's train and val
TRAINAUG = sorted(VOC_TRAIN + AUG)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))


def _label(rng: np.random.Generator, shape=(24, 32)) -> np.ndarray:
    label = rng.integers(0, 21, shape).astype(np.uint8)
    label[0] = 255   # the void border VOC and SBD draw
    return label


def make_voc(devkit: Path, sbd: bool = True) -> dict[str, np.ndarray]:
    """VOCdevkit/VOC2012 as VOCtrainval_11-May-2012.tar unpacks it (a few images), and SBD's
    benchmark_RELEASE beside it; SBD's class map of each id it has."""
    rng = np.random.default_rng(0)
    root = devkit / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    for image in sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL)):
        cv2.imwrite(str(root / "JPEGImages" / f"{image}.jpg"), rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    for image in VOC_TRAIN + VOC_VAL:
        cv2.imwrite(str(root / "SegmentationClass" / f"{image}.png"), _label(rng))
    for name, ids in (("train", VOC_TRAIN), ("val", VOC_VAL)):
        (root / "ImageSets/Segmentation" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    maps = {}
    if sbd:
        dataset = devkit / "benchmark_RELEASE" / "dataset"
        (dataset / "cls").mkdir(parents=True)
        for image in SBD_TRAIN + SBD_VAL:
            maps[image] = _label(rng)
            savemat(dataset / "cls" / f"{image}.mat", {"GTcls": {
                "Segmentation": maps[image], "CategoriesPresent": np.unique(maps[image][1:]).astype(np.uint8)}})
        for name, ids in (("train", SBD_TRAIN), ("val", SBD_VAL)):
            (dataset / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return maps


def said(text: str) -> str:
    """Text with its runs of spaces as one (the check pads its columns)."""
    return " ".join(text.split())


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_a_voc_tree_without_the_augmented_set_is_refused_with_the_command_that_makes_it(tmp_path):
    """Guarantee: A VOC tree without SBD's augmented set is refused in one line with the command that makes it
    (SBD's download when it is not there)."""
    make_voc(tmp_path / "VOCdevkit")
    root = tmp_path / "VOCdevkit" / "VOC2012"
    code, out, err = run_cli("data", "check", "voc", str(root))
    assert code == 2 and err.strip().endswith(f"fix: kdbench data prepare voc {root}"), err
    assert "ImageSets/Segmentation/aug.txt does not exist" in err and len(err.strip().splitlines()) == 1
    assert "train 3 of 10582 images (PARTIAL" in said(out) and "val 2 of 1449 images" in said(out)
    bare = tmp_path / "bare" / "VOCdevkit"
    make_voc(bare, sbd=False)   # no SBD beside it: the fix is its download, then the prepare
    code, _, err = run_cli("data", "check", "voc", str(bare / "VOC2012"))
    assert code == 2 and "semantic_contours/benchmark.tgz && tar xzf benchmark.tgz -C" in err
    assert err.strip().endswith(f"then kdbench data prepare voc {bare / 'VOC2012'}")


def test_data_prepare_voc_builds_the_augmented_set_as_mmseg_does_and_a_second_call_writes_nothing(tmp_path):
    """Guarantee: `data prepare voc` writes SBD's class maps pixel for pixel and the aug and trainaug lists
    mmseg's voc_aug.py writes; a second call writes nothing, an interrupted one is resumed."""
    maps = make_voc(tmp_path / "VOCdevkit")
    root = tmp_path / "VOCdevkit" / "VOC2012"
    code, out, err = run_cli("data", "prepare", "voc", str(root), "--workers", "2", "--no-progress")
    assert code == 0, err
    assert "converted 6 SBD class maps into SegmentationClassAug (0 already converted)" in out
    assert "train 6 of 10582 images (PARTIAL" in said(out) and "val 2 of 1449 images" in said(out)
    for image, label in maps.items():
        written = cv2.imread(str(root / "SegmentationClassAug" / f"{image}.png"), cv2.IMREAD_UNCHANGED)
        assert written.dtype == np.uint8 and np.array_equal(written, label), image
    lists = root / "ImageSets" / "Segmentation"
    assert (lists / "aug.txt").read_text().split() == AUG
    assert (lists / "trainaug.txt").read_text().split() == TRAINAUG
    before = _files(tmp_path / "VOCdevkit")
    code, out, _ = run_cli("data", "prepare", "voc", str(root), "--no-progress")
    assert code == 0 and "converted 0 SBD class maps into SegmentationClassAug (6 already converted)" in out
    assert _files(tmp_path / "VOCdevkit") == before   # nothing written, nothing touched


def test_an_interrupted_voc_prepare_converts_what_is_left_and_removes_its_temporary_files(tmp_path):
    make_voc(tmp_path / "VOCdevkit")
    root = tmp_path / "VOCdevkit" / "VOC2012"
    assert run_cli("data", "prepare", "voc", str(root), "--no-progress")[0] == 0
    (root / "SegmentationClassAug" / "2008_000003.png").unlink()
    (root / "ImageSets" / "Segmentation" / "aug.txt").unlink()
    leftover = root / "SegmentationClassAug" / ".2008_000007.png.a1b2c3d4.tmp"   # killed before its rename
    leftover.write_bytes(b"half a png")
    code, out, err = run_cli("data", "prepare", "voc", str(root), "--no-progress")
    assert code == 0 and "converted 1 SBD class maps into SegmentationClassAug (5 already converted)" in out, err
    assert not leftover.exists() and (root / "ImageSets" / "Segmentation" / "aug.txt").read_text().split() == AUG


def test_mmseg_reads_the_prepared_voc_tree_as_its_aug_config_does(tmp_path):
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    import runners.data.holdout  # noqa: F401  (registers HeldOutSplit, as a run's config loading does)

    register_all_modules()
    maps = make_voc(tmp_path / "VOCdevkit")
    root = tmp_path / "VOCdevkit" / "VOC2012"
    assert run_cli("data", "prepare", "voc", str(root), "--no-progress")[0] == 0
    run = parse_run({"task": "seg", "student": {"config": "tiny_seg_student"},
                     "dataset": {"name": "voc", "root": str(root)}})
    configs = dataset_configs(run)
    train = DATASETS.build(configs["train_dataloader"]["dataset"])
    val = DATASETS.build(configs["val_dataloader"]["dataset"])
    assert len(train) == 6 and len(val) == 2 and len(train.metainfo["classes"]) == 21
    paths = [train.get_data_info(i)["seg_map_path"] for i in range(len(train))]
    assert sorted(Path(p).stem for p in paths) == TRAINAUG
    aug_item = next(p for p in paths if "SegmentationClassAug" in p)
    assert np.array_equal(cv2.imread(aug_item, cv2.IMREAD_UNCHANGED), maps[Path(aug_item).stem])
    held = parse_run({"task": "seg", "student": {"config": "tiny_seg_student"},   # a tune stage's split of train
                      "dataset": {"name": "voc", "root": str(root), "holdout": {"fraction": 0.5}}})
    parts = dataset_configs(held)
    rest = DATASETS.build(parts["train_dataloader"]["dataset"])
    evaluated = DATASETS.build(parts["val_dataloader"]["dataset"])
    steps = [type(t).__name__ for t in evaluated.dataset.datasets[1].pipeline.transforms]
    assert len(rest) == len(evaluated) == 3 and steps[1] == "Resize"   # the held-out share under the test pipeline


def make_ade20k(root: Path, training: int = 3, validation: int = 2) -> None:
    """ADEChallengeData2016 as its zip unpacks it (a few images)."""
    rng = np.random.default_rng(1)
    for folder, count in (("training", training), ("validation", validation)):
        (root / "images" / folder).mkdir(parents=True)
        (root / "annotations" / folder).mkdir(parents=True)
        for index in range(count):
            stem = f"ADE_{folder[:5]}_{index + 1:08d}"
            cv2.imwrite(str(root / "images" / folder / f"{stem}.jpg"), rng.integers(0, 255, (20, 28, 3), np.uint8))
            cv2.imwrite(str(root / "annotations" / folder / f"{stem}.png"), rng.integers(0, 151, (20, 28), np.uint8))


def test_data_check_ade20k_counts_against_the_official_split_and_names_a_missing_label_map(tmp_path):
    """Guarantee: `data check ade20k` counts against the official 20,210 / 2,000 and names a missing label map."""
    root = tmp_path / "ADEChallengeData2016"
    make_ade20k(root)
    code, out, err = run_cli("data", "check", "ade20k", str(root))
    assert code == 0, err
    assert "train 3 of 20210 images (PARTIAL" in said(out) and "val 2 of 2000 images (PARTIAL" in said(out)
    assert "uses: images/training/*.jpg, annotations/training/*.png" in out
    (root / "annotations" / "validation" / "ADE_valid_00000002.png").unlink()
    code, out, err = run_cli("data", "check", "ade20k", str(root))
    assert code == 2 and "annotations/validation/: 1 of 2 images have no label map (e.g. ADE_valid_00000002.png)" \
        in err and "ADEchallenge/ADEChallengeData2016.zip" in err
    run = parse_run({"task": "seg", "student": {"config": "tiny_seg_student"},
                     "dataset": {"name": "ade20k", "root": str(root)}})
    train = dataset_configs(run)["train_dataloader"]["dataset"]
    assert train["type"] == "ADE20KDataset" and train["pipeline"][1] == {"type": "LoadAnnotations",
                                                                          "reduce_zero_label": True}


def test_a_study_on_voc_without_its_augmented_set_plans_with_the_prepare_command_and_refuses_to_launch(tmp_path):
    make_voc(tmp_path / "VOCdevkit")
    root = tmp_path / "VOCdevkit" / "VOC2012"
    study = tmp_path / "voc.yaml"
    study.write_text(dump_yaml({
        "name": "voc", "base": {"task": "seg", "teacher": {"config": "tiny_seg_teacher"},
                                "student": {"config": "tiny_seg_student"},
                                "dataset": {"name": "voc", "root": str(root)}},
        "methods": {"cwd": {"method": "cwd", "student_location": "decode_head.conv_seg"}}, "seeds": [0]}))
    code, out, _ = run_cli("plan", str(study), "--results", str(tmp_path / "results"), "--no-model-check")
    needs = out.split("Before kdbench launch can run this study, it needs:\n")[1]
    assert code == 0 and f"base.dataset.root: voc at '{root}'" in needs
    assert needs.rstrip().endswith(f"fix: kdbench data prepare voc {root}")
    code, _, err = run_cli("launch", "--executor", "local", "--no-progress", str(study), "--results",
                           str(tmp_path / "results"))
    assert code == 2 and f"fix: kdbench data prepare voc {root}" in err and not (tmp_path / "results").exists()


@pytest.mark.slow  # a real training run on the generated tree
def test_a_run_on_a_prepared_voc_tree_trains_on_the_concatenated_sets_and_records_its_partial_split(tmp_path):
    import json

    make_voc(tmp_path / "VOCdevkit")
    root = tmp_path / "VOCdevkit" / "VOC2012"
    assert run_cli("data", "prepare", "voc", str(root), "--no-progress")[0] == 0
    run_file = tmp_path / "voc.json"
    run_file.write_text(json.dumps({
        "task": "seg", "name": "voc", "device": "cpu", "dataset": {"name": "voc", "root": str(root)},
        "student": {"config": "tiny_seg_student", "overrides": {"model.decode_head.num_classes": 21}},
        "schedule": {"iterations": 2, "batch_size": 2, "crop": [64, 64], "val_interval": 2, "num_workers": 0}}))
    code, _, err = run_cli("run", str(run_file), "--out", str(tmp_path / "out"))
    assert code == 0, err
    final = json.loads((tmp_path / "out" / "final.json").read_text())
    splits = {"train": {"images": 6, "official": 10582}, "val": {"images": 2, "official": 1449}}
    assert final["data"]["splits"] == splits
    assert final["data"]["complete"] is False and final["metrics"]["val/classes_evaluated"] == 21
    assert 0 <= final["metrics"]["val/mIoU"] <= 100


def test_a_broken_sbd_map_or_no_sbd_stops_voc_prepare_in_one_line_naming_it(tmp_path):
    make_voc(tmp_path / "VOCdevkit")
    root = tmp_path / "VOCdevkit" / "VOC2012"
    broken = tmp_path / "VOCdevkit" / "benchmark_RELEASE" / "dataset" / "cls" / "2008_000003.mat"
    broken.write_bytes(b"not a mat file")
    code, out, err = run_cli("data", "prepare", "voc", str(root), "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"{broken}: not an SBD class map" in err, err
    assert not (root / "ImageSets" / "Segmentation" / "aug.txt").exists()   # the lists come last
    bare = tmp_path / "bare" / "VOCdevkit"
    make_voc(bare, sbd=False)
    code, _, err = run_cli("data", "prepare", "voc", str(bare / "VOC2012"), "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no SBD beside it" in err and "benchmark.tgz" in err
