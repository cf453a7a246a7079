"""The report's Tuning section, for a study with a ``tune:`` block (kdbench.tuning): every tune
run's setting and held-out score, each method's choice, and the budget each method was given
(tune runs, iterations and the seconds they took, from final.json ``cost``), as the tune stage
recorded its decisions (kdbench.stages.TunedFinals: ``results/<study>/stages/tune.json``)."""

from __future__ import annotations

from analysis import format as fmt
from analysis.tables import Cell, Table
from kdbench.expand import Study
from kdbench.study import STUDENT


def _who(method: str) -> str:
    return "student baseline" if method == STUDENT else method


def _setting(setting: dict) -> str:
    return ", ".join(f"{fmt.axis_label(k)} = {fmt.value(v)}" for k, v in setting.items()) or "(the study's own)"


def tuning_tables(study: Study, rows: list[dict]) -> list[Table]:
    """Two tables: every tune run (setting, held-out score, state, chosen or not), and the choice
    and budget per method, from ``rows`` (kdbench.tuning.summary, in the report's statistics).
    Empty for a study without ``tune:``."""
    if not rows:
        return []
    tune = study.spec.tune
    metric = fmt.metric_label(rows[0]["metric"])
    tries = Table("tuning", "Tuning: every setting tried", ["method", "setting", f"held-out {metric}", "state",
                                                           "chosen"])
    for row in rows:
        for entry in row["tries"]:
            chosen = row["chosen_run"] == entry["name"]
            tries.rows.append([Cell(_who(row["method"])), Cell(_setting(entry["setting"])),
                               Cell(fmt.number(entry["score"]), best=chosen), Cell(entry["state"]),
                               Cell("chosen" if chosen else "never: no held-out score" if entry["name"] in
                                    row["never_chosen"] else "")])
    tries.caption = (f"Each method, and the student baseline at its own settings, trained at every setting of its "
                     f"tune axes on the training set less a held-out {fmt.percent(tune.holdout)} of it "
                     f"(drawn by seed {tune.seed}), one run each (seed {study.spec.seeds[0]}), and was evaluated on "
                     f"that held-out share, never on val. The highest held-out {metric} is chosen; on a tie the "
                     "setting listed first; a failed or diverged run is never chosen. The final runs train the "
                     "chosen settings over the study's seeds on train and are evaluated on val.")
    budget = Table("tuning-budget", "Tuning: choice and budget per method",
                   ["method", "chosen", "tune runs", "iterations", "seconds", "never chosen"])
    for row in rows:
        chosen = _setting(row["chosen"]) if row["chosen"] is not None else row["status"]
        spent = row["budget"]
        budget.rows.append([Cell(_who(row["method"])), Cell(chosen), Cell(fmt.integer(spent["runs"])),
                            Cell(fmt.integer(spent["iterations"])), Cell(fmt.number(spent["seconds"], 1)),
                            Cell(", ".join(row["never_chosen"]) or "none")])
    budget.caption = ("Every method gets the same number of tune runs (the study refuses otherwise). Seconds: the "
                      "wall time of the tune runs' last attempts (final.json cost); "
                      f"{fmt.MISSING} while one has not ended.")
    return [tries, budget]
