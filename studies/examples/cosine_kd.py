"""A distillation loss written outside kdbench, as a plugin: a study names this file under
``plugins:`` and uses its method like a built-in one (see docs/studies.md, "Your own losses").

``cosine``: one minus the cosine similarity between the student's and the teacher's channel
vectors at each position, averaged over positions, times ``loss_weight``. It compares directions
only, so it is blind to the scale of either map; ``eps`` keeps an all-zero vector from dividing by
zero.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from kdbench.losses import LossParams, positive, register


@dataclass(frozen=True)
class CosineParams(LossParams):
    """The torch-free declaration: every parameter with its default, and the rules; ``kind`` says
    what the loss compares for the reports: each position's channel vector, every channel alike,
    is ``spatial`` (``channel-wise``: each channel's distribution over positions, as CWD)."""

    eps: float = 1e-8
    kind: ClassVar[str | None] = "spatial"

    def check(self) -> None:
        positive("eps", self.eps)


@register("cosine", CosineParams)
class CosineDistillation(nn.Module):
    """preds_S, preds_T: (N, C, H, W) with equal shapes (an adapter where channels differ)."""

    def __init__(self, eps: float = 1e-8, loss_weight: float = 1.0):
        super().__init__()
        self.eps, self.loss_weight = eps, loss_weight

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        similarity = torch.cosine_similarity(preds_S.float(), preds_T.detach().float(), dim=1, eps=self.eps)
        return (1 - similarity).mean() * self.loss_weight
