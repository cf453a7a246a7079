"""Equal-budget baselines (``equal_budget:``, kdbench.budget): planned from the cells' recorded cost,
once every distilled run of the seed has finished, with iterations computed by hand below."""

import json

import pytest

from kdbench import budget as budgets
from kdbench.stages import load_study, reload
from kdbench.vocab import Kind
from tests.launch_helpers import run_cli
from tests.results_fixtures import BUDGET_STUDY as STUDY
from tests.results_fixtures import budget_study as _study
from tests.results_fixtures import finish_run as _finish
from tests.results_fixtures import make_budget_store


def _twins(study):
    return {p.name: p for p in study.runs if p.kind == Kind.STUDENT_BUDGET}


def test_nothing_is_planned_or_waits_without_equal_budget(tmp_path):
    study = _study(tmp_path, by=None)
    assert study.waiting == () and not _twins(study)


def test_the_twin_waits_for_every_distilled_run_of_its_seed_and_plan_says_so(tmp_path):
    """Guarantee: The twin waits for every distilled run of its seed and plan says so."""
    study = _study(tmp_path)
    assert not _twins(study) and [w.stage for w in study.waiting] == ["budget", "budget"]
    assert "cwd_s0, at_s0" in study.waiting[0].why
    _finish(study, "cwd_s0")
    study = reload(study)
    assert "waits for at_s0 to finish" in study.waiting[0].why
    assert set(study.waiting[0].needs) == {p.run_id for p in study.runs if p.name in ("cwd_s0", "at_s0", "student_s0")}
    code, out, _ = run_cli("plan", str(study.path), "--results", str(study.results))
    assert code == 0 and "budget: planned later: the equal-budget twin of student_s0" in out


def test_wall_clock_twin_trains_the_slowest_cells_seconds_at_the_baselines_own_pace(tmp_path):
    """Guarantee: `equal_budget:` plans, per student baseline and seed, a twin trained for the slowest distilled cell's
    training time (by wall clock: ceil(its iterations x seconds per iteration / the baseline's seconds per
    iteration); by iterations: from the cell's own step shares), once every cell of that seed has finished, a
    failed cell left out and named; same results give the same twin; one local launch trains the cells then the
    twin and a relaunch runs nothing; the report tests each cell against both baselines and draws the
    gain-vs-extra-cost Pareto front."""
    study = _study(tmp_path)
    _finish(study, "student_s0", seconds_per_iter=0.1)   # 10 iterations: 1.0 s
    _finish(study, "cwd_s0", seconds_per_iter=0.15)      # 1.5 s
    _finish(study, "at_s0", seconds_per_iter=0.22)       # 2.2 s, the slowest: 2.2 / 0.1 = 22 iterations
    study = reload(study)
    twin = _twins(study)["student_budget_s0"]
    baseline = next(p for p in study.runs if p.name == "student_s0")
    assert twin.run.schedule.iterations == 22 and twin.stage == "budget"
    assert twin.params == baseline.params and twin.run.seed == 0
    # Nothing but the iterations differs from the baseline: the same lr, poly schedule and data.
    same = {k: v for k, v in twin.run.to_dict().items() if k not in ("name", "tracking")}
    assert same == {**{k: v for k, v in baseline.run.to_dict().items() if k not in ("name", "tracking")},
                    "schedule": {**baseline.run.to_dict()["schedule"], "iterations": 22}}
    found = next(b for b in budgets.budgets(study.spec, study.runs, study.directory) if b.iterations)
    assert (found.slowest, found.cost, found.baseline_seconds_per_iter) == ("at_s0", pytest.approx(2.2), 0.1)
    assert [w.why for w in study.waiting] == [
        "the equal-budget twin of student_s1 (wall clock) waits for cwd_s1, at_s1 to finish"]


