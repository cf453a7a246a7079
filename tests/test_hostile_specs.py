"""What the refusals of hostile and runaway specs leave alone: the readers give the same data as
yaml/json on every real file, a grid's limit is a flag on every study verb, an evaluation-only
teacher keeps its 0 iterations. The refusals themselves are bad-input cases 52-65 and r21-r26
(tests/test_bad_inputs.py, each held to its CPU time and memory)."""

import json
from pathlib import Path

import pytest
import yaml

from kdbench.cli import main
from kdbench.errors import UserError
from kdbench.expand import MAX_RUNS
from kdbench.reading import read_json, read_yaml
from kdbench.spec import parse_run
from kdbench.stages import load_study
from tests.launch_helpers import run_cli, write_study

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "bad_inputs"
# every real file, and the corpus up to the cases these readers refuse (52 and r21 on)
YAML_FILES = [*sorted((ROOT / "studies").rglob("*.yaml")), *(p for p in sorted(CORPUS.glob("*.yaml"))
                                                              if int(p.stem[:2]) < 52)]
JSON_FILES = [*sorted((ROOT / "studies" / "runs").glob("*.json")), *(p for p in sorted(CORPUS.glob("r*.json"))
                                                                     if int(p.stem[1:3]) < 21)]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.name)
def test_the_study_reader_gives_what_yaml_safe_load_gives_on_every_file_without_an_alias(path):
    """Guarantee: The readers change nothing else: they give `yaml.safe_load`'s and `json.loads`'s data on every
    shipped file."""
    text = path.read_text()
    try:
        expected = yaml.safe_load(text)
    except yaml.YAMLError:
        with pytest.raises(UserError, match="not valid YAML"):
            read_yaml(text, str(path))
        return
    assert read_yaml(text, str(path)) == expected


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: p.name)
def test_the_run_file_reader_gives_what_json_loads_gives_on_every_file_without_a_repeated_key(path):
    """Guarantee: The run file reader gives what json loads gives on every file without a repeated key."""
    text = path.read_text()
    try:
        expected = json.loads(text)
    except json.JSONDecodeError as error:
        with pytest.raises(UserError, match=f"not valid JSON \\(line {error.lineno}, column {error.colno}"):
            read_json(text, str(path))
        return
    assert json.dumps(read_json(text, str(path))) == json.dumps(expected)  # NaN included


def test_the_same_key_in_different_mappings_and_an_anchor_without_an_alias_are_accepted():
    """Guarantee: The same key in different mappings and an anchor without an alias are accepted."""
    text = "name: a\nmethods: {x: {name: t, method: cwd}, y: {name: t}}\nbase: &base {name: b}\nseeds: [0, 0]\n"
    assert read_yaml(text, "s.yaml") == {"name": "a", "methods": {"x": {"name": "t", "method": "cwd"},
                                                                  "y": {"name": "t"}},
                                         "base": {"name": "b"}, "seeds": [0, 0]}
    assert read_json('{"a": {"k": 1}, "b": [{"k": 2}, {"k": 3}], "k": 4}', "r.json")["b"][1] == {"k": 3}


def test_a_repeated_key_is_found_in_a_flow_mapping_on_one_line_and_deep_in_a_run_file():
    """Guarantee: A repeated key is found in a flow mapping on one line and deep in a run file."""
    with pytest.raises(UserError, match=r"^s\.yaml: grid\.a \(line 2\): the key 'a' is given twice \(first on line 2"):
        read_yaml("name: x\ngrid: {a: [1], b: [2], a: [3]}\n", "s.yaml")
    text = '{"distill": [{"params": {"tau": 1}},\n  {"params": {"tau": 1,\n   "tau": 4}}]}'
    with pytest.raises(UserError, match=r"^r\.json: distill\[1\]\.params\.tau \(line 3\): .*first on line 2"):
        read_json(text, "r.json")


def big_study(tmp_path: Path) -> Path:
    """3 temperatures x 4 weights x 2 seeds = 24 cell runs (plus a teacher and 2 baselines)."""
    return write_study(tmp_path, "big", seeds=(0, 1), grid={"term.params.tau": [1.0, 2.0, 4.0],
                                                            "term.weight": [1.0, 2.0, 3.0, 4.0]})


