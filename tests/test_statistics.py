"""Is a gain real: intervals, paired and Welch Δ, Holm's correction, seeds needed, published vs
measured, and the report and ``kdbench report --json`` that show them.

Every expected number is worked out by hand in the comments, from textbook t-table values and
the closed forms of Student's t with 2 and 4 degrees of freedom:
df 2: P(|T| > t) = 1 - t / sqrt(t² + 2); df 4: P(T <= t) = 1/2 + 3/8 u (1 - t² / (12 (1 + t² / 4))),
u = t / sqrt(1 + t² / 4). Quantiles: t(0.975; 2) = 4.303, t(0.975; 4) = 2.776, t(0.975; 9) = 2.262,
t(0.8; 9) = 0.883, t(0.975; 8) = 2.306, t(0.8; 8) = 0.889.
"""

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest

from analysis import format as fmt
from analysis import references, tables
from analysis import stats as significance
from analysis.collect import collect
from analysis.records import VS_STUDENT, CellRecord, Delta, GapShare, Group, RunFacts
from analysis.summary import summarise
from reports.render import VERDICT_WORDS, md, md_start, render
from tests.browser import Dom, dump_dom, needs_chromium
from tests.launch_helpers import run_cli
from tests.results_fixtures import LOGITS, make_store, study_text

BASELINE = {0: 30.0, 1: 31.0, 2: 32.0}


def test_a_cells_interval_is_the_student_t_interval_and_one_run_has_none():
    # [1, 2, 3]: mean 2, s = 1, n = 3; 2 ± 4.303 x 1 / sqrt(3) = 2 ± 2.484.
    found = significance.interval([1.0, 2.0, 3.0, math.nan])
    assert (found.mean, found.std, found.n) == (2.0, 1.0, 3)
    assert found.low == pytest.approx(-0.484, abs=1e-3) and found.high == pytest.approx(4.484, abs=1e-3)
    single = significance.interval([5.0])
    assert single.n == 1 and math.isnan(single.low) and math.isnan(single.high) and math.isnan(single.std)


def test_a_delta_on_the_same_seeds_is_paired_and_tighter_than_welch_on_the_same_numbers():
    """Guarantee: A cell's Δ is tested paired by seed when it and its baseline have the same seeds, by Welch otherwise,
    with its 95% interval; verdicts are Holm-corrected across the study's tested cells; n = 1 gets no interval;
    the seeds needed at power 0.8 are those of the t test (each checked on hand-computed numbers)."""
    # Differences by seed 71-70, 73-71, 75-72 = 1, 2, 3: mean 2, s_d = 1, se = 1 / sqrt(3) = 0.5774;
    # 95%: 2 ± 4.303 x 0.5774 = 2 ± 2.484; t = 2 / 0.5774 = 3.464, t² = 12, p = 1 - 3.464 / sqrt(14) = 0.0742.
    paired = significance.compare({0: 71.0, 1: 73.0, 2: 75.0}, {0: 70.0, 1: 71.0, 2: 72.0})
    assert paired.test == "paired" and paired.n == 3 and paired.df == 2
    assert paired.delta == pytest.approx(2.0)
    assert (paired.low, paired.high) == (pytest.approx(-0.484, abs=1e-3), pytest.approx(4.484, abs=1e-3))
    assert paired.p == pytest.approx(0.0742, abs=1e-4) and paired.spread == pytest.approx(1.0)
    # The same numbers on other seeds: Welch, se = sqrt(4 / 3 + 1 / 3) = 1.291, wider than 0.577.
    unpaired = significance.compare({0: 71.0, 1: 73.0, 2: 75.0}, {3: 70.0, 4: 71.0, 5: 72.0})
    assert unpaired.test == "welch" and unpaired.high - unpaired.low > paired.high - paired.low


