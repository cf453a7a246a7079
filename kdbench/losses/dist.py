"""DIST: distillation from a stronger teacher by relations of the class probabilities (Huang et
al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022).

On class scores (N, C, H, W), with y = softmax(z / tau) over the C classes of each position and
r(u, v) the Pearson correlation as the authors compute it,
``<u - mean u, v - mean v> / (|u - mean u| |v - mean v| + 1e-8)``::

    inter = 1 - mean over positions (n, h, w) of r(y_S[n, :, h, w], y_T[n, :, h, w])
    intra = 1 - mean over classes c (and positions) of r(y_S[c], y_T[c]), each class's probabilities
            taken over the axis ``intra`` names
    loss  = loss_weight * tau^2 * (inter_loss_weight * inter + intra_loss_weight * intra)

``intra``:

- ``pixels`` (default): each class over all N*H*W pixels of the batch, the authors' segmentation
  code (hunto/DIST_KD, ``segmentation/losses/dist_kd.py`` at commit
  2418f18b1fedd7c2646a7b1b9a27d5c674c2170b: the map as (N*H*W, C) rows; it applies no temperature,
  which is tau = 1 here);
- ``batch``: each class across the N images at every position, which is what MMRazor's
  ``DISTLoss`` (open-mmlab/mmrazor, ``mmrazor/models/losses/dist_loss.py`` at commit
  90c7af1fdf35a606a2fceaaeb4b6be2f0dac4eb7, written for (N, C) classification logits) computes when
  handed a 4-d map. With one image per batch it correlates single values: r = 0 and intra = 1.

(N, C) logits are taken as maps of one position; both readings then give MMRazor's
classification DIST (and the authors' code's on 2-d input).

The forward and backward are one ``autograd.Function``: the forward works out the gradient with
respect to the student's scores along with the value (for each relation, the derivative of r(u, v)
in u is ``v / D - <u, v> |v| u / (|u| D^2)`` with D = |u| |v| + 1e-8, then the softmax's
Jacobian) and keeps only that map; the backward scales it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from kdbench.losses.common import check_same_shape
from kdbench.losses.params import DISTParams
from kdbench.losses.registry import register

EPS = 1e-8  # the authors' epsilon in the correlation's denominator

# The axes each relation correlates over, per ``intra``: the classes at each position (inter),
# and each class over the batch's pixels or over its images at each position (intra).
INTER_DIMS = (1,)
INTRA_DIMS = {"pixels": (0, 2, 3), "batch": (0,)}


def _compute_dtype(x: Tensor) -> torch.dtype:
    # float64 stays float64 (gradcheck); float32/float16/bfloat16 are computed in float32.
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _relation(y_S: Tensor, y_T: Tensor, dims: tuple[int, ...], weight: float, grad: Tensor | None) -> Tensor:
    """``weight * (1 - mean r)`` of y_S and y_T correlated over ``dims``; with ``grad``, adds this
    term's derivative with respect to y_S to it."""
    if weight == 0:  # a relation switched off costs nothing
        return torch.zeros((), dtype=y_S.dtype, device=y_S.device)
    u = y_S - y_S.mean(dim=dims, keepdim=True)
    v = y_T - y_T.mean(dim=dims, keepdim=True)
    # Sums of squares, not vector_norm: over a class's half-million pixels the CPU's vector_norm
    # is off by about 1e-4 relative in float32, a plain sum by about 1e-7.
    norm_u = torch.mul(u, u).sum(dim=dims, keepdim=True).sqrt_()
    norm_v = torch.mul(v, v).sum(dim=dims, keepdim=True).sqrt_()
    denominator = norm_u * norm_v + EPS
    inner = torch.mul(u, v).sum(dim=dims, keepdim=True)
    correlation = inner / denominator
    if grad is not None:
        # d(-weight * mean r)/du = -weight / R * (v / D - <u, v> |v| u / (|u| D^2)), in u's buffer
        # (where |u| = 0, <u, v> = 0 and the second part is 0).
        rows = correlation.numel()
        u.mul_(inner / norm_u.clamp_min(torch.finfo(u.dtype).tiny) * norm_v / denominator / denominator)
        u.sub_(v.div_(denominator))
        grad.add_(u, alpha=weight / rows)
    return weight * (1 - correlation.mean())


