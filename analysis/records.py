"""The statistics of one report as typed records, computed once per report
(analysis.summary.summarise) and read by every table, figure, sentence and file of it: the HTML
and markdown report, ``kdbench report --json``, ``metafile.yml`` and ``results.tsv``.

Plain frozen dataclasses, no frames: a field is an attribute, and a metric, state, cost, recipe
field or comparison a record does not hold is a KeyError (a typo never reads as a missing number).
A number that could not be computed (no complete run, a single run, no baseline) is NaN; a cost
that no run of the study recorded is None.

What a later report section adds goes beside what is here: a statistic per metric is one more
``Delta`` (each names its ``family`` and ``metric``) and one more ``Family``; a new comparison (a
method against another) is a new family name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from analysis.stats import Interval

NOTHING = Interval(math.nan, math.nan, 0, math.nan, math.nan)  # no complete run (or no such group)

# The comparison families Holm's correction runs over, each apart (one per metric).
VS_STUDENT = "vs student baseline"            # each cell against its student baseline
VS_EQUAL_BUDGET = "vs equal-budget student"   # each cell against the student trained as long
TWIN_VS_STUDENT = "equal-budget student vs student baseline"  # each equal-budget student against its baseline
CW_VS_SPATIAL = "channel-wise vs best spatial"  # each channel-wise cell against the best spatial one at its location
NAMED = "named comparisons"                    # the pairs a study lists in compare: (analysis.comparisons)


@dataclass(frozen=True)
class RunFacts:
    """What the runs of a group were, from the first run that says (analysis.collect's columns)."""

    dataset: str | None
    teacher_config: str | None
    student_config: str | None
    location: str | None        # the distillation terms' student locations, "; "-joined
    location_kind: str | None   # feature, logits or feature + logits
    kd_method: str | None       # the terms' methods, "; "-joined
    distils: str | None         # channel-wise, spatial or both, as the losses declare it

    @property
    def term_methods(self) -> list[str]:
        """The ``method`` of each distillation term (``["cwd", "cwd"]`` for CWD on two places)."""
        return self.kd_method.split("; ") if self.kd_method else []


@dataclass(frozen=True)
class Group:
    """Runs averaged together: a teacher, a student baseline, an equal-budget student, or a cell.

    ``states``: complete and every problem state -> runs; ``metrics``: each of the report's metrics
    over the complete runs with a finite value (``seeds``: those values by seed, for the paired
    test); ``costs``: each cost key -> its mean, std and n over the complete runs, None where no run
    of the study recorded it; ``recipe``: each recipe field of the first complete run that recorded
    one (None where none did)."""

    kind: str
    run_names: tuple[str, ...]
    planned: int
    states: Mapping[str, int]
    collapsed: int       # complete runs that predict one class everywhere (analysis.aggregate.collapsed)
    partial_data: int    # complete runs on a partial dataset split
    metrics: Mapping[str, Interval]
    seeds: Mapping[str, Mapping[object, float]]
    costs: Mapping[str, Interval | None]
    memory_kind: str | None
    recipe: Mapping[str, object]
    facts: RunFacts

    @property
    def complete(self) -> int:
        return self.states["complete"]


@dataclass(frozen=True)
class Delta:
    """One Δ on one metric against one reference group, tested (analysis.stats: paired by seed or
    Welch) with Holm's correction over its ``family``: the interval, test (``paired``, ``welch``, or
    ``""`` without one), degrees of freedom, p before and after Holm, verdict, the spread the seeds
    needed are computed from, the runs it had (pairs, or the smaller side's runs) and the seeds it
    needs to resolve the Δ."""

    family: str
    metric: str
    delta: float
    low: float
    high: float
    test: str
    df: float
    p: float
    p_holm: float
    verdict: str
    spread: float
    runs: int
    seeds_needed: float


@dataclass(frozen=True)
class GapShare:
    """How far a cell closes its teacher-student gap on ``metric``: the gap (teacher mean - baseline
    mean), the share Δ / gap and its 95% interval; NaN without a gap to close."""

    metric: str
    gap: float
    share: float
    low: float
    high: float


def _found(items: tuple, key, what: str):
    for item in items:
        if key(item):
            return item
    raise KeyError(what)


@dataclass(frozen=True)
class CellRecord:
    """One cell of the grid: its method and axis values (axis path -> value), its runs, the groups
    it is compared with, and its comparisons, slowdown (seconds per iteration over its baseline's)
    and extra cost (training seconds over its baseline's; NaN in a study without equal budgets)."""

    method: str
    axes: Mapping[str, object]
    group: Group
    baseline: Group | None
    teacher: Group | None
    tests: tuple[Delta, ...]
    gaps: tuple[GapShare, ...]
    slowdown: float
    extra_cost: float

    def measured(self, metric: str) -> Interval:
        return self.group.metrics[metric]

    def delta(self, metric: str) -> float:
        """The cell's mean minus its student baseline's (NaN without one)."""
        return self.measured(metric).mean - measured(self.baseline, metric).mean

    def test(self, family: str, metric: str) -> Delta:
        return _found(self.tests, lambda t: (t.family, t.metric) == (family, metric), f"{family}, {metric}")

    def gap(self, metric: str) -> GapShare:
        return _found(self.gaps, lambda g: g.metric == metric, metric)

    @property
    def is_cwd(self) -> bool:
        """Every distillation term of its runs has ``method: cwd`` (whatever the cell is called)."""
        methods = self.group.facts.term_methods
        return bool(methods) and all(m == "cwd" for m in methods)


@dataclass(frozen=True)
class Twin:
    """An equal-budget student baseline (kdbench.budget), over its seeds, against its ordinary one."""

    group: Group
    baseline: Group | None
    extra_cost: float   # its mean training seconds over its baseline's
    test: Delta        # family TWIN_VS_STUDENT


@dataclass(frozen=True)
class Family:
    """A family of comparisons Holm's correction ran over, and how many of them had a test."""

    name: str
    metric: str
    tested: int


@dataclass(frozen=True)
class Versus:
    """One cell against another on one metric (analysis.comparisons): ``test`` is the Δ of ``cell``
    minus ``other`` (its ``family`` CW_VS_SPATIAL or NAMED); ``location`` the student location both
    distil at (CW_VS_SPATIAL) and ``chosen_from`` the spatial cells there that ``other`` was the best
    of by mean, chosen after seeing the results (empty for a named pair)."""

    cell: CellRecord
    other: CellRecord
    location: str | None
    chosen_from: tuple[CellRecord, ...]
    test: Delta


@dataclass(frozen=True)
class Match:
    """A published row (its reference file's columns, as read) and the measured cell it describes."""

    reference: Mapping[str, object]
    cell: CellRecord | None


@dataclass(frozen=True)
class Statistics:
    """Everything a report says about its numbers. ``metrics``: the primary one first; ``axes``:
    the grid axes cells differ by (method and seeds aside); ``families``: the comparison families
    Holm's correction ran over (one per metric); ``recipes``: whether any run recorded a recipe card;
    ``equal_budget``: whether the study asks for equal budgets; ``budgets``: what each equal budget
    was computed from, ``tuning``: the study's tune summary per method, each as its stage recorded
    it (kdbench.stages: ``results/<study>/stages/``) and empty where the study has none."""

    task: str
    metrics: tuple[str, ...]
    axes: tuple[str, ...]
    teachers: tuple[Group, ...]
    baselines: tuple[Group, ...]
    cells: tuple[CellRecord, ...]
    twins: tuple[Twin, ...]
    families: tuple[Family, ...]
    matches: tuple[Match, ...]
    recipes: bool
    equal_budget: bool
    budgets: tuple[dict, ...]
    tuning: tuple[dict, ...]
    per_class: tuple = ()   # analysis.perclass.PerClass per measure; () where no run recorded per-class values
    versus: tuple[Versus, ...] = ()   # method against method (analysis.comparisons), every metric

    @property
    def metric(self) -> str:
        """The primary metric: the one every Δ is tested on."""
        return self.metrics[0]

    def family(self, name: str, metric: str) -> Family:
        return _found(self.families, lambda f: (f.name, f.metric) == (name, metric), f"{name}, {metric}")


def measured(group: Group | None, metric: str) -> Interval:
    """A group's interval on ``metric``; NOTHING where there is no such group."""
    return NOTHING if group is None else group.metrics[metric]
