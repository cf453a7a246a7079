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
from torch.autograd.function import once_differentiable

from kdbench.losses.common import channel_sum, check_same_positions, compute_dtype
from kdbench.losses.params import ATParams
from kdbench.losses.registry import register

_EPS = 1e-12  # F.normalize's: an all-zero attention map stays zero


def _squared_mean(feat: Tensor, dtype: torch.dtype) -> Tensor:
    """mean_c feat**2 as (N, H*W) in ``dtype``, a few channels at a time (no squared map is made)."""
    return channel_sum(feat, torch.square, dtype).div_(feat.shape[1])


class _AttentionTransfer(torch.autograd.Function):
    """mean (a(S) - a(T))**2 with a(x) = normalize(mean_c x**2). The forward keeps the loss's
    gradient in the (N, H*W) attention of S, g; the backward is one pass, d/dS = g * 2 S / C."""

    @staticmethod
    def forward(ctx, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        dtype = compute_dtype(preds_S)
        a_S, a_T = _squared_mean(preds_S, dtype), _squared_mean(preds_T, dtype)
        norm_S = torch.linalg.vector_norm(a_S, 2, dim=1, keepdim=True)
        unit_S = a_S / norm_S.clamp_min(_EPS)
        difference = unit_S - F.normalize(a_T, p=2.0, dim=1, eps=_EPS)
        loss = difference.pow(2).mean()
        if ctx.needs_input_grad[0]:
            # d loss / d unit_S, then through the normalisation (a map below eps is only divided).
            grad_unit = difference.mul_(2.0 / difference.numel())
            radial = (unit_S * grad_unit).sum(dim=1, keepdim=True) * (norm_S >= _EPS)
            ctx.grad_attention = (grad_unit - unit_S * radial) / norm_S.clamp_min(_EPS)
            ctx.save_for_backward(preds_S)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        (preds_S,) = ctx.saved_tensors
        n, c, h, w = preds_S.shape
        scale = ctx.grad_attention * (grad_output * (2.0 / c))
        return (preds_S * scale.view(n, 1, h, w)).to(preds_S.dtype), None


def attention_transfer(preds_S: Tensor, preds_T: Tensor) -> Tensor:
    """The unweighted AT loss; channel counts may differ, N and H x W may not."""
    check_same_positions("at", preds_S, preds_T)
    with torch.autocast(device_type=preds_S.device.type, enabled=False):
        return _AttentionTransfer.apply(preds_S, preds_T.detach())


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
