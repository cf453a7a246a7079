"""Recipe cards against published rows: which fields differ, with both values."""

from analysis.recipes import comparability_notes, differences, reference_recipe, shown
from analysis.records import Match
from tests.results_fixtures import cell_record


def test_a_published_row_states_only_the_recipe_fields_it_has_values_for():
    row = {"recipe_iterations": 80000, "recipe_crop": "[512, 1024]", "recipe_epochs": float("nan"), "recipe_lr": ""}
    assert reference_recipe(row) == {"iterations": 80000, "crop": "[512, 1024]"}


def test_differences_name_each_field_with_the_published_and_the_measured_value():
    published = {"iterations": 80000, "crop": "[512, 1024]", "pipeline": "default", "teacher_mode": "bn_eval"}
    measured = {"iterations": 40000, "crop": [512, 512], "pipeline": "default", "teacher_mode": "eval"}
    assert differences(published, measured) == ["iterations 80000 vs 40000", "crop 512x1024 vs 512x512",
                                                "teacher_mode bn_eval vs eval"]


def test_epochs_agree_within_five_percent_and_fields_a_cell_did_not_record_are_not_compared():
    assert differences({"epochs": 12}, {"epochs": 12.1}) == []      # 88704 x 16 / 117,266 images
    assert differences({"epochs": 12}, {"epochs": 24.0}) == ["epochs 12 vs 24"]
    assert differences({"global_batch": 16, "lr": 0.01}, {}) == []
    assert shown("crop", [512, 1024]) == "512x1024" and shown("iterations", 40000.0) == "40000"


def test_a_cell_is_called_not_comparable_to_a_row_whose_recipe_differs():
    """Guarantee: A cell is called not comparable to a row whose recipe differs."""
    reference = {"method": "cwd", "student": "pspnet_r18", "file": "mmrazor.csv", "recipe_iterations": 80000,
                 "recipe_pipeline": "default"}
    same = cell_record("cwd_logits", recipe={"iterations": 80000, "pipeline": "default"})
    other = cell_record("cwd_short", recipe={"iterations": 40000, "pipeline": "crop_only"})
    matches = [Match(reference, same), Match(reference, other), Match(reference, None)]
    assert comparability_notes(matches) == [
        "cwd_short is not comparable to mmrazor.csv (cwd, pspnet_r18): published vs measured iterations 80000 vs "
        "40000; pipeline default vs crop_only."]
