"""What the report says about method-against-method comparisons (analysis.comparisons) and every
metric beyond the primary one: the verdict box's sentences, in the words of the paper's Table 2 text
("CWD on the logits beats the best spatial method, AT, by +x [lo, hi]"), the sentence on two seeds,
and the same numbers for ``kdbench report --json``.
"""

from __future__ import annotations

from scipy import stats as scipy_stats

from analysis import comparisons, tables, versus_tables
from analysis import format as fmt
from analysis import stats as significance
from analysis.records import CW_VS_SPATIAL, NAMED, VS_STUDENT, CellRecord, Delta, Statistics, Versus
from analysis.stats import Interval

WORDS = {significance.GAIN: "a gain", significance.NOISE: "within noise", significance.LOSS: "a loss"}
TEST_WORDS = {"paired": "paired by seed", "welch": "Welch"}


def _tested_words(test: Delta, family: str) -> str:
    """``+14.67 mIoU [+9.62, +19.73]: a gain (paired by seed; Holm-corrected p 0.013 over the 2 ...)``."""
    label = fmt.metric_label(test.metric)
    if test.verdict == significance.NOT_COMPARED:
        return "but cannot be compared: a side has no complete run"
    if test.verdict not in WORDS:
        return f"by {fmt.signed(test.delta)} {label}; no interval and no verdict: a single run on a side (n = 1)"
    return (f"by {fmt.signed(test.delta)} {label} {fmt.interval(test.low, test.high, sign=True)}: "
            f"{WORDS[test.verdict]} ({TEST_WORDS[test.test]}; Holm-corrected p {fmt.p_value(test.p_holm)} over "
            f"the {family})")


def _verb(test: Delta) -> str:
    """``beats`` (Δ above 0), ``trails`` (below), ``matches`` (0) or ``against`` (nothing to compare)."""
    if not fmt.is_number(test.delta):
        return "against"
    return "beats" if test.delta > 0 else "trails" if test.delta < 0 else "matches"


def _kind(cell: CellRecord) -> str:
    """``cwd on the logits``: the cell's term methods and what its location is."""
    facts = cell.group.facts
    return f"{' + '.join(dict.fromkeys(facts.term_methods))} on the {fmt.kind_label(facts.location_kind)}"


def spatial_sentence(found: Statistics, each: Versus, tested: int) -> str:
    """One channel-wise cell against the best spatial cell at its location, as the paper words it."""
    cell, best, test = each.cell, each.other, each.test
    among = (f"the best spatial method there by mean (of {', '.join(str(c.method) for c in each.chosen_from)}), "
             if len(each.chosen_from) > 1 else "the only spatial method there, ")
    family = fmt.count_noun(tested, "channel-wise-vs-spatial comparison")
    return (f"At {versus_tables.where(found, each)} ({fmt.kind_label(cell.group.facts.location_kind)}): "
            f"{tables.setting(cell)} "
            f"({_kind(cell)}) {_verb(test)} {among}{tables.setting(best)}, {_tested_words(test, family)}.")


def named_sentence(each: Versus, tested: int) -> str:
    """One pair named in ``compare:``: the first cell minus the second."""
    family = fmt.count_noun(tested, "named comparison")
    words = _tested_words(each.test, family)
    return f"{tables.setting(each.cell)} {_verb(each.test)} {tables.setting(each.other)} {words}."


BEST_AFTER_THE_FACT = ("The best spatial method at a location is the one with the highest mean {metric}, chosen "
                       "after seeing the results: that favours the spatial side (the best of several noisy means is "
                       "biased upwards), so a gain over it is conservative.")


def versus_lines(found: Statistics) -> list[str]:
    """The verdict box's sentences on the primary metric: one per channel-wise cell at each location
    against the best spatial cell there, the note on choosing that cell after the fact, and one per
    named pair."""
    metric, lines = found.metric, []
    spatial = comparisons.of_family(found.versus, CW_VS_SPATIAL, metric)
    if spatial:
        tested = found.family(CW_VS_SPATIAL, metric).tested
        lines += [spatial_sentence(found, each, tested) for each in spatial]
        if any(len(each.chosen_from) > 1 for each in spatial):
            lines.append(BEST_AFTER_THE_FACT.format(metric=fmt.metric_label(metric)))
    named = comparisons.of_family(found.versus, NAMED, metric)
    if named:
        tested = found.family(NAMED, metric).tested
        lines += [named_sentence(each, tested) for each in named]
    return lines


