"""A report's statistics, built once: ``summarise(study, frame)`` is the one call that aggregates a
study's rows (analysis.collect) into the typed records of analysis.records. The report's tables,
figures and sentences, ``kdbench report --json``, ``metafile.yml`` and ``results.tsv`` all read
what it returns."""

from __future__ import annotations

import pandas as pd

from analysis import aggregate, comparisons, perclass, references
from analysis.budgets import study_budgets
from analysis.collect import RECIPE, axis_path
from analysis.records import Statistics
from kdbench.expand import Study
from kdbench.vocab import Stage


def summarise(study: Study, frame: pd.DataFrame) -> Statistics:
    """The statistics of ``study``'s report from its rows (analysis.collect)."""
    metrics, teachers, baselines, twins, cells = aggregate.groups_of(frame)
    versus, compared = comparisons.versus(cells, metrics, study.spec.compare)
    published = references.read_references(study.path, study.spec.references)
    classes = perclass.results(frame, aggregate.task_of(frame), metrics[0], tuple(teachers.values()),
                               tuple(baselines.values()), tuple(cells))
    return Statistics(
        task=aggregate.task_of(frame), metrics=tuple(metrics),
        axes=tuple(axis_path(column) for column in aggregate.axes_of(frame)[1:]),
        teachers=tuple(teachers.values()), baselines=tuple(baselines.values()), cells=tuple(cells),
        twins=tuple(twins.values()),
        families=(*aggregate.families(metrics, cells, list(twins.values())), *compared),
        matches=tuple(references.match_references(published, cells, study.spec.methods, aggregate.task_of(frame))),
        recipes=any(c.startswith(RECIPE) for c in frame.columns), equal_budget=bool(study.spec.equal_budget),
        budgets=tuple(study_budgets(study)) if study.spec.equal_budget else (),
        tuning=tuple((study.records.get(Stage.TUNE) or {}).get("methods", [])), per_class=classes,
        versus=tuple(versus))
