"""kdbench's words, each defined once: a run's state, a planned run's kind and stage, what a launch
does with a run, and each task's primary metric.

Each is a ``StrEnum``: a member is its string (``State.COMPLETE == "complete"``, JSON writes
``"complete"``), so the files, tables and frames that hold these words read the same as before.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """A run's state. The store's files alone say the first seven (kdbench.store.read_run); the last
    four need the executors' answer about the run's job (kdbench.states)."""

    COMPLETE = "complete"           # final.json with metrics
    FAILED = "failed"               # error.json: the run raised
    DIVERGED = "diverged"           # error.json: a loss or metric became NaN or Inf
    KD_INACTIVE = "kd_inactive"     # error.json: a distill term did nothing over its first steps
    CORRUPT = "corrupt"             # final.json or error.json unreadable
    STARTED = "started"             # spec.json, no result yet
    MISSING = "missing"             # never started
    PENDING = "pending"             # its job waits in the scheduler's queue (held, on a dependency, ...)
    RUNNING = "running"             # its job holds an allocation: running, or completing
    INTERRUPTED = "interrupted"     # started, no live job, no result: a relaunch resumes it
    BLOCKED = "blocked"             # its teacher failed (or failed its teacher gate): it cannot run


# The states an error.json records.
ERROR_STATES = (State.FAILED, State.DIVERGED, State.KD_INACTIVE)
# A run in one of these stays in it until a relaunch retries it: it has ended.
ENDED = (State.COMPLETE, *ERROR_STATES)
FINISHED = (*ENDED, State.CORRUPT)
# A teacher in one of these never gives its students a checkpoint.
NOT_COMPLETED = (*ERROR_STATES, State.CORRUPT, State.BLOCKED)
# Every state but complete a report counts, in the order it lists them.
NOT_COMPLETE = (*NOT_COMPLETED, State.INTERRUPTED, State.RUNNING, State.PENDING, State.MISSING)


class Kind(StrEnum):
    """What a planned run is in the comparison."""

    CELL = "cell"                           # a distilled run of one cell and seed
    STUDENT_BASELINE = "student_baseline"   # the cell's student trained alone
    TEACHER = "teacher"                     # the teacher a cell needs, trained or evaluated
    TUNE = "tune"                           # one setting of a tuned method, scored on held-out data
    STUDENT_BUDGET = "student_budget"       # a student baseline trained as long as its slowest cell


class Stage(StrEnum):
    """The order runs are planned and launched in: a stage's runs may wait on an earlier one's."""

    TEACHER = "teacher"
    TUNE = "tune"
    STUDENT = "student"
    BUDGET = "budget"


class Action(StrEnum):
    """What a launch does with a planned run (runners.launch.launcher.decide)."""

    SUBMIT = "submit"
    SKIP_COMPLETE = "skip-complete"
    SKIP_IN_FLIGHT = "skip-in-flight"
    SKIP_FAILED = "skip-failed"
    BLOCKED = "blocked"


# The metric a task's runs are compared, tuned and checked by, as the runs write it.
PRIMARY_METRIC = {"seg": "val/mIoU", "det": "val/bbox_mAP"}


def primary_metric(task: str | None) -> str:
    """The task's primary metric; a task not known yet (no run has written one) is segmentation's."""
    return PRIMARY_METRIC.get(task or "seg", PRIMARY_METRIC["seg"])


# The recipe fields a published row may state, as ``recipe_<field>`` (how the row was trained) and
# ``baseline_recipe_<field>`` (how the student baseline it is compared with was): what the report's
# recipe comparison (analysis.recipes) and fairness audit (analysis.fairness) read. A reference file
# with another recipe column is refused (kdbench.study), so a misspelt field is never silently unread.
REFERENCE_RECIPE_FIELDS = ("epochs", "iterations", "global_batch", "crop", "pipeline", "lr", "teacher_mode",
                           "precision", "teacher", "weight_decay", "val_interval", "select", "student_init",
                           "terms", "grad_clip")
REFERENCE_RECIPE_PREFIXES = ("recipe_", "baseline_recipe_")
