"""Every protocol value of the paper and MMRazor presets cites where it was checked (``provenance:``),
and a citation that names no value of its study is refused."""

from pathlib import Path

import pytest

from kdbench.errors import UserError
from kdbench.study import load_spec

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p for pattern in ("paper_*.yaml", "mmrazor_*.yaml", "modern_*.yaml")
                 for p in (ROOT / "studies").glob(pattern))
OPERATIONAL = ("val_interval", "checkpoint_interval", "num_workers")  # how a run is watched, not what it is


def _protocol_fields(raw: dict) -> list[str]:
    """The key paths of a preset that set what its runs train: the teacher, the student, the training
    pipeline, the schedule (monitoring aside), every method and every axis value."""
    base = raw["base"]
    fields = [f"base.teacher.{key}" for key in base.get("teacher", {})] + ["base.student.config",
                                                                          "base.dataset.pipeline"]
    fields += [f"base.schedule.{key}" for key in base.get("schedule", {}) if key not in OPERATIONAL]
    fields += [f"methods.{name}" for name in raw.get("methods", {})]
    fields += [f"grid.{axis}" for axis in raw.get("grid", {}) if axis != "method"]
    fields += [f"zip[{i}].{axis}" for i, block in enumerate(raw.get("zip", [])) for axis in block if axis != "method"]
    return fields


def _covered(field: str, provenance: dict) -> bool:
    return any(field == key or field.startswith(key + ".") for key in provenance)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_every_protocol_field_of_a_paper_or_mmrazor_preset_cites_its_source(path):
    """Guarantee: Every protocol field of the `paper_*` and `mmrazor_*` presets cites its upstream source
    (`provenance:`); a citation of a value the study lacks is refused."""
    raw = load_spec(path).raw
    assert "mode" in raw["base"]["teacher"] and "pipeline" in raw["base"]["dataset"], \
        "a preset states its teacher mode and training pipeline"
    provenance = raw.get("provenance", {})
    missing = [field for field in _protocol_fields(raw) if not _covered(field, provenance)]
    assert not missing, f"{path.name}: no source for {', '.join(missing)}"
    assert all(isinstance(source, str) and len(source) > 10 for source in provenance.values())


def test_the_presets_are_found():
    assert {p.stem for p in PRESETS} >= {"paper_table2_cityscapes", "paper_table6_coco", "mmrazor_cwd_cityscapes",
                                         "mmrazor_cwd_coco_gfl"}


def test_a_citation_of_a_value_the_study_does_not_have_is_refused(tmp_path):
    """Guarantee: A citation of a value the study does not have is refused."""
    from tests.launch_helpers import write_study

    good = write_study(tmp_path, "cited", provenance={"base.schedule.iterations": "a paper, section 4",
                                                      "methods.cwd_logits": "its authors' code, options.py"})
    assert load_spec(good).raw["provenance"]["methods.cwd_logits"] == "its authors' code, options.py"
    bad = write_study(tmp_path, "miscited", provenance={"base.schedule.lrr": "a paper"})
    with pytest.raises(UserError, match=r"miscited\.yaml: provenance\.base\.schedule\.lrr: names no value of this "
                                        r"study; cite a key path such as base\.schedule\.lr"):
        load_spec(bad)
