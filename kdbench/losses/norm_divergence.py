"""The paper's ablation family: a normalisation x a divergence (CWD paper, Table 3 / official
``CriterionCWD``; https://arxiv.org/abs/2011.13256).

Normalisations of an (N, C, H, W) map x at temperature T:

- ``channel``: softmax over the H*W positions of each channel (this is CWD);
- ``spatial``: softmax over the C channels at each position (pixel-wise KD);
- ``channel_mean``: the mean of each channel, an (N, C) vector; for KL it is turned into a
  distribution by a softmax over channels;
- ``none``: the raw values; for KL one softmax over all C*H*W values of a sample (a KL needs a
  distribution, and this one imposes neither a channel nor a position structure).

Divergences: ``kl`` = KL(teacher || student) summed, ``mse`` = squared error summed, on the
normalised maps; the temperature applies to KL only (MSE uses T = 1, as the official code does).
Reduction (official): divide by N*C for channel / channel_mean, by N*H*W for spatial / none;
times T**2.

Unlike the official code, ``none`` uses every sample (it used only the first) and KL takes
``log_softmax`` (it took ``log(softmax)``, which underflows to -inf and gives NaN).

The channel KL cell is CWD's own kernel; the other softmax cells (spatial and none KL, channel and
spatial MSE) go through kdbench.losses.softmax_divergence, which works in cache-sized blocks and
keeps one map, the gradient; channel_mean's backward hands its gradient out broadcast.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdbench.losses.common import check_same_shape, compute_dtype
from kdbench.losses.cwd import channel_wise_divergence
from kdbench.losses.params import NormDivergenceParams
from kdbench.losses.registry import register
from kdbench.losses.softmax_divergence import softmax_divergence


def _kl_rows(logits_S: Tensor, logits_T: Tensor, dim: int) -> Tensor:
    """sum KL(softmax(logits_T) || softmax(logits_S)) along ``dim``, summed over everything."""
    log_p_T = torch.log_softmax(logits_T, dim=dim)
    log_p_S = torch.log_softmax(logits_S, dim=dim)
    return (log_p_T.exp() * (log_p_T - log_p_S)).sum()


class _PositionMean(torch.autograd.Function):
    """(N, C, H, W) -> (N, C): the mean of each channel. Its backward hands the gradient out
    broadcast over the positions (an expanded view), where autograd's mean writes a full map."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.shape = x.shape
        return x.mean(dim=(2, 3))

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        n, c, h, w = ctx.shape
        return (grad / (h * w))[:, :, None, None].expand(ctx.shape)


def _normalise(x: Tensor, norm: str) -> Tensor:
    """The map of ``x`` the MSE compares under ``norm`` (channel_mean or none)."""
    return _PositionMean.apply(x) if norm == "channel_mean" else x


def _blocked_view(x: Tensor, norm: str) -> Tensor:
    """The (outer, L, inner) view whose softmax over L is ``norm``'s distribution (channel,
    spatial and, for KL, none), for kdbench.losses.softmax_divergence."""
    n, c = x.shape[:2]
    if norm == "channel":
        return x.reshape(n * c, -1, 1)
    if norm == "spatial":
        return x.reshape(n, c, -1)
    return x.reshape(n, -1, 1)


@register("norm_divergence", NormDivergenceParams)
class NormDivergence(nn.Module):
    """One cell of the normalisation x divergence ablation.

    Args:
        norm: one of ``channel``, ``spatial``, ``channel_mean``, ``none``.
        divergence: ``kl`` or ``mse``.
        tau: temperature of the KL softmax (ignored for MSE, as in the official code).
        loss_weight: the factor the loss is multiplied by.

    Shapes: preds_S and preds_T are (N, C, H, W) and equal; returns a scalar.
    """

    def __init__(
        self,
        norm: str = "channel",
        divergence: str = "kl",
        tau: float = 1.0,
        loss_weight: float = 1.0,
    ):
        super().__init__()
        self.norm, self.divergence = norm, divergence
        self.tau = float(tau) if divergence == "kl" else 1.0  # MSE uses T = 1, as the official code
        self.loss_weight = float(loss_weight)

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        check_same_shape(f"norm_divergence({self.norm}, {self.divergence})", preds_S, preds_T)
        n, c, h, w = preds_S.shape
        preds_T = preds_T.detach()
        if self.norm == "channel" and self.divergence == "kl":  # exactly CWD: use its lean kernel
            return channel_wise_divergence(preds_S, preds_T, self.tau) * self.loss_weight
        denominator = n * c if self.norm in ("channel", "channel_mean") else n * h * w
        if self.norm != "channel_mean" and (self.divergence == "kl" or self.norm != "none"):
            view_S, view_T = _blocked_view(preds_S, self.norm), _blocked_view(preds_T, self.norm)
            return softmax_divergence(view_S, view_T, self.divergence, self.tau, 1.0 / denominator) * self.loss_weight
        dtype = compute_dtype(preds_S)
        preds_S, preds_T = preds_S.to(dtype), preds_T.to(dtype)
        tau = self.tau
        if self.divergence == "kl":  # channel_mean: a softmax over the channel means
            mean_S, mean_T = _PositionMean.apply(preds_S), preds_T.mean(dim=(2, 3))
            total = _kl_rows(mean_S / tau, mean_T / tau, dim=1)
        else:
            total = (_normalise(preds_S, self.norm) - _normalise(preds_T, self.norm)).pow(2).sum()
        return total * (tau * tau / denominator) * self.loss_weight

    def extra_repr(self) -> str:
        return f"norm={self.norm}, divergence={self.divergence}, tau={self.tau}, " \
               f"loss_weight={self.loss_weight}"