class _DIST(torch.autograd.Function):
    """tau^2 * (w_inter * inter + w_intra * intra) of two score maps; the gradient reaches preds_S only."""

    @staticmethod
    def forward(ctx, preds_S: Tensor, preds_T: Tensor, tau: float, weights: tuple[float, float], intra: str):
        dtype = _compute_dtype(preds_S)
        needs_grad = ctx.needs_input_grad[0]
        with torch.autocast(device_type=preds_S.device.type, enabled=False):
            y_S = torch.softmax(preds_S.to(dtype) / tau, dim=1)
            y_T = torch.softmax(preds_T.to(dtype) / tau, dim=1)
            grad = torch.zeros_like(y_S) if needs_grad else None  # d loss / d y_S, then / d preds_S
            loss = (_relation(y_S, y_T, INTER_DIMS, weights[0], grad)
                    + _relation(y_S, y_T, INTRA_DIMS[intra], weights[1], grad)) * tau * tau
            if grad is not None:  # the softmax's Jacobian: y * (g - <g, y>) / tau, times tau^2
                grad.sub_(torch.mul(grad, y_S).sum(dim=1, keepdim=True)).mul_(y_S).mul_(tau)
                ctx.save_for_backward(grad)  # released as soon as the backward has used it
                ctx.input_dtype = preds_S.dtype
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        (grad,) = ctx.saved_tensors
        return (grad * grad_output.to(grad.dtype)).to(ctx.input_dtype), None, None, None, None


def dist_loss(preds_S: Tensor, preds_T: Tensor, tau: float = 1.0, inter_loss_weight: float = 1.0,
              intra_loss_weight: float = 1.0, intra: str = "pixels") -> Tensor:
    """The unweighted DIST loss of two (N, C, H, W) score maps (or (N, C) logits, taken as maps of
    one position); no gradient reaches preds_T."""
    if preds_S.dim() == 2 and preds_T.dim() == 2:
        preds_S, preds_T = preds_S[:, :, None, None], preds_T[:, :, None, None]
    check_same_shape("dist", preds_S, preds_T)
    if not torch.is_grad_enabled():
        preds_S = preds_S.detach()
    return _DIST.apply(preds_S, preds_T.detach(), float(tau), (float(inter_loss_weight), float(intra_loss_weight)),
                       intra)


@register("dist", DISTParams)
class DISTLoss(nn.Module):
    """DIST on class score maps (the inter- and intra-class relations of their softmax).

    Args:
        tau: softmax temperature (1; the relations are multiplied by tau^2).
        inter_loss_weight, intra_loss_weight: the two relations' weights (1 and 1).
        intra: ``pixels`` (the authors' segmentation code) or ``batch`` (MMRazor's DISTLoss).
        loss_weight: the factor the loss is multiplied by.
    """

    def __init__(self, tau: float = 1.0, inter_loss_weight: float = 1.0, intra_loss_weight: float = 1.0,
                 intra: str = "pixels", loss_weight: float = 1.0):
        super().__init__()
        self.tau, self.loss_weight, self.intra = float(tau), float(loss_weight), intra
        self.inter_loss_weight, self.intra_loss_weight = float(inter_loss_weight), float(intra_loss_weight)

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        return dist_loss(preds_S, preds_T, self.tau, self.inter_loss_weight, self.intra_loss_weight,
                         self.intra) * self.loss_weight

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, inter_loss_weight={self.inter_loss_weight}, "
                f"intra_loss_weight={self.intra_loss_weight}, intra={self.intra!r}, loss_weight={self.loss_weight}")