def test_iterations_twin_counts_the_slowest_cell_in_student_iterations_from_its_own_step_shares(tmp_path):
    """Guarantee: Iterations twin counts the slowest cell in student iterations from its own step shares."""
    study = _study(tmp_path, by="{by: iterations}")
    _finish(study, "cwd_s0", shares=(0.2, 0.1))   # 10 / (1 - 0.3) = 14.29 student iterations
    _finish(study, "at_s0", shares=(0.4, 0.1))    # 10 / (1 - 0.5) = 20: the slowest
    study = reload(study)   # the baseline's own pace is not needed: it has not finished
    assert _twins(study)["student_budget_s0"].run.schedule.iterations == 20


def test_a_failed_or_diverged_cell_is_left_out_of_the_slowest_and_named(tmp_path):
    """Guarantee: A failed or diverged cell is left out of the slowest and named."""
    study = _study(tmp_path)
    _finish(study, "student_s0", seconds_per_iter=0.1)
    _finish(study, "cwd_s0", seconds_per_iter=0.13)   # 1.3 s / 0.1 = 13
    _finish(study, "at_s0", state="diverged")
    study = reload(study)
    assert _twins(study)["student_budget_s0"].run.schedule.iterations == 13
    found = next(b for b in budgets.budgets(study.spec, study.runs, study.directory) if b.iterations)
    assert found.excluded == ("at_s0 (diverged)",) and found.slowest == "cwd_s0"


def test_no_twin_when_every_cell_of_the_seed_failed(tmp_path):
    study = _study(tmp_path)
    _finish(study, "student_s0")
    _finish(study, "cwd_s0", state="failed")
    _finish(study, "at_s0", state="diverged")
    study = reload(study)
    assert not _twins(study)
    assert "not planned: no distilled run finished with a cost (cwd_s0 (failed), at_s0 (diverged))" in \
        study.waiting[0].why


def test_the_same_results_give_the_same_twin_and_other_costs_another(tmp_path):
    """Guarantee: The same results give the same twin and other costs another."""
    study = _study(tmp_path)
    for name, pace in (("student_s0", 0.1), ("cwd_s0", 0.15), ("at_s0", 0.2)):
        _finish(study, name, seconds_per_iter=pace)
    first, again = _twins(reload(study)), _twins(reload(reload(study)))
    assert first["student_budget_s0"].run_id == again["student_budget_s0"].run_id
    _finish(study, "at_s0", seconds_per_iter=0.3)
    other = _twins(reload(study))["student_budget_s0"]
    assert other.run.schedule.iterations == 30 and other.run_id != first["student_budget_s0"].run_id


@pytest.mark.parametrize("value, message", [
    ("gpu_hours", "equal_budget: 'gpu_hours' is not valid; valid: wall_clock, iterations"),
    ("{per: iterations}", "equal_budget.per: unknown key"),
])
def test_a_bad_equal_budget_is_one_line_naming_the_key_and_what_is_valid(tmp_path, value, message):
    path = tmp_path / "budget.yaml"
    path.write_text(STUDY + f"equal_budget: {value}\n")
    code, _, err = run_cli("plan", str(path), "--results", str(tmp_path / "results"))
    assert code == 2 and message in err and not (tmp_path / "results").exists()


def test_equal_budget_needs_the_student_baselines(tmp_path):
    path = tmp_path / "budget.yaml"
    path.write_text(STUDY + "equal_budget: wall_clock\nbaselines: {student: false}\n")
    code, _, err = run_cli("plan", str(path))
    assert code == 2 and "equal_budget: needs the student baselines" in err


# -- the report: hand-computed Δs against both baselines (tests/results_fixtures.py BUDGET_RESULTS) --
@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    return make_budget_store(tmp_path_factory.mktemp("budget_report"))