def test_a_delta_on_other_seeds_is_welch_with_its_degrees_of_freedom():
    """Guarantee: A delta on other seeds is welch with its degrees of freedom."""
    # Cell 74, 76, 78 (mean 76, s² = 4) vs baseline 70, 72, 74 (mean 72, s² = 4), seeds apart: Welch.
    # se = sqrt(4/3 + 4/3) = 1.633; df = (8/3)² / ((4/3)² / 2 + (4/3)² / 2) = 4; 95%: 4 ± 2.776 x 1.633 = 4 ± 4.534.
    # t = 4 / 1.633 = 2.449 (t² = 6), u = 2.449 / sqrt(2.5) = 1.549, P(T <= t) = 0.5 + 0.375 x 1.549 x 0.8 = 0.9648,
    # so p = 2 x 0.0352 = 0.0705.
    welch = significance.compare({0: 74.0, 1: 76.0, 2: 78.0}, {3: 70.0, 4: 72.0, 5: 74.0})
    assert welch.test == "welch" and welch.df == pytest.approx(4.0) and welch.delta == pytest.approx(4.0)
    assert (welch.low, welch.high) == (pytest.approx(-0.534, abs=1e-3), pytest.approx(8.534, abs=1e-3))
    assert welch.p == pytest.approx(0.0705, abs=1e-4)
    # Unequal spreads: s² 4 and 1, n 3 and 3: df = (4/3 + 1/3)² / ((4/3)² / 2 + (1/3)² / 2) = 2.778 / 0.944 = 2.941.
    assert significance.compare({0: 74.0, 1: 76.0, 2: 78.0}, {3: 71.0, 4: 72.0, 5: 73.0}).df == pytest.approx(
        2.941, abs=1e-3)
    # One seed missing on a side (a diverged run): the seeds differ, so Welch, not a pairing that drops one.
    assert significance.compare({0: 74.0, 1: 76.0}, {0: 70.0, 1: 72.0, 2: 74.0}).test == "welch"


def test_a_side_with_one_run_gets_a_delta_without_interval_test_or_verdict():
    """Guarantee: A side with one run gets a delta without interval test or verdict."""
    single = significance.compare({0: 33.0}, BASELINE)
    assert single.delta == pytest.approx(2.0) and single.test == "" and math.isnan(single.low)
    assert significance.verdict(single, math.nan) == significance.NO_INTERVAL
    assert math.isnan(significance.seeds_needed(single))
    assert significance.verdict(significance.compare({}, BASELINE), math.nan) == significance.NOT_COMPARED


def test_holm_multiplies_the_kth_smallest_p_by_m_minus_k_plus_one_and_keeps_the_order():
    # Sorted 0.01, 0.03, 0.04: x3 = 0.03, x2 = 0.06, x1 = 0.04 -> raised to 0.06 (monotone); back in input order.
    assert significance.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # 0.01 x 3, 0.02 x 2, 0.03 x 1 -> 0.03, 0.04, 0.04: all three below 0.05 (Bonferroni: 0.03, 0.06, 0.09).
    assert significance.holm([0.02, 0.01, 0.03]) == pytest.approx([0.04, 0.03, 0.04])
    # Cells without a test are not in the family: m = 2 here; capped at 1.
    adjusted = significance.holm([0.01, math.nan, 0.9])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.9)
    assert significance.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def _three_cells(tmp_path):
    """Three CWD cells paired with the baseline 30, 31, 32 on seeds 0, 1, 2. Differences by seed:
    big 9, 10, 11 (t² = 300), up 2, 3, 4 (t² = 27), down -4, -3, -2 (t² = 27); s_d = 1 each."""
    cwd = f"{{method: cwd, params: {{tau: 4.0}}, weight: 3.0, student_location: {LOGITS}}}"
    text = study_text({"big": cwd, "up": cwd.replace("3.0", "2.0"), "down": cwd.replace("3.0", "1.0")},
                      "references: [fixture_ref.csv]\n")
    outcomes = {f"{name}_s{seed}": BASELINE[seed] + d
                for name, diffs in (("big", (9, 10, 11)), ("up", (2, 3, 4)), ("down", (-4, -3, -2)))
                for seed, d in enumerate(diffs)}
    return make_store(tmp_path, outcomes, text)


def _tests(study) -> dict[str, Delta]:
    """method -> its cell's test against the student baseline on mIoU."""
    return {cell.method: cell.test(VS_STUDENT, "val/mIoU") for cell in summarise(study, collect(study)).cells}


def _cells(study) -> dict[str, CellRecord]:
    return {cell.method: cell for cell in summarise(study, collect(study)).cells}


