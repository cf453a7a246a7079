"""A distillation loss written outside kdbench, as a plugin: a study names this file under
``plugins:`` and uses its method like a built-in one (see docs/studies.md, "Your own losses").

``cosine``: one minus the cosine similarity between the student's and the teacher's channel
vectors at each position, averaged over positions, times ``loss_weight``. It compares directions
only, so it is blind to the scale of either map; ``eps`` keeps an all-zero vector from dividing by
zero.

One decorator registers it: its parameters, their defaults and types are read from ``__init__``
(each needs a default; ``loss_weight`` is the term's weight). Rules beyond the types, such as
``eps > 0``, would go in a ``LossParams`` dataclass passed as ``register("cosine", CosineParams)``.
"""

import torch
from torch import nn

from kdbench.losses import register


@register("cosine")
class CosineDistillation(nn.Module):
    """preds_S, preds_T: (N, C, H, W) with equal shapes (an adapter where channels differ)."""

    # What it compares, for the reports: each position's channel vector, every channel alike, is
    # "spatial" ("channel-wise": each channel's distribution over positions, as CWD).
    kind = "spatial"

    def __init__(self, eps: float = 1e-8, loss_weight: float = 1.0):
        super().__init__()
        self.eps, self.loss_weight = eps, loss_weight

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        similarity = torch.cosine_similarity(preds_S.float(), preds_T.detach().float(), dim=1, eps=self.eps)
        return (1 - similarity).mean() * self.loss_weight
