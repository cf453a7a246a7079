"""Attention transfer (AT; Zagoruyko & Komodakis, ICLR 2017, https://arxiv.org/abs/1612.03928).

A feature map becomes a spatial attention map, the channel mean of its squared activations,
flattened to (N, H*W) and L2-normalised over the positions of each sample; the loss is the mean
squared difference of the two attention maps::

    a(F)  = normalize_{h,w}( mean_c F[:, c]**2 )            # (N, H*W), ||a[n]||_2 = 1
    loss  = loss_weight * mean_{n,p} (a(F_S)[n, p] - a(F_T)[n, p])**2

This is CIRKD's ``CriterionAT`` (p = 2), whose default weight is 1e4. Only the batch size and the
spatial size must agree: the channel mean removes the channel axis, so AT needs no adapter.
A map whose attention is all zero stays zero after normalisation (eps 1e-12), not NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.losses.common import check_same_positions
from kdbench.losses.params import ATParams
from kdbench.losses.registry import register


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def attention_map(feat: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, H*W): channel mean of feat**2, L2-normalised over positions."""
    att = feat.pow(2).mean(dim=1).flatten(1)
    return F.normalize(att, p=2.0, dim=1)


def attention_transfer(preds_S: Tensor, preds_T: Tensor) -> Tensor:
    """The unweighted AT loss; channel counts may differ, N and H x W may not."""
    check_same_positions("at", preds_S, preds_T)
    dtype = _compute_dtype(preds_S)
    with torch.autocast(device_type=preds_S.device.type, enabled=False):
        a_S = attention_map(preds_S.to(dtype))
        a_T = attention_map(preds_T.detach().to(dtype))
        return (a_S - a_T).pow(2).mean()


@register("at", ATParams)
class AttentionTransfer(nn.Module):
    """Attention transfer between spatial attention maps of two feature maps.

    Args:
        loss_weight: factor the loss is multiplied by (CIRKD: 1e4; the maps are unit vectors
            over H*W positions, so the raw loss is tiny, of order 1 / (H*W)).

    Shapes:
        preds_S: (N, C_S, H, W); preds_T: (N, C_T, H, W). Returns a scalar.
    """


    def __init__(self, loss_weight: float = 1e4):
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        return attention_transfer(preds_S, preds_T) * self.loss_weight

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}"
