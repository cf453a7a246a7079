"""Pixel-wise distillation (PI): Hinton-style KD applied independently at every pixel.

Used as the "pixel-wise" baseline of structured knowledge distillation (Liu et al., CVPR 2019,
https://arxiv.org/abs/1903.04197) and of the CWD paper's Table 2; the soft-target idea is from
Hinton et al. (https://arxiv.org/abs/1503.02531).

At each of the N*H*W positions the C score values become a distribution ``softmax_C(z / tau)``
and the student is pulled towards the teacher with ``KL(p_T || p_S)``; the loss is the mean over
positions times ``tau**2``::

    loss = loss_weight * tau**2 / (N*H*W) * sum_{n,h,w} sum_c p_T * (log p_T - log p_S)

``reduction`` changes only the divisor of that sum: ``pixelmean`` (the default above) N*H*W, and
torch ``kl_div``'s reductions as MMRazor's ``KLDivergence`` (open-mmlab/mmrazor,
mmrazor/models/losses/kl_divergence.py @90c7af1) applies them to the whole (N, C, H, W) map:
``batchmean`` N (H*W times pixelmean), ``sum`` 1, ``mean`` N*C*H*W (pixelmean / C).

Both log-probabilities come from ``log_softmax`` (finite for any input magnitude). The teacher
entropy term is included, so the loss is a true KL and is exactly 0 when student == teacher (the
SKD code uses the cross-entropy instead, which has the same gradient but a non-zero floor; it
also divides by H*W only, not by N).
"""

from __future__ import annotations

from torch import Tensor, nn

from kdbench.losses.common import check_same_shape
from kdbench.losses.params import PIParams
from kdbench.losses.registry import register
from kdbench.losses.softmax_divergence import softmax_divergence


def _divisor(reduction: str, n: int, c: int, h: int, w: int) -> int:
    """What the summed KL of an (N, C, H, W) map is divided by (kdbench.losses.params.PI_REDUCTIONS)."""
    return {"pixelmean": n * h * w, "batchmean": n, "sum": 1, "mean": n * c * h * w}[reduction]


def pixel_wise_divergence(preds_S: Tensor, preds_T: Tensor, tau: float = 1.0,
                          reduction: str = "pixelmean") -> Tensor:
    """The unweighted PI loss of two (N, C, H, W) score maps; no gradient reaches preds_T. The
    distributions over the classes at every position are worked through in cache-sized blocks
    (kdbench.losses.softmax_divergence)."""
    check_same_shape("pi", preds_S, preds_T)
    n, c, h, w = preds_S.shape
    scale = 1.0 / _divisor(reduction, n, c, h, w)
    return softmax_divergence(preds_S.reshape(n, c, -1), preds_T.reshape(n, c, -1), "kl", tau, scale)


@register("pi", PIParams)
class PixelWiseDistillation(nn.Module):
    """Pixel-wise KD: KL between per-pixel class distributions, averaged over pixels.

    Args:
        tau: softmax temperature T (SKD and the CWD code use 1).
        loss_weight: factor the loss is multiplied by (SKD's lambda_pi = 10).
        reduction: what the summed KL is divided by: ``pixelmean`` (N*H*W), ``batchmean`` (N),
            ``sum`` (1) or ``mean`` (N*C*H*W); the last three as MMRazor's KLDivergence.

    Shapes:
        preds_S, preds_T: (N, C, H, W) score maps (logits), equal shapes.
        Returns a scalar (float32, or float64 for float64 inputs).
    """


    def __init__(self, tau: float = 1.0, loss_weight: float = 10.0, reduction: str = "pixelmean"):
        super().__init__()
        self.tau, self.loss_weight, self.reduction = float(tau), float(loss_weight), reduction

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        return pixel_wise_divergence(preds_S, preds_T, self.tau, self.reduction) * self.loss_weight

    def extra_repr(self) -> str:
        return f"tau={self.tau}, loss_weight={self.loss_weight}, reduction={self.reduction!r}"