def versus_heading(found: Statistics) -> str:
    """What the verdict box's comparison sentences answer (none when the study has no comparison)."""
    families = {each.test.family for each in found.versus}
    parts = [text for family, text in ((CW_VS_SPATIAL, "Channel-wise against the best spatial method"),
                                       (NAMED, "the pairs named in compare")) if family in families]
    text = ", and ".join(parts)
    return text[:1].upper() + text[1:] + ":" if parts else ""


def two_seeds_line(found: Statistics) -> str | None:
    """When a Δ within noise on the primary metric (a cell against its baseline, or a comparison)
    has two seeds (pairs, or runs on its smaller side): that a 95% interval on two seeds takes
    t(0.975; 1) = 12.71, so large gains stay within noise."""
    within = [cell.test(VS_STUDENT, found.metric) for cell in found.cells]
    within += [each.test for each in found.versus if each.test.metric == found.metric]
    if not any(t.verdict == significance.NOISE and t.runs == 2 for t in within):
        return None
    two, three = (float(scipy_stats.t.ppf(1 - significance.ALPHA / 2, df)) for df in (1, 2))
    return (f"With 2 seeds a 95% interval takes the t quantile t(0.975; 1) = {two:.1f} (with 3 seeds, {three:.2f}): "
            f"an interval on 2 seeds is {two / three:.1f} times as wide for the same spread, so even large gains "
            "stay within noise; add seeds to the study's seeds: and relaunch (only the new seeds run).")


def _number(value):
    return float(value) if fmt.is_number(value) else None


def interval_json(found: Interval) -> dict:
    return {"mean": _number(found.mean), "std": _number(found.std), "n": found.n,
            "ci95": [_number(found.low), _number(found.high)] if found.n > 1 else None}


def delta_json(test: Delta) -> dict:
    """A Δ with its interval, test, p before and after Holm, verdict and the seeds it needs."""
    needed = test.seeds_needed
    return {"delta": _number(test.delta),
            "delta_ci95": [_number(test.low), _number(test.high)] if test.test else None,
            "test": test.test or None, "df": _number(test.df), "p": _number(test.p), "p_holm": _number(test.p_holm),
            "verdict": test.verdict, "family": test.family, "seeds_have": test.runs,
            "seeds_needed": int(needed) if fmt.is_number(needed) else None,
            "seeds_beyond_max": bool(isinstance(needed, float) and needed == float("inf"))}


def cell_metrics_json(cell: CellRecord, metrics) -> dict:
    """metric -> the cell's mean, std, n and interval, its baseline's, and its Δ tested."""
    return {metric: {**interval_json(cell.measured(metric)),
                     "baseline": interval_json(cell.baseline.metrics[metric]) if cell.baseline else None,
                     **delta_json(cell.test(VS_STUDENT, metric))} for metric in metrics}


def _versus_json(each: Versus) -> dict:
    metric = each.test.metric
    return {"metric": metric, "cell": tables.setting(each.cell), "against": tables.setting(each.other),
            "location": each.location, "chosen_from": [tables.setting(c) for c in each.chosen_from],
            "cell_measured": interval_json(each.cell.measured(metric)),
            "against_measured": interval_json(each.other.measured(metric)), **delta_json(each.test)}


def comparisons_json(found: Statistics) -> dict:
    """The families Holm ran over (per metric) and every method-against-method comparison."""
    return {
        "metrics": list(found.metrics),
        "holm_families": [{"name": f.name, "metric": f.metric, "tested": f.tested} for f in found.families],
        "channel_wise_vs_spatial": [_versus_json(e) for e in found.versus if e.test.family == CW_VS_SPATIAL],
        "best_spatial": "the spatial cell with the highest mean on the metric at the location, chosen after the "
                        "fact (which favours the spatial side)",
        "named": [_versus_json(e) for e in found.versus if e.test.family == NAMED],
    }
