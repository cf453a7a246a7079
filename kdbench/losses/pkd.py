"""PKD: distillation by the Pearson correlation of each channel (Cao et al., "PKD: General
Distillation Framework for Object Detectors via Pearson Correlation Coefficient", NeurIPS 2022),
as MMRazor computes it: open-mmlab/mmrazor, ``mmrazor/models/losses/pkd_loss.py`` at commit
90c7af1fdf35a606a2fceaaeb4b6be2f0dac4eb7.

Each channel c of an (N, C, H, W) map X is standardised over its M = N*H*W values (the positions
of every image of the batch), with the unbiased standard deviation::

    z_c = (X_c - mean(X_c)) / (std(X_c) + 1e-6),   std(X_c) = sqrt(sum (X_c - mean)^2 / (M - 1))

and the loss is half the mean squared difference of the standardised maps, over all N*C*H*W
values (for unit-variance channels, 1 minus the mean Pearson correlation of the channels)::

    loss = loss_weight * sum (z_S - z_T)^2 / (2 * N*C*H*W)

Where the maps' sizes differ, the student's map is resized bilinearly to the teacher's size
(``resize_stu``, the default), else the teacher's to the student's. Student and teacher need the
same channel count. A sequence of maps (one per FPN level, say) gives the sum of their losses.

The forward and backward are one ``autograd.Function``: the forward keeps one map, the difference
d = z_S - z_T, and the backward turns it into the gradient with respect to the student's map,
``(a / K) * ((d - mean_c d) - a * (sum_c d * (S - mean_c S)) * (S - mean_c S) / ((M - 1) * std_c))``
with a = 1 / (std_c + 1e-6) and K = N*C*H*W, instead of the dozen maps autograd keeps for the
textbook formulation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from kdbench.losses.common import check_same_shape, sum_of_squares
from kdbench.losses.params import PKDParams
from kdbench.losses.registry import register

EPS = 1e-6  # added to each channel's standard deviation, as MMRazor does


def _compute_dtype(x: Tensor) -> torch.dtype:
    # float64 stays float64 (gradcheck); float32/float16/bfloat16 are computed in float32.
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """(1, C, 1, 1) unbiased standard deviation and mean of each channel over (N, H, W): each
    image's channel statistics over its contiguous positions, then combined (Chan et al.'s pairwise
    update), which is faster on a CPU than one reduction over three axes and as accurate."""
    n, c = x.shape[:2]
    per_image_var, per_image_mean = torch.var_mean(x.reshape(n, c, -1), dim=2, correction=0)
    length = x[0, 0].numel()
    mean = per_image_mean.mean(dim=0)
    squares = (per_image_var.sum(dim=0) + (per_image_mean - mean).square().sum(dim=0)) * length
    std = (squares / (n * length - 1)).sqrt()
    return std.reshape(1, c, 1, 1), mean.reshape(1, c, 1, 1)


class _PearsonMSE(torch.autograd.Function):
    """sum (z_S - z_T)^2 / (2 K) of two equal-shaped maps; the gradient reaches preds_S only."""

    @staticmethod
    def forward(ctx, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        dtype = _compute_dtype(preds_S)
        with torch.autocast(device_type=preds_S.device.type, enabled=False):
            s, t = preds_S.to(dtype), preds_T.to(dtype)
            std_S, mean_S = _channel_stats(s)
            std_T, mean_T = _channel_stats(t)
            scale_S, scale_T = 1.0 / (std_S + EPS), 1.0 / (std_T + EPS)
            difference = torch.sub(s, mean_S).mul_(scale_S)
            for n in range(t.shape[0]):  # the teacher's standardised map, an image at a time
                difference[n].sub_(torch.sub(t[n], mean_T[0]).mul_(scale_T[0]))
            loss = sum_of_squares(difference) / (2 * difference.numel())
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(s, difference, mean_S, std_S, scale_S)
            ctx.input_dtype = preds_S.dtype
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        s, difference, mean_S, std_S, scale_S = ctx.saved_tensors
        n, _, h, w = s.shape
        with torch.autocast(device_type=s.device.type, enabled=False):
            grad = torch.sub(s, mean_S)  # the centred student map, then the gradient in place
            covariance = sum((grad[i] * difference[i]).sum(dim=(1, 2)) for i in range(n)).reshape(mean_S.shape)
            grad.mul_(covariance * scale_S * scale_S / ((n * h * w - 1) * std_S).neg_())
            grad.addcmul_(difference, scale_S).sub_(difference.mean(dim=(0, 2, 3), keepdim=True) * scale_S)
            grad.mul_(grad_output.to(grad.dtype) / difference.numel())
        return grad.to(ctx.input_dtype), None


def _resized(preds_S: Tensor, preds_T: Tensor, resize_stu: bool) -> tuple[Tensor, Tensor]:
    """The two maps at one spatial size: the teacher's (``resize_stu``) or the student's."""
    if preds_S.dim() != 4 or preds_T.dim() != 4 or preds_S.shape[2:] == preds_T.shape[2:]:
        return preds_S, preds_T
    if resize_stu:
        return F.interpolate(preds_S, preds_T.shape[2:], mode="bilinear"), preds_T
    return preds_S, F.interpolate(preds_T, preds_S.shape[2:], mode="bilinear")


def pearson_distance(preds_S: Tensor, preds_T: Tensor, resize_stu: bool = True) -> Tensor:
    """The unweighted PKD loss of two (N, C, H, W) maps; no gradient reaches preds_T."""
    preds_S, preds_T = _resized(preds_S, preds_T.detach(), resize_stu)
    check_same_shape("pkd", preds_S, preds_T)
    return _PearsonMSE.apply(preds_S, preds_T)


@register("pkd", PKDParams)
class PKDLoss(nn.Module):
    """PKD between student and teacher maps (or sequences of maps, summed), a drop-in for
    MMRazor's ``PKDLoss``.

    Args:
        loss_weight: the factor the loss is multiplied by (MMRazor's configs: 6 on Faster R-CNN,
            10 on RetinaNet and RepPoints).
        resize_stu: resize the student's map to the teacher's size where they differ (True), or
            the teacher's to the student's (False).
    """

    def __init__(self, loss_weight: float = 1.0, resize_stu: bool = True):
        super().__init__()
        self.loss_weight, self.resize_stu = float(loss_weight), bool(resize_stu)

    def forward(self, preds_S: Tensor | Sequence[Tensor], preds_T: Tensor | Sequence[Tensor]) -> Tensor:
        if isinstance(preds_S, Tensor):
            return pearson_distance(preds_S, preds_T, self.resize_stu) * self.loss_weight
        return sum(pearson_distance(s, t, self.resize_stu) for s, t in zip(preds_S, preds_T)) * self.loss_weight

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}, resize_stu={self.resize_stu}"
