"""FitNets / L2 feature mimicking (Romero et al., ICLR 2015, https://arxiv.org/abs/1412.6550).

The student's feature map, brought to the teacher's channel count by a 1x1 convolution, is
regressed onto the teacher's with a plain mean squared error::

    loss = loss_weight * mean_{n,c,h,w} (F_S - F_T)**2

The adapter (``kdbench.losses.adapters.ChannelAdapter``) is NOT part of this module: it owns
parameters that train with the student, so the caller builds it, puts it in the student's
optimizer, applies it and passes the adapted map here (``align`` handles a spatial resize).
This mirrors CIRKD's ``CriterionFitNet`` (conv1x1 + MSE, weight 10) with the conv moved out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.losses.common import check_same_shape, compute_dtype
from kdbench.losses.params import FitNetsParams
from kdbench.losses.registry import register


def l2_mimic(preds_S: Tensor, preds_T: Tensor) -> Tensor:
    """The unweighted FitNets loss of two equal-shape (N, C, H, W) maps."""
    check_same_shape("fitnets", preds_S, preds_T)
    dtype = compute_dtype(preds_S)
    with torch.autocast(device_type=preds_S.device.type, enabled=False):
        return F.mse_loss(preds_S.to(dtype), preds_T.detach().to(dtype), reduction="mean")


@register("fitnets", FitNetsParams)
class FitNets(nn.Module):
    """L2 mimicking of an (already adapted) student feature map.

    Args:
        loss_weight: factor the loss is multiplied by (CIRKD: 10).

    Shapes:
        preds_S: (N, C, H, W), the student map after the caller's ChannelAdapter;
        preds_T: (N, C, H, W), the teacher map. Returns a scalar.
    """


    def __init__(self, loss_weight: float = 10.0):
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        return l2_mimic(preds_S, preds_T) * self.loss_weight

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}"
