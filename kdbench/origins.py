"""Where each value of a planned run comes from, for ``kdbench plan STUDY --show RUN``.

A run is the study's ``base`` (itself merged over a ``defaults:`` file), with a cell's axis values
set, its method's distill terms, the planner's own choices (names, seeds, a teacher run's
checkpoint and schedule) and the run schema's built-in defaults for everything else. ``show``
gives every leaf of the resolved run with one of these origins:

- ``axis <key path>``: a grid or zip axis (``grid.schedule.lr``, ``zip[0].teacher.config``);
- ``methods.<name> in <file>``: the method's term as written;
- ``teacher_run.<key> in <file>``: a teacher run's own schedule or seed;
- ``base.<key> in <file>``: the study's base, or the defaults file it is merged over;
- ``planner: ...``: what the planner sets (the run's name, seed, role, revision, a teacher's
  checkpoint from its teacher run, a checkpoint evaluated without training);
- ``built-in default``: the run schema's default (studies/README.md).

Where the study's ``provenance:`` cites the spec key a value comes from (or a section above it),
the value also carries that ``source``.
"""

from __future__ import annotations

from pathlib import Path

from kdbench.errors import UserError
from kdbench.expand import PlannedRun, Study
from kdbench.spec import SCHEDULE_KEYS
from kdbench.study import STUDENT, TERM_PREFIX
from kdbench.vocab import Kind


