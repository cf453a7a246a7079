"""A study's stages, in order: the grid ``expand`` plans from the spec alone, then each stage that
plans from results.

A later stage is one object with one method, ``plan(study)``: it reads the results store and
returns the runs it can plan now, what still waits (a ``Waiting``: the runs whose results decide
the rest) and a record of what it decided, from which runs and why. ``reload`` runs the stages in
``STAGES``' order, each seeing the runs of those before it, and writes each record to
``results/<study>/stages/<stage>.json`` (when the study has a results directory; a record is
rewritten only when a decision changed). The report reads these records (``Study.records``)
rather than deciding again. The stages read the store and never torch: a plan, a status or a
report stays light.

- ``TunedFinals`` (a study's ``tune:``, kdbench.tuning): once every tune run of a method has
  ended, its chosen setting over the study's seeds on the real train/val split.
- ``EqualBudget`` (a study's ``equal_budget:``, kdbench.budget): each student baseline's twin,
  trained as long as the slowest distilled cell of its setting and seed, once those have finished.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from kdbench import budget, roots, store, tuning
from kdbench.expand import MAX_RUNS, PlannedRun, Study, expand, plan_finals
from kdbench.study import load_spec
from kdbench.vocab import ENDED, Stage
from kdbench.waiting import Waiting

RECORDS = "stages"      # results/<study>/stages/<stage>.json


@dataclass(frozen=True)
class Planned:
    """What one stage planned from the results now in the store."""

    runs: tuple[PlannedRun, ...] = ()
    waiting: tuple[Waiting, ...] = ()
    record: dict | None = None      # what it decided, from which runs, why; None: nothing to decide


class TunedFinals:
    """A tuned study's final runs, at the settings its tune runs chose (kdbench.tuning.choose)."""

    name = Stage.TUNE

    def plan(self, study: Study) -> Planned:
        spec = study.spec
        if spec.tune is None:
            return Planned()
        rows = tuning.summary(spec, study.runs, study.directory)
        chosen = {row["method"]: row["chosen"] for row in rows if row["chosen"] is not None}
        known = {p.run_id for p in study.runs}
        runs = tuple(p for p in plan_finals(spec, study.results, chosen) if p.run_id not in known)
        pending = {row["method"]: [t["run_id"] for t in row["tries"] if t["state"] not in ENDED] for row in rows}
        waiting_for = [method for method, ids in pending.items() if ids]
        record = {"stage": self.name, "metric": tuning.metric_of(spec), "methods": rows}
        if not waiting_for:
            return Planned(runs, (), record)
        needs = tuple(i for method in waiting_for for i in pending[method])
        why = (f"the final runs of {', '.join(waiting_for)} (seeds {', '.join(map(str, spec.seeds))}), at the "
               f"settings their tune runs choose: {len(needs)} tune run(s) still to finish")
        return Planned(runs, (Waiting(Stage.STUDENT, needs, why),), record)


class EqualBudget:
    """Each student baseline's equal-budget twin, once its setting's distilled cells have finished."""

    name = Stage.BUDGET

    def plan(self, study: Study) -> Planned:
        spec = study.spec
        if not spec.equal_budget:
            return Planned()
        found = budget.budgets(spec, study.runs, study.directory)
        runs, waiting, taken = [], [], {p.run_id for p in study.runs}
        for each in found:
            if each.iterations is None:
                needs = tuple(p.run_id for p in (*each.cells, each.baseline))
                waiting.append(Waiting(Stage.BUDGET, needs, f"the equal-budget twin of {each.baseline.name} "
                                                            f"({each.mode.replace('_', ' ')}) {each.why}"))
                continue
            twin = budget.budget_run(each)
            if twin.run_id not in taken:   # a budget of exactly the baseline's iterations is the baseline
                taken.add(twin.run_id)
                runs.append(twin)
        record = {"stage": self.name, "mode": spec.equal_budget, "budgets": [budget.as_record(b) for b in found]}
        return Planned(tuple(runs), tuple(waiting), record)


# In order: the tuned study's final runs first, as the equal-budget stage may build on them.
STAGES = (TunedFinals(), EqualBudget())


def reload(study: Study) -> Study:
    """The study with every later stage planned again from its grid and the results now in the
    store (the spec is not read again): stages that were waiting appear once the runs they need are
    complete. Each stage's record is written under ``results/<study>/stages/``."""
    runs, waiting, records = list(study.grid), [], {}
    for stage in STAGES:
        planned = stage.plan(dataclasses.replace(study, runs=tuple(runs)))
        runs += planned.runs
        waiting += planned.waiting
        if planned.record is not None:
            records[stage.name] = planned.record
            _write_record(study.directory, stage.name, planned.record)
    return dataclasses.replace(study, runs=tuple(runs), waiting=tuple(waiting), records=records)


def _write_record(directory: Path, name: str, record: dict) -> None:
    """``record`` as ``<study dir>/stages/<name>.json``, unless the study has no results directory
    yet (nothing was decided from results) or the file already says the same. A results directory
    this process cannot write (a read-only copy being reported on) keeps what it has: the record is
    decided again from the same results each time."""
    if not directory.is_dir():
        return
    path = directory / RECORDS / f"{name}.json"
    if store.read_json(path) == record:
        return
    try:
        path.parent.mkdir(exist_ok=True)
        store.write_json_atomic(path, record)
    except OSError:
        pass


def load_study(path: str | Path, results: str | Path | None = "results", max_runs: int = MAX_RUNS) -> Study:
    """Read and validate a study spec, expand its grid (refused past ``max_runs``, see
    kdbench.expand.count_runs) and plan its later stages from the results under ``results`` (None:
    the study's own root, kdbench.roots.resolve)."""
    spec = load_spec(path)
    results, why = roots.resolve(path, results, spec.results)
    grid = tuple(expand(spec, results, max_runs))
    return reload(Study(spec, grid, Path(results), max_runs=max_runs, grid=grid, root_source=why))