def test_each_cell_is_compared_with_both_baselines_with_its_interval_and_verdict(filled):
    """Guarantee: Each cell is compared with both baselines with its interval and verdict."""
    from analysis.collect import collect
    from analysis.records import VS_EQUAL_BUDGET
    from analysis.summary import summarise

    found = summarise(filled, collect(filled, write=False))
    cells = {cell.method: cell for cell in found.cells}
    against = {method: cell.test(VS_EQUAL_BUDGET, "val/mIoU") for method, cell in cells.items()}
    assert _twins(filled)["student_budget_s0"].run.schedule.iterations == 20
    assert cells["cwd"].delta("val/mIoU") == pytest.approx(5.0)
    assert against["cwd"].delta == pytest.approx(1.75)
    assert against["at"].delta == pytest.approx(-1.75)
    assert against["cwd"].test == "paired"
    assert against["cwd"].p_holm == pytest.approx(2 * 0.0903, abs=1e-3)
    assert [t.verdict for t in against.values()] == ["within noise", "within noise"]
    assert [cell.extra_cost for cell in found.cells] == pytest.approx([1.5, 2.0])
    assert [twin.extra_cost for twin in found.twins] == pytest.approx([2.0])
    assert [twin.test.delta for twin in found.twins] == pytest.approx([3.25])


def test_the_pareto_front_of_a_hand_made_set():
    """Guarantee: The pareto front of a hand made set."""
    from analysis.plots import pareto_front

    costs = [1.0, 1.5, 2.0, 2.0, 3.0, 1.2, 1.5]
    gains = [0.0, 5.0, 3.25, 2.0, 6.0, -1.0, 5.0]
    # (1.2, -1) costs more than the baseline and gains less; (2, 3.25) and (2, 2) gain less than
    # (1.5, 5) at a higher cost; the second (1.5, 5) is a duplicate of the first.
    assert pareto_front(costs, gains) == [0, 1, 4]


def _section(md: str, heading: str) -> dict[str, list[str]]:
    """The rows of the markdown table under ``heading``, by their first cell."""
    lines = md.split(heading, 1)[1].split("\n#", 1)[0].splitlines()
    return {line.split(" | ")[0].strip("| "): [c.strip() for c in line.strip("| ").split(" | ")[1:]]
            for line in lines if line.startswith("| ") and not line.startswith("|---")}


def test_the_report_shows_both_deltas_the_budgets_basis_and_the_front_in_html_markdown_and_json(filled):
    from reports.render import render_report

    written, _, _ = render_report(filled)
    md, html = written["md"].read_text(), written["html"].read_text()
    for text in (md, html):
        assert "Equal budgets: Δ vs the student baseline and vs the student trained as long" in text
        assert "Where each equal budget comes from" in text and "Gain vs extra training cost" in text
    compared, basis = _section(md, "### Equal budgets"), _section(md, "### Where each equal budget")
    assert compared["cwd"] == ["35.50 ± 0.71 (n=2)", "1.50x", "+5.00", "gain", "+1.75", "\\[-1.43, +4.93\\]", "0.181",
                               "within noise"]
    assert compared["at"][4:] == ["-1.75", "\\[-4.93, +1.43\\]", "0.181", "within noise"]
    assert compared["student, equal budget"][:4] == ["33.75 ± 1.06 (n=2)", "2.00x", "+3.25", "gain"]
    assert basis["student\\_budget\\_s0"] == ["wall clock", "20", "2.00x", "at\\_s0", "2.00 s", "0.1 s", "planned"]
    assert (written["md"].parent / "budget_front.png").is_file()
    code, out, err = run_cli("report", str(filled.path), "--results", str(filled.results), "--json")
    assert code == 0, err
    found = json.loads(out)["equal_budget"]
    assert found["by"] == "wall_clock" and [b["iterations"] for b in found["basis"]] == [20, 20]
    assert found["cells"][0]["vs_equal_budget"]["delta"] == pytest.approx(1.75)
    assert found["cells"][0]["vs_equal_budget"]["verdict"] == "within noise"
    assert found["baselines"][0]["extra_cost"] == pytest.approx(2.0)


