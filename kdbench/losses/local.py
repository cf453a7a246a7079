"""Local similarity distillation (LOCAL), the 8-neighbourhood baseline of the CWD paper's Table 2.

The CWD paper attributes it to Xie et al., "Improving Fast Segmentation With Teacher-student
Learning" (BMVC 2018, https://arxiv.org/abs/1810.08476): a local similarity map built from the
differences between each pixel and its 8 neighbours is transferred from teacher to student.
No public code with a default was found, so this module implements kdbench's own definition
(docs/background.md#the-baselines-published-defaults), which keeps the channel axis and uses
absolute differences::

    D(x)[n, c, i] = sum_{j in N8(i)} |x[n, c, j] - x[n, c, i]|     # (N, C, H, W)
    loss = loss_weight * mean_{n,c,h,w} (D(F_S) - D(F_T))**2

Borders use **replicate padding**: a neighbour outside the image takes the value of the nearest
border pixel, so it adds |x_border - x_i| (0 when that border pixel is i itself) and never the
|x_i| a zero padding would add. Consequence: at a border, in-image neighbours along the edge are
counted twice (e.g. for a top-edge pixel the left and right neighbours appear once in its own
row and once in the replicated row above).

No public default weight exists for this baseline; ``loss_weight = 1.0`` is kdbench's choice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.losses.common import check_same_shape, compute_dtype
from kdbench.losses.params import LocalParams
from kdbench.losses.registry import register

# The 8 neighbour offsets (dy, dx) of a 3x3 window, centre excluded.
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def local_difference_map(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, H, W): sum over the 8 neighbours of |x_j - x_i| (replicate pad)."""
    h, w = x.shape[2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    out = torch.zeros_like(x)
    for dy, dx in _OFFSETS:  # 8 shifted views of the padded map; no loop over pixels
        neighbour = padded[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        out = out + (neighbour - x).abs()
    return out


def local_similarity(preds_S: Tensor, preds_T: Tensor) -> Tensor:
    """The unweighted LOCAL loss of two equal-shape (N, C, H, W) maps."""
    check_same_shape("local", preds_S, preds_T)
    dtype = compute_dtype(preds_S)
    with torch.autocast(device_type=preds_S.device.type, enabled=False):
        d_S = local_difference_map(preds_S.to(dtype))
        with torch.no_grad():
            d_T = local_difference_map(preds_T.detach().to(dtype))
        return F.mse_loss(d_S, d_T, reduction="mean")


@register("local", LocalParams)
class LocalSimilarity(nn.Module):
    """MSE between the student's and teacher's 8-neighbourhood absolute-difference maps.

    Args:
        loss_weight: factor the loss is multiplied by (no public default; kdbench uses 1.0).

    Shapes:
        preds_S, preds_T: (N, C, H, W), equal shapes. Returns a scalar.
    """


    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        return local_similarity(preds_S, preds_T) * self.loss_weight

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}"
