"""A distillation loss for the SLURM fault tests (a plugin, as a user's would be): training stops
at a gate that only the test opens, so a test interrupts a job at a point the job cannot pass
by itself, instead of racing it.

``gate``: the mean squared difference between the student's and the teacher's maps (any loss
would do). From iteration ``hold_at`` on (mmengine's count of finished iterations: the iteration
after the checkpoint a run with ``checkpoint_interval: hold_at`` writes), each call first waits
until the file ``release`` exists. As it starts waiting it writes ``<release>.waiting`` holding
its process id: the test's sign that the job is held, and which process holds it. The wait gives
up after ``timeout_s`` with an error, so a test that fails before it opens the gate does not
leave a job on the cluster until its time limit.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kdbench.errors import UserError
from kdbench.losses import LossParams, integer, positive, register


@dataclass(frozen=True)
class GateParams(LossParams):
    release: str = ""
    hold_at: int = 1
    timeout_s: float = 600.0

    def check(self) -> None:
        if not isinstance(self.release, str) or not os.path.isabs(self.release):
            raise UserError(f"release must be an absolute path, got {self.release!r}")
        integer("hold_at", self.hold_at, 1)
        positive("timeout_s", self.timeout_s)


@register("gate", GateParams)
class GateDistillation(nn.Module):
    def __init__(self, release: str, hold_at: int = 1, timeout_s: float = 600.0, loss_weight: float = 1.0):
        super().__init__()
        self.release, self.hold_at, self.timeout_s, self.loss_weight = Path(release), hold_at, timeout_s, loss_weight

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        self._wait_at_the_gate()
        return (preds_S.float() - preds_T.detach().float()).pow(2).mean() * self.loss_weight

    def _wait_at_the_gate(self) -> None:
        from mmengine.logging import MessageHub

        hub = MessageHub.get_current_instance()
        # Only in the training loop: the probe pass at model building has no iteration yet.
        if hub.get_info("loop_stage") != "train" or hub.get_info("iter", 0) < self.hold_at:
            return
        if self.release.exists():
            return
        Path(f"{self.release}.waiting").write_text(f"{os.getpid()}\n")
        deadline = time.monotonic() + self.timeout_s
        while not self.release.exists():  # SLURM's signals are handled here, between sleeps
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gate {self.release} was not opened within {self.timeout_s} s")
            time.sleep(0.1)