def test_holm_across_three_cells_turns_two_raw_gains_into_noise(tmp_path):
    """Guarantee: Holm across three cells turns two raw gains into noise."""
    study, results = _three_cells(tmp_path)
    tests = _tests(study)
    # df 2: p = 1 - sqrt(t² / (t² + 2)): big 1 - sqrt(300/302) = 0.00332, up and down 1 - sqrt(27/29) = 0.0351.
    # Raw, all three are below 0.05. Holm: 0.00332 x 3 = 0.00995; 0.0351 x 2 = 0.0702; 0.0351 x 1, raised to 0.0702.
    assert [tests[m].p for m in ("big", "up", "down")] == pytest.approx([0.00332, 0.0351, 0.0351], abs=1e-4)
    assert [tests[m].p_holm for m in ("big", "up", "down")] == pytest.approx([0.00995, 0.0702, 0.0702], abs=1e-4)
    assert {m: t.verdict for m, t in tests.items()} == {"big": "gain", "up": "within noise", "down": "within noise"}
    assert {t.test for t in tests.values()} == {"paired"}
    # big: 10 ± 4.303 / sqrt(3) = 10 ± 2.484.
    assert (tests["big"].low, tests["big"].high) == (pytest.approx(7.516, abs=1e-3), pytest.approx(12.484, abs=1e-3))
    md = render(study, ("md",))["md"].read_text()
    assert ("CWD beat the student baseline in 1 of 3 tested CWD cells (a gain beyond noise at 95%, Holm-corrected "
            "across the study's 3 tested cells); 2 within noise.") in md
    assert ("| big | 41.00 ± 2.00 (n=3) | \\[36.03, 45.97\\] | +10.00 | \\[+7.52, +12.48\\] | paired | 0.010 "
            "| gain |") in md