def test_max_runs_refuses_a_grid_past_it_and_a_grid_at_it_plans_every_run(tmp_path):
    """Guarantee: Max runs refuses a grid past it and a grid at it plans every run."""
    path = big_study(tmp_path)
    with pytest.raises(UserError, match=r"big\.yaml: grid: grid\.method \(1\) x grid\.term\.params\.tau \(3\) x "
                                        r"grid\.term\.weight \(4\) x seeds \(2\) = 24 runs before exclusions, "
                                        r"over the limit of 23"):
        load_study(path, tmp_path / "results", max_runs=23)
    planned = load_study(path, tmp_path / "results", max_runs=24).runs
    assert [r.run_id for r in planned] == [r.run_id for r in load_study(path, tmp_path / "results").runs]
    assert sum(r.kind == "cell" for r in planned) == 24 and MAX_RUNS >= 100_000


@pytest.mark.parametrize("verb", ["plan", "launch --executor local --dry-run", "status", "cancel", "collect",
                                  "report"])
def test_every_study_verb_takes_max_runs(verb, tmp_path):
    """Guarantee: Every study verb takes max runs."""
    path = big_study(tmp_path)
    code, out, err = run_cli(*verb.split(), str(path), "--results", str(tmp_path / "results"), "--max-runs", "5")
    assert code == 2 and out == "" and "= 24 runs before exclusions, over the limit of 5 (--max-runs N" in err
    code, _, err = run_cli(*verb.split(), str(path), "--results", str(tmp_path / "results"), "--max-runs", "0")
    assert code == 2 and err.strip() == f"kdbench {verb.split()[0]}: error: --max-runs: must be >= 1, got 0"
    assert not (tmp_path / "results").exists()


def test_the_max_runs_help_names_the_default_limit(capsys):
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    assert f"(default {MAX_RUNS:,})" in " ".join(capsys.readouterr().out.split())


def test_a_teacher_evaluating_its_checkpoint_keeps_0_iterations_and_defaults_never_count_as_given():
    """Guarantee: A teacher evaluating its checkpoint keeps 0 iterations and defaults never count as given."""
    teacher = {"task": "seg", "role": "teacher", "dataset": {"name": "fashion_scenes"},
               "teacher": {"config": "tiny_seg_teacher", "checkpoint": "teacher.pth"},
               "schedule": {"iterations": 0, "val_interval": 100}}
    assert parse_run(teacher).schedule.iterations == 0
    student = {"task": "seg", "student": {"config": "tiny_seg_student"}, "dataset": {"name": "fashion_scenes"},
               "schedule": {"iterations": 4}}  # the default checkpoint_interval, 50, is not the user's
    assert parse_run(student).schedule.checkpoint_interval == 50
    with pytest.raises(UserError, match=r"schedule\.checkpoint_interval: 5 is more than the run's 4 iterations"):
        parse_run({**student, "schedule": {"iterations": 4, "checkpoint_interval": 5}})


def test_an_error_quoting_a_control_character_from_a_spec_is_one_line_that_shows_it(tmp_path):
    """Guarantee: An error quoting a control character from a spec is one line that shows it."""
    path = tmp_path / "odd.yaml"
    path.write_text('"basee\\u202e\\nkdbench plan: ok": 1\n')
    code, out, err = run_cli("plan", str(path), "--results", str(tmp_path / "results"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "basee\\u202e\\nkdbench plan: ok: unknown key" in err and "\u202e" not in err


def test_a_description_line_with_a_bidi_override_is_refused_and_a_run_name_cannot_leave_its_folder(tmp_path):
    """Guarantee: A description line with a bidi override is refused and a run name cannot leave its folder."""
    from kdbench.study import load_spec
    from runners.train import default_out

    study = tmp_path / "s.yaml"
    study.write_text("description: |\n  fine line\n  evil \u202e line\n"
                     "base: {task: seg, dataset: {name: fashion_scenes}}\n")
    with pytest.raises(UserError, match=r"description: a line of the description, .* holds U\+202E"):
        load_spec(study)
    run = parse_run({"task": "seg", "name": "../../etc/x", "student": {"config": "tiny_seg_student"},
                     "dataset": {"name": "fashion_scenes"}})
    out = default_out(run)
    assert out.parent == Path("results") / "runs" and out.name.startswith("_.._etc_x-")
