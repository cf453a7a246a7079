"""What a later stage waits for (kdbench.stages.STAGES): its own module, so that a stage's
module can say it without importing the planner that imports the stage."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Waiting:
    """Runs that cannot be planned yet: what they are made of depends on the results of runs
    still to complete (a tune stage's choice, the cost of the distilled cells). Each time the
    study is loaded (``load_study``), the stages whose ``needs`` are complete are planned."""

    stage: str                      # the stage its runs will have
    needs: tuple[str, ...]          # the run ids whose results decide them
    why: str                        # one line for plan and launch: what they are and what they wait for