def test_seeds_needed_for_a_delta_are_those_of_the_t_test_at_power_0_8():
    """Guarantee: Seeds needed for a delta are those of the t test at power 0 8."""
    # Paired, Δ / s_d = 1: the t form of the formula, n >= (t(0.975; n-1) + t(0.8; n-1))², holds at n = 10
    # ((2.262 + 0.883)² = 9.89) and not at n = 9 ((2.306 + 0.889)² = 10.21): 10 pairs (R's power.t.test,
    # type "paired": n = 9.94).
    paired = significance.compare({0: 0.0, 1: 1.0, 2: 2.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert (paired.test, paired.delta, paired.spread) == ("paired", 1.0, 1.0)
    assert significance.seeds_needed(paired) == 10
    # Welch, s = 1 on both sides, Δ = 1: two samples, n >= 2 (t(0.975; 2n-2) + t(0.8; 2n-2))²: at n = 17
    # 2 (2.037 + 0.853)² = 16.70, at n = 16 2 (2.042 + 0.854)² = 16.77 > 16: 17 per side (R: n = 16.71).
    welch = significance.compare({0: 1.0, 1: 2.0, 2: 3.0}, {3: 0.0, 4: 1.0, 5: 2.0})
    assert (welch.test, welch.spread) == ("welch", 1.0) and significance.seeds_needed(welch) == 17
    # Per-seed differences equal up to rounding (s ~ 1e-15, not seed noise): the fewest seeds a t test takes, 2.
    rounded = significance.compare({0: 0.1 + 0.2, 1: 0.6, 2: 0.7}, {0: 0.0, 1: 0.3, 2: 0.4})
    assert 0 < rounded.spread < 1e-12 and significance.seeds_needed(rounded) == 2
    # Welch, Δ / σ = 10 at 3 per side: the power's other tail underflows in scipy (NaN); 2 per side already reach
    # 0.8 (the normal approximation gives 2 x (2.80 / 10)² = 0.16).
    assert significance.seeds_needed(significance.Comparison(10.0, 0.0, 0.0, "welch", 4.0, 0.0, 1.0, 3)) == 2
    # Δ / s = 0.001 needs ~15.7 million pairs: beyond any study.
    tiny = significance.Comparison(0.001, -1.0, 1.0, "paired", 2.0, 0.99, 1.0, 3)
    assert significance.seeds_needed(tiny) == math.inf
    assert math.isnan(significance.seeds_needed(significance.Comparison(0.0, -1.0, 1.0, "paired", 2.0, 1.0, 1.0, 3)))


def test_the_report_shows_intervals_verdicts_and_seeds_for_every_cell(tmp_path):
    study, results = make_store(tmp_path)
    md = render(study, ("md",))["md"].read_text()
    table = tables.significance_table(summarise(study, collect(study)))
    rows = {row[0].text: [c.text for c in row[1:]] for row in table.rows}
    # Baseline 30, 31, 32: 31 ± 4.303 / sqrt(3) = 31 ± 2.484.
    assert rows["student (no distillation)"][:2] == ["31.00 ± 1.00 (n=3)", "[28.52, 33.48]"]
    assert rows["teacher"][1] == "no interval (n = 1)"
    assert rows["pi_logits"][1:] == ["no interval (n = 1)", "+2.00", "—", "—", "—", "no interval (n = 1)", "—"]
    # cwd_logits 35, 36 vs 30, 31, 32 (Welch): 4.5 ± 3.257 x 0.7638 (df 2.882) = [2.01, 6.99], Holm p 0.022 (see
    # tests/test_reports.py). Seeds: σ = sqrt((0.5 + 1) / 2) = 0.866, Δ / σ = 5.196; the t form
    # n >= 2 (t(0.975; 2n-2) + t(0.8; 2n-2))² / 5.196²: at n = 2 2 (4.303 + 1.061)² / 27 = 2.13 > 2, at n = 3
    # 2 (2.776 + 0.941)² / 27 = 1.02 <= 3: 3 per side.
    assert rows["cwd_logits"][2:] == ["+4.50", "[+2.01, +6.99]", "welch", "0.022", "gain", "3 (has 2)"]
    assert "Holm-corrected p-value across the study's 2 tested cells is below 0.05" in md
    assert "add seeds to the study's seeds: and relaunch (only the new seeds run)" in md


def test_published_numbers_are_placed_against_the_measured_interval_beside_their_tag_and_starting_point(tmp_path):
    study, results = make_store(tmp_path)
    found = summarise(study, collect(study))
    row = [c.text for c in tables.reference_table(found).rows[0]]
    # Measured cwd_logits 35, 36: 35.5 ± 12.706 x 0.7071 / sqrt(2) = 35.5 ± 6.353 = [29.15, 41.85]; published 40.25 is
    # inside, (40.25 - 35.5) / 0.7071 = 6.7 stds above. Published student 33.75 lies outside the measured baseline's
    # [28.52, 33.48]; the teacher has one run (no interval).
    assert row[-4:] == ["—", "[29.15, 41.85]", "inside (6.7 std above)",
                        "different student baseline; teacher unchecked"]  # the fixture's file has no tag column
    published = references.read_references(study.path, study.spec.references)
    close = published.assign(value=[45.0], student_value=[31.5], tag=["its own teacher, one run"])
    matches = tuple(references.match_references(close, found.cells, study.spec.methods, "seg"))
    row = [c.text for c in tables.reference_table(dataclasses.replace(found, matches=matches)).rows[0]]
    # 45 is outside [29.15, 41.85]: (45 - 35.5) / 0.7071 = 13.4 stds above; 31.5 is inside the baseline's interval.
    assert row[-4:] == ["its own teacher, one run", "[29.15, 41.85]", "outside: 13.4 std above",
                        "same; teacher unchecked"]


def test_a_cell_measured_on_a_partial_dataset_split_is_tagged_not_comparable(tmp_path):
    study, results = make_store(tmp_path)
    for planned in study.runs:
        final = results / study.name / planned.run_id / "final.json"
        if planned.name.startswith("cwd_logits") and final.exists():
            record = json.loads(final.read_text())
            record["data"] = {"name": "fashion_scenes", "complete": False, "splits": {"val": {"images": 2}}}
            final.write_text(json.dumps(record))
    row = [c.text for c in tables.reference_table(summarise(study, collect(study))).rows[0]]
    assert row[-1] == "not comparable: measured on a partial dataset split"


def test_kdbench_report_json_gives_each_cells_interval_test_verdict_and_seeds_needed(tmp_path):
    study, results = _three_cells(tmp_path)
    code, out, err = run_cli("report", str(study.path), "--results", str(results), "--format", "md", "--json")
    assert code == 0, err
    found = json.loads(out)
    assert (found["metric"], found["alpha"], found["power"], found["correction"], found["tested_cells"]) == (
        "val/mIoU", 0.05, 0.8, "holm", 3)
    assert found["written"]["md"].endswith("README.md") and found["headline"].startswith("CWD beat")
    cells = {c["name"]: c for c in found["cells"]}
    big = cells["big"]
    # big 39, 41, 43: mean 41, s = 2, 41 ± 4.303 x 2 / sqrt(3) = 41 ± 4.969; Δ 10 ± 2.484 (see above).
    assert (big["mean"], big["std"], big["n"], big["test"], big["verdict"]) == (41.0, 2.0, 3, "paired", "gain")
    assert big["ci95"] == pytest.approx([36.031, 45.969], abs=1e-3)
    assert big["delta_ci95"] == pytest.approx([7.516, 12.484], abs=1e-3)
    assert big["baseline"]["ci95"] == pytest.approx([28.516, 33.484], abs=1e-3)
    # up: differences 2, 3, 4: Δ 3, s_d 1, Δ / s_d = 3; the t form n >= (t(0.975; n-1) + t(0.8; n-1))² / 9: at n = 3
    # (4.303 + 1.061)² / 9 = 3.20 > 3, at n = 4 (3.182 + 0.978)² / 9 = 1.92 <= 4: 4 pairs.
    assert (cells["up"]["seeds_needed"], cells["up"]["seeds_have"], cells["up"]["verdict"]) == (4, 3, "within noise")
    # The fixture's published CWD row (40.25, student 33.75) matches each of the three CWD cells.
    assert [(r["cell"], r["published"]) for r in found["references"]] == [("big", 40.25), ("up", 40.25),
                                                                           ("down", 40.25)]
    # up 32, 34, 36: 34 ± 4.969 = [29.03, 38.97]: 40.25 is outside, (40.25 - 34) / 2 = 3.125 stds above.
    up = found["references"][1]
    assert (up["inside_ci95"], up["distance_std"]) == (False, pytest.approx(3.125))
    assert up["starting_point"] == "different student baseline; teacher unchecked"
    assert "NaN" not in out and "Infinity" not in out


def _markdown_table(text: str, title: str) -> dict[str, dict[str, str]]:
    """The rows of the markdown table under ``### <title>``: first cell -> {header: cell}, every
    text as the markdown writes it (escaped)."""
    lines = text[text.index(f"### {md(title)}\n"):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if not line.startswith("|---"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    header, *rows = rows
    return {row[0]: dict(zip(header, row)) for row in rows}


def _interval(pair) -> str:
    return md(fmt.interval(*pair, sign=True)) if pair else fmt.MISSING


@pytest.mark.parametrize("which", ["fixture", "three cells", "equal budgets"])
def test_report_json_and_the_markdown_show_the_same_delta_interval_and_verdict_for_every_cell(which, tmp_path):
    from tests.results_fixtures import make_budget_store

    if which == "equal budgets":
        study, results = make_budget_store(tmp_path), tmp_path / "results"
    else:
        study, results = (make_store if which == "fixture" else _three_cells)(tmp_path)
    code, out, err = run_cli("report", str(study.path), "--results", str(results), "--format", "md", "--json")
    assert code == 0, err
    found = json.loads(out)
    text = Path(found["written"]["md"]).read_text()
    rows = _markdown_table(text, "Gain or noise: Δ vs the student baseline with 95% intervals")
    assert len(found["cells"]) >= 2 and len(rows) == len(found["cells"]) + 2  # the teacher and baseline rows too
    for cell in found["cells"]:
        row = rows[md(cell["name"])]
        assert (row["Δ vs student"], row["Δ 95% interval"], row["test"], row["p (Holm)"], row["verdict"]) == (
            fmt.signed(cell["delta"]), _interval(cell["delta_ci95"]), cell["test"] or fmt.MISSING,
            md(fmt.p_value(cell["p_holm"])), md(cell["verdict"]))
        assert row["95% interval"] == (md(fmt.interval(*cell["ci95"])) if cell["ci95"] else "no interval (n = 1)")
        sentence = next((line for line in found["lines"] if line.startswith(f"{cell['name']}: ")), None)
        if sentence and cell["verdict"] in VERDICT_WORDS:  # a CWD cell's sentence: the same Δ, interval, verdict
            assert sentence.startswith(f"{cell['name']}: {VERDICT_WORDS[cell['verdict']]}, "
                                       f"Δ {fmt.signed(cell['delta'])} mIoU vs the student baseline, 95% interval "
                                       f"{fmt.interval(*cell['delta_ci95'], sign=True)} (")
            assert f"- {md_start(sentence)}" in text
    if which != "equal budgets":
        return
    rows = _markdown_table(text, "Equal budgets: Δ vs the student baseline and vs the student trained as long")
    for cell, tested in zip(found["cells"], found["equal_budget"]["cells"], strict=True):
        row, against = rows[md(cell["name"])], tested["vs_equal_budget"]
        assert (row["Δ vs student"], row["verdict"]) == (fmt.signed(cell["delta"]), md(cell["verdict"]))
        assert (row["Δ vs equal-budget student"], row["Δ 95% interval"], row["p (Holm)"],
                row["verdict (equal budget)"]) == (fmt.signed(against["delta"]), _interval(against["delta_ci95"]),
                                                   md(fmt.p_value(against["p_holm"])), md(against["verdict"]))


def _section(dom: str, opening: str, closing: str) -> Dom:
    """The part of a DOM Chromium serialised from ``opening`` to the next ``closing``, read back."""
    start = dom.index(opening)
    return Dom(dom[start:dom.index(closing, start)])


@pytest.mark.slow  # a Chromium process: seconds
@needs_chromium
def test_a_headless_browser_shows_the_verdicts_intervals_seeds_and_published_vs_measured(tmp_path):
    study, results = _three_cells(tmp_path)
    dom = dump_dom(render(study, ("html",))["html"])
    verdicts = _section(dom, '<div class="verdict" id="cwd-verdict">', "</div>")
    assert "CWD beat the student baseline in 1 of 3 tested CWD cells" in verdicts.text
    assert "big: a gain, Δ +10.00 mIoU vs the student baseline, 95% interval [+7.52, +12.48] (paired by seed" in (
        verdicts.text)
    assert "up: within noise" in verdicts.text and "a Δ this size needs 4 seeds to resolve" in verdicts.text
    table = _section(dom, '<section id="significance">', "</section>")
    headers = [t for t, _, _ in table.elements if t == "th"]
    assert len(headers) == 9 and "Δ 95% interval" in table.text and "seeds to resolve Δ" in table.text
    assert [t for t, _, _ in table.elements].count("tr") == 6  # header, teacher, baseline, three cells
    for text in ("[36.03, 45.97]", "[+7.52, +12.48]", "gain", "within noise", "4 (has 3)", "Holm-corrected"):
        assert text in table.text, text
    published = _section(dom, '<section id="references">', "</section>")
    for text in ("Measured 95% interval", "Published vs measured", "Comparability", "outside: 3.1 std above",
                 "different student baseline; teacher unchecked"):
        assert text in published.text, text


def test_the_share_of_the_teacher_student_gap_a_cell_closes_is_its_delta_over_the_gap_with_the_delta_interval():
    """Guarantee: Each cell says how far it closes the teacher-student gap: Δ / (teacher - student baseline), with the
    Δ interval divided by the gap (the teacher taken as fixed), in the report's table, `report --json` and the
    CWD sentence; no share where the teacher is not above the baseline; a Δ that resolves on its own but not
    after Holm's correction says so."""
    # Teacher 50 (one run, fixed), baseline 30, 31, 32 (mean 31): gap 19. big: Δ 10, 95% 10 ± 4.303 / sqrt(3)
    # = [7.516, 12.484]; share 10 / 19 = 0.5263, interval [7.516 / 19, 12.484 / 19] = [0.3956, 0.6571].
    # down: differences -4, -3, -2: Δ -3, [-5.484, -0.516]: share -3 / 19 = -0.1579, [-0.2886, -0.0272].
    share, low, high = significance.gap_shares(10.0, 7.516, 12.484, 50.0, 31.0)
    assert (share, low, high) == (pytest.approx(0.5263, abs=1e-4), pytest.approx(0.3956, abs=1e-4),
                                  pytest.approx(0.6571, abs=1e-4))
    # A teacher not above the baseline leaves no gap to close: no share (not a division by 0 or a sign flip).
    for teacher in (31.0, 29.0, math.nan):
        assert all(math.isnan(v) for v in significance.gap_shares(2.0, 1.0, 3.0, teacher, 31.0))


def test_the_report_json_and_cwd_sentence_say_how_far_each_cell_closes_the_teacher_student_gap(tmp_path):
    """Guarantee: The report json and cwd sentence say how far each cell closes the teacher student gap."""
    study, results = _three_cells(tmp_path)
    gaps = {method: cell.gap("val/mIoU") for method, cell in _cells(study).items()}
    assert gaps["big"].gap == pytest.approx(19.0)
    assert (gaps["big"].low, gaps["big"].high) == (pytest.approx(0.3956, abs=1e-4), pytest.approx(0.6571, abs=1e-4))
    assert gaps["down"].share == pytest.approx(-0.1579, abs=1e-4)
    assert (gaps["down"].low, gaps["down"].high) == (pytest.approx(-0.2886, abs=1e-4),
                                                     pytest.approx(-0.0272, abs=1e-4))
    md = render(study, ("md",))["md"].read_text()
    assert "| big | +10.00 | 19.00 | 52.6% | \\[39.6%, 65.7%\\] |" in md
    assert "| down | -3.00 | 19.00 | -15.8% | \\[-28.9%, -2.7%\\] |" in md
    assert "the teacher's value taken as fixed" in md
    assert ("it closes 52.6% of the teacher-student gap (95% interval \\[39.6%, 65.7%\\], the teacher taken as "
            "fixed)") in md
    code, out, err = run_cli("report", str(study.path), "--results", str(results), "--format", "md", "--json")
    assert code == 0, err
    big = {c["name"]: c for c in json.loads(out)["cells"]}["big"]
    assert (big["gap"], big["gap_share"]) == (pytest.approx(19.0), pytest.approx(0.5263, abs=1e-4))
    assert big["gap_share_ci95"] == pytest.approx([0.3956, 0.6571], abs=1e-4)


def test_a_teacher_below_its_student_baseline_leaves_no_gap_to_close_and_the_report_says_why(tmp_path):
    """Guarantee: A teacher below its student baseline leaves no gap to close and the report says why."""
    # Teacher 25 against the baseline's mean 31: the gap is -6; a share of it would flip the sign of every Δ.
    study, results = make_store(tmp_path, {"teacher": 25.0})
    found = summarise(study, collect(study))
    gaps = {cell.method: cell.gap("val/mIoU") for cell in found.cells}
    assert gaps["cwd_logits"].gap == pytest.approx(-6.0)
    assert all(math.isnan(gap.share) for gap in gaps.values())
    table, = tables.shown([tables.gap_table(found)])[0]
    assert table.header == ["Cell", "teacher - student"]
    assert [[c.text for c in row] for row in table.rows][0] == ["cwd_logits", "-6.00"]
    assert "no teacher above the student baseline to close a gap to" in table.caption


def test_a_cell_within_noise_only_after_holms_correction_says_so_rather_than_that_it_needs_the_seeds_it_has():
    """Guarantee: A cell within noise only after holms correction says so rather than that it needs the seeds it has."""
    from reports.render import _cwd_line

    # Three paired seeds, Δ +17 with a 95% interval [+5.7, +28.3] that excludes 0 on its own (p 0.023),
    # Holm-corrected over five cells to 0.115: within noise; 3 seeds resolve a Δ this size alone.
    metric = "val/mIoU"

    def group(mean: float) -> Group:
        found = significance.Interval(mean, 2.3, 3, math.nan, math.nan)
        return Group("cell", (), 3, {"complete": 3}, 0, 0, {metric: found}, {metric: {}}, {}, None, {},
                     RunFacts(*[None] * 7))

    tested = Delta(VS_STUDENT, metric, 17.0, 5.7, 28.3, "paired", 2.0, 0.023, 0.115, significance.NOISE, 2.3, 3, 3.0)
    cell = CellRecord("cwd_logits", {}, group(46.1), group(29.1), None, (tested,),
                      (GapShare(metric, math.nan, math.nan, math.nan, math.nan),), math.nan, math.nan)
    verdict = {"cell": cell, "comparable": True, "gap": 17.0, "verdict": significance.NOISE}
    line = _cwd_line(verdict, metric)
    assert "within noise" in line and "needs 3 seeds" not in line
    assert "on its own it would resolve with these 3 seeds: Holm's correction across the study's cells" in line
    # Five seeds needed, three run: the seed count is given as before.
    five = dataclasses.replace(cell, tests=(dataclasses.replace(tested, seeds_needed=5.0),))
    line = _cwd_line({**verdict, "cell": five}, metric)
    assert line.endswith("a Δ this size needs 5 seeds to resolve (power 0.8), it has 3.")