def find_run(study: Study, key: str) -> PlannedRun:
    """The planned run named ``key``, or whose id is ``key`` (or starts with it, when only one does)."""
    for planned in study.runs:
        if key in (planned.name, planned.run_id):
            return planned
    starts = [p for p in study.runs if p.run_id.startswith(key)] if len(key) >= 4 else []
    if len(starts) == 1:
        return starts[0]
    import difflib

    close = difflib.get_close_matches(key, [p.name for p in study.runs], n=3, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else f"; its runs start with {study.runs[0].name}"
    raise UserError(f"--show: {key!r} is neither the name nor the id of a run of {study.path}{hint}")


def _leaves(value, prefix: str = "") -> dict:
    """Dotted path -> value for every leaf (a list of terms is indexed: ``distill.0.weight``)."""
    if isinstance(value, dict) and value:
        out = {}
        for key, item in value.items():
            out.update(_leaves(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for index, item in enumerate(value):
            out.update(_leaves(item, f"{prefix}.{index}"))
        return out
    return {prefix: value}


def _has(data, path: str) -> bool:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def _covers(key: str, path: str) -> bool:
    """Whether a key path set in a spec (``schedule`` or ``schedule.lr``) holds the leaf ``path``."""
    return path == key or path.startswith(key + ".")


class _Files:
    """Which file a spec section comes from: the study's own, or its defaults file."""

    def __init__(self, study: Study):
        from kdbench.reading import read_spec_text, read_yaml

        self.study = study
        self.own = read_yaml(read_spec_text(study.path, "the study"), str(study.path)) or {}
        self.defaults = str(self.own.get("defaults") or "")

    def of(self, spec_path: str) -> str:
        name = Path(self.study.path).name
        return name if _has(self.own, spec_path) or not self.defaults else f"defaults file {self.defaults}"


def _axis(study: Study, planned: PlannedRun, path: str) -> str | None:
    for group in study.spec.axes_of(planned.params.get("method")):
        for axis in group:
            if axis.path == "method":
                continue
            own = axis.path in planned.params or (planned.kind == Kind.TEACHER and axis.path.startswith("dataset"))
            if not own:
                continue
            if axis.path.startswith(TERM_PREFIX):
                parts = path.split(".")
                if len(parts) > 2 and parts[0] == "distill" and _covers(axis.path[len(TERM_PREFIX):],
                                                                         ".".join(parts[2:])):
                    return f"axis {axis.where}"
            elif _covers(axis.path, path):
                return f"axis {axis.where}"
    return None


def _tuned(study: Study, planned: PlannedRun, path: str) -> str | None:
    """In a tuned study (``tune:``): a tune run's held-out split and tune axis values, and the
    setting a final run trains at, which its tune runs chose."""
    tune = study.spec.tune
    if tune is None:
        return None
    if path.startswith("dataset.holdout."):
        return f"tune.{'holdout' if path.endswith('fraction') else 'seed'} (the tune stage's held-out split)"
    method = planned.params.get("method") or STUDENT
    for axis in tune.axes.get(method, ()) if planned.kind != Kind.TEACHER else ():
        key = axis.path[len(TERM_PREFIX):] if axis.path.startswith(TERM_PREFIX) else axis.path
        parts = path.split(".")
        leaf = ".".join(parts[2:]) if axis.path.startswith(TERM_PREFIX) and parts[0] == "distill" else path
        if not _covers(key, leaf):
            continue
        if planned.kind == Kind.TUNE:
            return f"axis {axis.where}"
        return f"tune: chosen among {axis.where} by the tune runs' held-out score"
    return None


def _planner(study: Study, planned: PlannedRun, path: str) -> str | None:
    if path == "name":
        return "planner: named after the axes that vary and the seed"
    if path.startswith("tracking."):
        return "planner: the study's loggers and name, the run's axis values"
    if path == "revision":
        return "planner: the study's revision"
    if path == "role":
        return "planner: the run's kind"
    if path == "seed":
        return "teacher_run.seed" if planned.kind == Kind.TEACHER else "planner: one of the study's seeds"
    if path.startswith("teacher.checkpoint.run") and planned.depends_on:
        return f"planner: the teacher run {planned.depends_on[0]}"
    if planned.kind == Kind.TEACHER and path == "schedule.iterations" and planned.run.teacher.checkpoint is not None:
        return "planner: a teacher given by checkpoint is evaluated, not trained"
    if planned.kind == Kind.STUDENT_BUDGET and path == "schedule.iterations":
        return f"planner: equal_budget ({study.spec.equal_budget}): the slowest distilled cell's training time"
    return None


def origin(study: Study, planned: PlannedRun, path: str, files: _Files) -> str:
    """Where the leaf ``path`` of a planned run comes from (see the module's docstring)."""
    found = _planner(study, planned, path) or _tuned(study, planned, path) or _axis(study, planned, path)
    if found:
        return found
    if planned.kind == Kind.TEACHER and path.startswith("schedule."):
        key = path.split(".")[1]
        if key in study.spec.teacher_schedule:
            return f"teacher_run.schedule.{key} in {files.of(f'teacher_run.schedule.{key}')}"
    if path.startswith("distill.") and planned.kind in (Kind.CELL, Kind.TUNE):
        method = planned.params.get("method")
        index, rest = path.split(".")[1], ".".join(path.split(".")[2:])
        terms = study.spec.methods.get(method, ())
        term = terms[int(index)] if int(index) < len(terms) else {}
        if _has(term, rest) or rest.split(".")[0] in term:
            return f"methods.{method} in {files.of(f'methods.{method}')}"
        return {"name": "built-in default: its method and student location",
                "teacher_location": "built-in default: the student location"}.get(rest, "built-in default")
    key = next((k for k in _leaves(study.spec.base) if _covers(k, path) or _covers(path, k)), None)
    if key is not None:
        return f"base.{key} in {files.of(f'base.{key}')}"
    return "built-in default"


def _source(study: Study, found: str) -> str | None:
    """The citation (the study's ``provenance:``) of the spec key an origin names, or of a section
    above it: ``base.schedule.lr in x.yaml`` -> provenance[``base.schedule.lr``]."""
    key = found.removeprefix("axis ").split(" in ")[0]
    provenance = study.spec.raw.get("provenance") or {}
    while key:
        if key in provenance:
            return provenance[key]
        key = key.rpartition(".")[0]
    return None


def show(study: Study, planned: PlannedRun) -> dict:
    """A planned run as JSON: its id, name, kind, stage, dependencies, and every value of the
    resolved run with where it comes from and, where the study cites one, its source."""
    files = _Files(study)
    values = {}
    data = planned.run.to_dict()
    schedule = planned.run.schedule  # every schedule field and the pipeline, at their defaults too (to_dict
    #                                  leaves the later ones out)
    data["schedule"] = {**{key: getattr(schedule, key) for key in SCHEDULE_KEYS}, **data["schedule"]}
    data["dataset"].setdefault("pipeline", planned.run.dataset.pipeline)
    for path, value in _leaves(data).items():
        found = origin(study, planned, path, files)
        source = _source(study, found)
        values[path] = {"value": value, "from": found, **({"source": source} if source else {})}
    return {"run_id": planned.run_id, "name": planned.name, "kind": planned.kind, "stage": planned.stage,
            "depends_on": list(planned.depends_on), "values": values}
