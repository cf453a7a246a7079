"""The report's tables of every metric beyond the primary one, and of method-against-method
comparisons (analysis.comparisons): the primary metric's table first, the other metrics in a table
below it. Every number goes through analysis.format.
"""

from __future__ import annotations

import re

from analysis import comparisons
from analysis import format as fmt
from analysis import stats as significance
from analysis.records import CW_VS_SPATIAL, NAMED, VS_STUDENT, Delta, Statistics, Versus
from analysis.tables import Cell, Table, setting

TESTED_HEADER = ["Δ", "Δ 95% interval", "test", "p (Holm)", "verdict", "seeds to resolve Δ"]


def family_words(found: Statistics, family: str, metric: str) -> str:
    """``the 5 tested cells on mAcc``: a family Holm's correction ran over, on one metric."""
    what = {VS_STUDENT: "tested cell", CW_VS_SPATIAL: "tested channel-wise-vs-spatial comparison",
            NAMED: "tested named comparison"}[family]
    return f"the {fmt.count_noun(found.family(family, metric).tested, what)} on {fmt.metric_label(metric)}"


def tested_cells(test: Delta) -> list[Cell]:
    """Δ, its 95% interval, test, Holm-corrected p, verdict and the seeds it needs (with those it has)."""
    needed = fmt.seed_count(test.seeds_needed, significance.MAX_SEEDS)
    if needed != fmt.MISSING:
        needed += f" (has {fmt.integer(test.runs)})"
    return [Cell(fmt.signed(test.delta)), Cell(fmt.interval(test.low, test.high, sign=True)),
            Cell(test.test or fmt.MISSING), Cell(fmt.p_value(test.p_holm)), Cell(str(test.verdict)), Cell(needed)]


def _interval_text(found) -> str:
    return fmt.interval(found.low, found.high) if found.n != 1 else "no interval (n = 1)"


def other_metrics_table(found: Statistics) -> Table | None:
    """Gain or noise on every metric but the primary one: each cell's mean, its 95% interval and
    its Δ vs the student baseline, tested, Holm's correction over each metric's cells apart."""
    others = found.metrics[1:]
    if not others or not found.cells:
        return None
    families = "; ".join(family_words(found, VS_STUDENT, metric) for metric in others)
    table = Table("significance_other_metrics", "Gain or noise on the other metrics: Δ vs the student baseline",
                  ["Cell", "metric", "mean ± std (n)", "95% interval", *TESTED_HEADER],
                  caption="As the table above, on each other metric the runs record. Holm's correction runs over "
                          f"each metric's family apart ({families}), so a verdict on one metric is not corrected "
                          "for the tests on another.")
    for metric in others:
        for cell in found.cells:
            measured = cell.measured(metric)
            table.rows.append([Cell(setting(cell)), Cell(fmt.metric_label(metric)),
                               Cell(fmt.mean_std(measured.mean, measured.std, measured.n)),
                               Cell(_interval_text(measured)), *tested_cells(cell.test(VS_STUDENT, metric))])
    return table


def where(found: Statistics, each: Versus) -> str:
    """The location of a comparison, with its teacher and student baseline runs (their name, the
    seed left out) when the study has several: ``decode_head.conv_seg, teacher_lr0.01, student_lr0.01``."""
    parts = [fmt.value(each.location)]
    for group, count in ((each.cell.teacher, len(found.teachers)), (each.cell.baseline, len(found.baselines))):
        if group is not None and count > 1:
            parts.append(re.sub(r"_s\d+$", "", str(group.run_names[0])))
    return ", ".join(parts)


def _versus_row(found: Statistics, each: Versus, metric: str, spatial: bool) -> list[Cell]:
    first, second = each.cell.measured(metric), each.other.measured(metric)
    row = [Cell(where(found, each))] if spatial else []
    row += [Cell(setting(each.cell)), Cell(fmt.mean_std(first.mean, first.std, first.n)),
            Cell(setting(each.other) + (f" (best of {len(each.chosen_from)})" if len(each.chosen_from) > 1 else "")),
            Cell(fmt.mean_std(second.mean, second.std, second.n))]
    return row + tested_cells(each.test)


SPATIAL_CAPTION = ("Each channel-wise cell against the spatial cell with the highest mean at the same student "
                   "location (same teacher and student baseline), as its loss declares what it distils. That cell "
                   "is chosen after seeing the results, which favours the spatial side: the best of several noisy "
                   "means is biased upwards, so a gain here is conservative and a loss less so. ")
NAMED_CAPTION = "The pairs the study lists in compare:, the first method minus the second. "
TEST_CAPTION = ("Δ with its 95% interval: paired (a t test on the per-seed differences) where both sides have "
                "results for the same seeds, Welch's t test otherwise. Verdict: gain or loss when the "
                "Holm-corrected p-value is below {alpha:g}, within noise otherwise; Holm runs over {families}.")


def versus_tables(found: Statistics) -> list[Table]:
    """For each kind of comparison the study has (channel-wise vs the best spatial cell, named
    pairs): a table on the primary metric and one on the other metrics below it."""
    built = []
    kinds = ((CW_VS_SPATIAL, "Channel-wise vs the best spatial method at each location", SPATIAL_CAPTION),
             (NAMED, "Comparisons named in compare:", NAMED_CAPTION))
    for family, title, caption in kinds:
        for metrics, part in ((found.metrics[:1], ""), (found.metrics[1:], " (other metrics)")):
            rows = [(metric, each) for metric in metrics
                    for each in comparisons.of_family(found.versus, family, metric)]
            if not rows:
                continue
            spatial = family == CW_VS_SPATIAL
            header = (["Location"] if spatial else []) + ["Cell", "mean ± std (n)",
                                                          "best spatial cell" if spatial else "against",
                                                          "its mean ± std (n)", *TESTED_HEADER]
            words = "; ".join(family_words(found, family, metric) for metric in metrics)
            table = Table(f"{'versus_spatial' if spatial else 'versus_named'}{'_other' if part else ''}",
                          title + part, (["metric"] if part else []) + header,
                          caption=caption + TEST_CAPTION.format(alpha=significance.ALPHA, families=words))
            for metric, each in rows:
                label = [Cell(fmt.metric_label(metric))] if part else []
                table.rows.append(label + _versus_row(found, each, metric, spatial))
            built.append(table)
    return built