@pytest.mark.slow  # four tiny runs train (4 iterations; the twin a few more)
def test_one_local_launch_runs_the_cells_then_the_equal_budget_twin_and_a_relaunch_runs_nothing(tmp_path, monkeypatch,
                                                                                                tiny_teacher):
    """Guarantee: One local launch runs the cells then the equal budget twin and a relaunch runs nothing.

    By iterations, so that the twin always trains longer than its baseline: on a tiny model the
    teacher's share of the step is small, and by wall clock the budget can come out at the
    baseline's own iterations (the baseline is then its own twin, tested below)."""
    import math

    from kdbench import store
    from tests.launch_helpers import write_study

    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "data"))
    path = write_study(tmp_path, "budget_e2e", seeds=(0,), equal_budget="iterations")
    results = tmp_path / "results"
    assert tiny_teacher(load_study(path, results))  # the teacher, complete: the twin is what this is about
    code, out, err = run_cli("launch", str(path), "--results", str(results), "--no-progress")
    assert code == 0, err
    assert "submitted 3" in out and "4 of 4 runs complete" in out and "planned later" not in out
    study = reload(load_study(path, results))
    finals = {p.name: store.read_json(study.directory / p.run_id / store.FINAL) for p in study.runs}
    assert set(finals) == {"teacher", "student_s0", "cwd_logits_s0", "student_budget_s0"}
    cost = finals["cwd_logits_s0"]["cost"]
    expected = math.ceil(round(4 / (1 - cost["teacher_share"] - cost["kd_share"]), 6))
    twin = _twins(study)["student_budget_s0"]
    assert finals["student_budget_s0"]["iterations"] == expected == twin.run.schedule.iterations > 4
    stamps = {p.name: (study.directory / p.run_id / store.FINAL).stat().st_mtime_ns for p in study.runs}
    code, out, err = run_cli("launch", str(path), "--results", str(results), "--no-progress")
    assert code == 0, err
    assert "submitted 0; skip-complete 4" in out
    assert {p.name: (study.directory / p.run_id / store.FINAL).stat().st_mtime_ns for p in study.runs} == stamps


def test_a_budget_of_the_baselines_own_iterations_makes_the_baseline_its_own_twin(tmp_path):
    """Guarantee: A budget of the baselines own iterations makes the baseline its own twin."""
    study = _study(tmp_path)
    for name, miou in (("student_s0", 30.0), ("student_s1", 31.0), ("cwd_s0", 35.0), ("cwd_s1", 36.0),
                       ("at_s0", 31.0), ("at_s1", 33.0)):
        _finish(study, name, seconds_per_iter=0.1, miou=miou)   # no cell slower than the baseline: 10 iterations
    study = reload(study)
    assert not _twins(study) and study.waiting == ()
    from analysis.collect import collect
    from analysis.records import VS_EQUAL_BUDGET
    from analysis.summary import summarise
    from reports.render import render_report

    cells = summarise(study, collect(study, write=False)).cells
    assert [c.test(VS_EQUAL_BUDGET, "val/mIoU").delta for c in cells] == [c.delta("val/mIoU") for c in cells] == [
        5.0, 1.5]
    basis = _section(render_report(study, formats=("md",))[0]["md"].read_text(), "### Where each equal budget")
    assert basis["student\\_s0"][-1] == "student\\_s0 itself: the budget is its own iterations"


def test_plan_show_says_the_twins_iterations_come_from_the_equal_budget(filled):
    code, out, err = run_cli("plan", str(filled.path), "--results", str(filled.results), "--show", "student_budget_s0")
    assert code == 0, err
    shown = json.loads(out)["values"]["schedule.iterations"]
    assert shown == {"value": 20, "from": "planner: equal_budget (wall_clock): the slowest distilled cell's "
                                          "training time"}


def test_adding_a_seed_leaves_the_earlier_seeds_twin_and_its_id_alone(tmp_path):
    """Guarantee: Adding a seed leaves the earlier seeds twin and its id alone."""
    one = _study(tmp_path, text=STUDY.replace("seeds: [0, 1]", "seeds: [0]"))
    for name, pace in (("student_s0", 0.1), ("cwd_s0", 0.15), ("at_s0", 0.2)):
        _finish(one, name, seconds_per_iter=pace)
    before = _twins(reload(one))["student_budget_s0"]
    more = _study(tmp_path)   # the same study with seeds: [0, 1]
    assert _twins(more)["student_budget_s0"].run_id == before.run_id
    assert [w.why for w in more.waiting] == [
        "the equal-budget twin of student_s1 (wall clock) waits for cwd_s1, at_s1 to finish"]
