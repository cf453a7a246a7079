"""The stages as a pipeline (kdbench.stages): ``expand`` plans from the spec alone, each later stage
plans from the results and records what it decided under ``results/<study>/stages/``, and the report
reads those records rather than deciding again. The verbs' functions (kdbench.app) give what the
CLI prints, and the executors differ only behind their methods."""

import ast
import json
from pathlib import Path

from kdbench import app, store
from kdbench.stages import RECORDS, load_study, reload
from kdbench.vocab import Action, Kind, Stage, State
from tests.launch_helpers import run_cli
from tests.results_fixtures import budget_study, finish_run, make_tuned_store

ROOT = Path(__file__).resolve().parents[1]


def test_expand_reads_no_store_the_stages_do_and_a_study_without_results_writes_no_record(tmp_path):
    study = budget_study(tmp_path)
    assert study.grid == study.runs and not (study.directory / RECORDS).exists()
    assert [w.stage for w in study.waiting] == [Stage.BUDGET, Stage.BUDGET]
    assert study.records[Stage.BUDGET]["budgets"][0]["why"] == "waits for cwd_s0, at_s0 to finish"
    tree = ast.parse((ROOT / "kdbench" / "expand.py").read_text())
    imported = {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not {"kdbench.store", "kdbench.stages"} & imported


def test_the_equal_budget_stage_records_its_decision_and_the_report_reads_the_record(tmp_path):
    study = budget_study(tmp_path)
    for name, pace in (("student_s0", 0.1), ("cwd_s0", 0.15), ("at_s0", 0.22)):
        finish_run(study, name, seconds_per_iter=pace)
    study = reload(study)
    recorded = store.read_json(study.directory / RECORDS / "budget.json")
    assert recorded == json.loads(json.dumps(study.records[Stage.BUDGET]))
    first = recorded["budgets"][0]
    assert (first["run"], first["iterations"], first["slowest"], first["cells"]) == (
        "student_budget_s0", 22, "at_s0", ["cwd_s0", "at_s0"])
    assert recorded["budgets"][1]["iterations"] is None and "cwd_s1, at_s1" in recorded["budgets"][1]["why"]
    stamp = (study.directory / RECORDS / "budget.json").stat().st_mtime_ns
    assert reload(study).records == study.records   # the same results: the same decision, the file untouched
    assert (study.directory / RECORDS / "budget.json").stat().st_mtime_ns == stamp
    # The report shows what the stage decided, not a second decision of its own.
    from analysis.budgets import basis_table, study_budgets

    assert study_budgets(study) == study.records[Stage.BUDGET]["budgets"]
    assert basis_table(study_budgets(study)).rows[0][0].text == "student_budget_s0"


def test_the_tune_stage_records_every_try_and_each_choice(tmp_path):
    study, _ = make_tuned_store(tmp_path)
    recorded = store.read_json(study.directory / RECORDS / "tune.json")
    chosen = {row["method"]: row["chosen"] for row in recorded["methods"]}
    assert chosen == {"cwd_logits": {"term.weight": 3}, "student": {"schedule.lr": 0.02}}
    assert recorded["metric"] == "val/mIoU" and recorded == json.loads(json.dumps(study.records[Stage.TUNE]))
    code, out, err = run_cli("report", str(study.path), "--results", str(study.results), "--json", "--format", "md")
    assert code == 0, err
    assert json.loads(out)["tuning"] == recorded["methods"]


def test_the_plan_verb_prints_what_its_app_function_returns(tmp_path):
    study = load_study(ROOT / "studies" / "smoke_budget.yaml", tmp_path / "results")
    rows = app.plan(study, model_check=False, data_check=False).rows
    code, out, err = run_cli("plan", str(study.path), "--results", str(tmp_path / "results"), "--json",
                             "--no-model-check", "--no-data-check")
    assert code == 0, err
    assert json.loads(out) == json.loads(json.dumps(rows))
    assert {row["kind"] for row in rows} == {Kind.TEACHER, Kind.STUDENT_BASELINE, Kind.CELL}
    assert {row["status"] for row in rows} == {State.MISSING}


def test_a_dry_run_launch_decides_every_run_and_builds_one_executor(tmp_path):
    from runners.launch.launcher import LaunchOptions

    path = ROOT / "studies" / "smoke_budget.yaml"
    launched = app.launch(path, tmp_path / "results", LaunchOptions(dry_run=True, model_check=False,
                                                                      data_check=False))
    assert launched.counts == {Action.SUBMIT: 7} and launched.described == [] and launched.complete is None
    assert not (tmp_path / "results").exists()


def test_no_code_asks_which_executor_it_has():
    for path in (ROOT / "runners" / "launch").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
                assert "Executor" not in ast.unparse(node.args[1]), f"{path.name}: {ast.unparse(node)}"
