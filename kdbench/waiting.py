"""What a later stage waits for (kdbench.stages): its own module, so that the modules a stage uses
can say it without importing the pipeline that imports them."""

from __future__ import annotations

from dataclasses import dataclass

from kdbench.vocab import Stage


@dataclass(frozen=True)
class Waiting:
    """Runs that cannot be planned yet: what they are made of depends on the results of runs
    still to complete (a tune stage's choice, the cost of the distilled cells). Each time the
    study's stages are planned (kdbench.stages.reload), those whose ``needs`` are complete plan them."""

    stage: Stage                    # the stage its runs will have
    needs: tuple[str, ...]          # the run ids whose results decide them
    why: str                        # one line for plan and launch: what they are and what they wait for
