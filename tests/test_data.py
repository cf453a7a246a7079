"""Data you can point at: a dataset root is checked by reading its layout before anything is
submitted or written, ``kdbench data prepare cityscapes`` turns the official download into what
mmseg reads, ``kdbench data check`` prints what the preflight sees, and a partial split is recorded
by the run and marked by the report. All through the CLI, on generated trees."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runners.data import layout
from runners.data.cityscapes_format import make_cityscapes
from tests.launch_helpers import dump_yaml, run_cli
from tests.preset_fixtures import make_cityscapes_download, make_coco

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("skimage")  # the fixtures are drawn from fashion scenes


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))


def _run_file(directory: Path, name: str, root: Path) -> Path:
    task, config = ("seg", "tiny_seg_student") if name == "cityscapes" else ("det", "tiny_det_student")
    path = directory / f"{name}_run.json"
    path.write_text(json.dumps({"task": task, "student": {"config": config},
                                "dataset": {"name": name, "root": str(root)}}))
    return path


def _study(directory: Path, root: Path) -> Path:
    path = directory / "raw.yaml"
    path.write_text(dump_yaml({
        "name": "raw", "base": {"task": "seg", "teacher": {"config": "tiny_seg_teacher"},
                                "student": {"config": "tiny_seg_student"},
                                "dataset": {"name": "cityscapes", "root": str(root)}},
        "methods": {"cwd": {"method": "cwd", "student_location": "decode_head.conv_seg"}}, "seeds": [0]}))
    return path


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_a_cityscapes_tree_as_downloaded_is_refused_by_run_and_launch_and_listed_by_plan_with_the_prepare_command(
        tmp_path):
    """Guarantee: A cityscapes tree as downloaded is refused by run and launch and listed by plan with the prepare
    command."""
    root = tmp_path / "cityscapes"
    make_cityscapes_download(root)
    run_file, study = _run_file(tmp_path, "cityscapes", root), _study(tmp_path, root)
    fix = f"fix: kdbench data prepare cityscapes {root}"
    code, out, err = run_cli("run", str(run_file), "--out", str(tmp_path / "out"))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"{run_file}: dataset.root: cityscapes at '{root}': gtFine/train/: 4 of 4 images have no " \
           "*_gtFine_labelTrainIds.png" in err and err.strip().endswith(fix)
    assert not (tmp_path / "out").exists()
    code, out, err = run_cli("launch", "--executor", "local", "--no-progress", str(study), "--results",
                             str(tmp_path / "results"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{study}: base.dataset.root: cityscapes at" in err and fix in err
    code, out, err = run_cli("plan", str(study), "--results", str(tmp_path / "results"))  # plan works anywhere
    needs = out.split("Before kdbench launch can run this study, it needs:\n")[1]
    assert code == 0 and f"- {study}: base.dataset.root: cityscapes at" in needs and needs.rstrip().endswith(fix)
    assert not (tmp_path / "results").exists()


def test_data_prepare_writes_the_train_id_maps_mmseg_reads_a_second_call_changes_nothing_and_plan_accepts_it(tmp_path):
    """Guarantee: Data prepare writes the train id maps mmseg reads a second call changes nothing and plan accepts
    it."""
    root = tmp_path / "cityscapes"
    expected = make_cityscapes_download(root)
    code, out, err = run_cli("data", "prepare", "cityscapes", str(root), "--workers", "2")
    assert code == 0, err
    assert "converted 6 label maps to train ids (0 already converted)" in out
    assert "train          4 of 2975 images (PARTIAL" in out and "val            2 of 500 images" in out
    for label_ids, train_ids in expected.items():
        written = label_ids.with_name(label_ids.name.replace("_labelIds", "_labelTrainIds"))
        assert np.array_equal(np.array(Image.open(written)), train_ids), written
        assert (train_ids[0] == 255).all() and (train_ids[1:] < 19).all()  # ignored ids, evaluated ones
    before = _files(root)
    code, out, _ = run_cli("data", "prepare", "cityscapes", str(root))
    assert code == 0 and "converted 0 label maps to train ids (6 already converted)" in out
    assert _files(root) == before  # nothing written, nothing touched
    code, _, err = run_cli("plan", str(_study(tmp_path, root)), "--results", str(tmp_path / "results"),
                           "--no-model-check")
    assert code == 0 and err == (f"kdbench: note: cityscapes at '{root}' holds a partial split (train 4 of 2975, "
                                 "val 2 of 500 images): results are marked not comparable with published numbers\n")


def test_the_train_ids_prepare_writes_are_the_classes_of_mmsegs_cityscapes_dataset_in_order():
    """Guarantee: The train ids prepare writes are the classes of mmsegs cityscapes dataset in order."""
    from mmseg.datasets import CityscapesDataset

    from runners.data.cityscapes import EVALUATED, lookup_table

    assert tuple(name for name, _ in EVALUATED) == CityscapesDataset.METAINFO["classes"]
    table = lookup_table()
    assert [int(table[label_id]) for _, label_id in EVALUATED] == list(range(19))
    assert sorted(int(i) for i in np.flatnonzero(table != 255)) == sorted(label_id for _, label_id in EVALUATED)


def test_an_interrupted_prepare_converts_what_is_left_and_removes_its_temporary_files(tmp_path):
    """Guarantee: An interrupted prepare converts what is left and removes its temporary files."""
    root = tmp_path / "cityscapes"
    make_cityscapes_download(root)
    assert run_cli("data", "prepare", "cityscapes", str(root), "--no-progress")[0] == 0
    maps = sorted(root.glob("gtFine/*/*/*_gtFine_labelTrainIds.png"))
    kept = {p: p.stat().st_mtime_ns for p in maps[2:]}
    for lost in maps[:2]:  # what a kill leaves: maps not yet renamed into place, a temporary file
        lost.unlink()
    leftover = maps[0].with_name(f".{maps[0].name}.abc123.tmp")
    leftover.write_bytes(b"half a png")
    code, out, err = run_cli("data", "prepare", "cityscapes", str(root), "--no-progress")
    assert code == 0 and "converted 2 label maps to train ids (4 already converted)" in out, err
    assert all(p.is_file() for p in maps[:2]) and not leftover.exists()
    assert {p: p.stat().st_mtime_ns for p in maps[2:]} == kept


def test_a_label_map_that_is_not_a_png_stops_prepare_in_one_line_naming_it(tmp_path):
    """Guarantee: A label map that is not a png stops prepare in one line naming it."""
    root = tmp_path / "cityscapes"
    broken = sorted(make_cityscapes_download(root))[0]
    broken.write_bytes(b"")  # a download cut short
    code, out, err = run_cli("data", "prepare", "cityscapes", str(root), "--no-progress")
    assert code == 2 and err.strip() == (f"kdbench data: error: {broken}: not a one-channel 8-bit PNG of label ids; "
                                         "unzip gtFine_trainvaltest.zip again")
    assert not broken.with_name(broken.name.replace("_labelIds", "_labelTrainIds")).exists()


def test_data_check_of_coco_names_the_annotation_files_used_and_a_missing_one_with_its_download(tmp_path):
    """Guarantee: Data check of coco names the annotation files used and a missing one with its download."""
    root = make_coco(tmp_path / "coco")
    code, out, err = run_cli("data", "check", "coco", str(root))
    assert code == 0, err
    assert "uses: annotations/instances_train2017.json, train2017/" in out
    assert "annotations/instances_val2017.json, val2017/" in out
    assert "train2017      4 of 118287 images (PARTIAL" in out and "val2017        2 of 5000 images" in out
    (root / "annotations" / "instances_val2017.json").unlink()
    code, out, err = run_cli("data", "check", "coco", str(root))
    assert code == 2 and "missing: annotations/instances_val2017.json does not exist" in out
    assert err.strip() == (f"kdbench data: error: coco at '{root}': annotations/instances_val2017.json does not "
                           "exist; fix: wget http://images.cocodataset.org/annotations/annotations_trainval2017.zip "
                           f"&& unzip annotations_trainval2017.zip -d {root}")
    run_file = _run_file(tmp_path, "coco", root)
    code, _, err = run_cli("run", str(run_file), "--out", str(tmp_path / "out"))
    assert code == 2 and "dataset.root: coco at" in err and "instances_val2017.json does not exist" in err
    assert not (tmp_path / "out").exists()


def test_a_coco_image_named_in_the_annotations_but_not_on_disk_and_a_cut_annotation_file_are_found(tmp_path):
    """Guarantee: A coco image named in the annotations but not on disk and a cut annotation file are found."""
    root = make_coco(tmp_path / "coco")
    gone = sorted((root / "train2017").iterdir())[1]
    gone.unlink()
    code, _, err = run_cli("data", "check", "coco", str(root))
    assert code == 2 and f"train2017/: 1 of the 4 images annotations/instances_train2017.json lists are not there " \
                         f"(e.g. {gone.name})" in err and "zips/train2017.zip" in err
    annotation = root / "annotations" / "instances_val2017.json"
    annotation.write_bytes(annotation.read_bytes()[:-40])
    code, out, _ = run_cli("data", "check", "coco", str(root))
    assert code == 2 and "instances_val2017.json is cut short" in out


def test_a_layout_check_of_an_unchanged_tree_comes_from_the_cache_and_any_change_is_seen(tmp_path, monkeypatch):
    """Guarantee: A layout check of an unchanged tree comes from the cache and any change is seen."""
    from benchmarks.data import date_back

    root = make_cityscapes(tmp_path / "cityscapes")
    date_back(root)  # a tree that changed in the last 2 s is not cached: this one was downloaded an hour ago
    listed = []
    names = layout._Tree.names
    monkeypatch.setattr(layout._Tree, "names", lambda self, relative: listed.append(relative) or names(self, relative))
    first = layout.check("cityscapes", root)
    assert first.complete is False and not first.missing and len(listed) == 4
    assert layout.check("cityscapes", root) == first and len(listed) == 4  # no folder listed again
    label = next(root.glob("gtFine/val/*/*_gtFine_labelTrainIds.png"))
    label.unlink()
    assert layout.check("cityscapes", root).missing[0][0] == f"gtFine/val/: 1 of 2 images have no label map " \
                                                            f"(e.g. fixture/{label.name[:-25]}_gtFine_labelIds.png)"
    (root / "leftImg8bit" / "train").rename(root / "leftImg8bit" / "train_moved")
    assert layout.check("cityscapes", root).missing[0][0] == "leftImg8bit/train/ holds no *_leftImg8bit.png"


@pytest.mark.slow  # a whole report, figures included
def test_a_run_on_a_partial_split_records_it_and_the_report_marks_its_numbers(tmp_path):
    """Guarantee: A run on a partial split records it and the report marks its numbers."""
    from kdbench import store
    from kdbench.stages import load_study
    from reports.render import render_report
    from tests.results_fixtures import write_run

    root = make_cityscapes(tmp_path / "cityscapes")
    record = layout.run_record("cityscapes", str(root))
    assert record == {"name": "cityscapes", "root": str(root), "complete": False,
                      "splits": {"train": {"images": 4, "official": 2975}, "val": {"images": 2, "official": 500}}}
    study = load_study(ROOT / "studies" / "paper_table2_cityscapes.yaml", tmp_path / "results")
    for index, planned in enumerate(study.runs):  # every run complete, on this partial tree
        write_run(study.directory, planned, 30.0 + index % 7)
        final = study.directory / planned.run_id / store.FINAL
        store.write_json_atomic(final, {**store.read_json(final), "data": record})
    written, _, lines = render_report(study, formats=("md",))
    md = written["md"].read_text()
    warning = ("warning: every complete run used a partial cityscapes split (train 4 of 2975, val 2 of 500 images): "
               "these numbers are not comparable with published ones.")
    assert warning in lines and f"- **{warning}**" in md
    published = md[md.index("### Published vs measured"):]
    assert "Measured on a partial dataset split (see the warning above): not comparable with the published " \
           "numbers." in published[:published.index("###", 4)]
