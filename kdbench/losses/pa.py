"""Pair-wise affinity distillation (PA) from structured knowledge distillation (SKD; Liu et al.,
CVPR 2019, https://arxiv.org/abs/1903.04197).

Both feature maps are max-pooled to a coarser grid of "nodes", each node's C-vector is
L2-normalised, and the node-to-node cosine affinity ``S = F^T F`` (HW x HW per sample) of the
student is regressed onto the teacher's::

    k        = round(1 / pool_scale)                 # kernel = stride, ceil_mode=True
    F'       = normalize_c(maxpool_k(F))             # (N, C, H', W'), H' = ceil(H / k)
    S[n]     = F'[n]^T F'[n]                         # (H'W', H'W')
    loss     = loss_weight * sum_{n,i,j} (S_T[n,i,j] - S_S[n,i,j])**2 / (H'W')**2 / N

``pool_scale = 0.5`` pools with a 2x2 kernel (H' = ceil(H / 2)), which is what CIRKD's
``CriterionStructuralKD`` does. Note that the SKD repository's own criterion instead uses a
kernel of ``int(H * pool_scale)`` (for 0.5: a 2x2 grid of nodes in total). Unlike SKD, the
normalising norm here is not detached, so its gradient is exact (as in CIRKD).

Affinities are HW x HW, so the channel counts of student and teacher may differ; batch and
spatial sizes must agree. With few channels against the nodes (score maps) the distance is taken
through C x C products and no HW x HW matrix is formed; otherwise one forward forms the difference
a block of rows at a time and keeps the gradient (``affinity_distance``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from kdbench.losses.common import check_same_positions, compute_dtype
from kdbench.losses.params import PAParams
from kdbench.losses.registry import register

_EPS = 1e-12  # a node whose vector is all zero stays zero
_BLOCK = 1 << 22  # elements of a block of affinity rows (16 MiB in float32): products large enough to be fast


def nodes(feat: Tensor, kernel: int) -> Tensor:
    """(N, C, H, W) -> (N, C, H'W'): the max-pooled nodes, each a unit C-vector (divided by its
    norm as written, which is more precise in float32 than F.normalize's backward)."""
    if kernel > 1:
        feat = F.max_pool2d(feat, kernel_size=kernel, stride=kernel, ceil_mode=True)
    feat = feat.flatten(2)
    return feat / feat.pow(2).sum(dim=1, keepdim=True).sqrt().clamp_min(_EPS)


def _gram_squares(a: Tensor, b: Tensor) -> Tensor:
    """||a b^T||_F**2 summed over the batch, for (N, C_a, P) and (N, C_b, P), in float64."""
    return torch.bmm(a, b.transpose(1, 2)).pow(2).sum(dtype=torch.float64)


def _distance_and_gradient(nodes_S: Tensor, nodes_T: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
    """sum_n ||S_T[n] - S_S[n]||_F**2 (float64) and its gradient in nodes_S, -4 F_S D (D = S_T - S_S is
    symmetric), or None; D is formed a block of rows at a time, D_B = S_T[B] - S_S[B]."""
    n, _, positions = nodes_S.shape
    rows = max(1, _BLOCK // max(n * positions, 1))
    total = torch.zeros((), dtype=torch.float64, device=nodes_S.device)
    grad = torch.empty_like(nodes_S) if with_grad else None
    for start in range(0, positions, rows):
        block = slice(start, start + rows)
        difference = torch.bmm(nodes_T[:, :, block].transpose(1, 2), nodes_T)
        difference.baddbmm_(nodes_S[:, :, block].transpose(1, 2), nodes_S, alpha=-1.0)
        total += difference.pow(2).sum(dtype=torch.float64)
        if grad is not None:
            grad[:, :, block] = torch.bmm(nodes_S, difference.transpose(1, 2))
    return total, None if grad is None else grad.mul_(-4.0)


class _AffinityDistance(torch.autograd.Function):
    """sum_n ||S_T[n] - S_S[n]||_F**2 of the P x P affinities S = F^T F: three products of
    P x P x C where autograd takes four, and no P x P matrix kept. The forward keeps the
    gradient and the backward scales it; a second backward recomputes it."""

    @staticmethod
    def forward(ctx, nodes_S: Tensor, nodes_T: Tensor) -> Tensor:
        total, ctx.grad = _distance_and_gradient(nodes_S, nodes_T, ctx.needs_input_grad[0])
        ctx.save_for_backward(nodes_S, nodes_T)
        return total.to(nodes_S.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        grad, ctx.grad = ctx.grad, None
        if grad is None:  # a second backward: the first one handed out the kept gradient
            grad = _distance_and_gradient(*ctx.saved_tensors, True)[1]
        return grad.mul_(grad_output), None


def affinity_distance(nodes_S: Tensor, nodes_T: Tensor) -> Tensor:
    """sum_n ||S_T[n] - S_S[n]||_F**2 of the affinities S = F^T F (P x P per sample). With few
    channels against the nodes it is taken through the C x C products instead, which is far
    cheaper: ||A^T A - B^T B||**2 = ||A A^T||**2 - 2 ||A B^T||**2 + ||B B^T||**2."""
    if 4 * (nodes_S.shape[1] + nodes_T.shape[1]) <= nodes_S.shape[2]:
        with torch.no_grad():
            teacher = _gram_squares(nodes_T, nodes_T)
        distance = teacher - 2 * _gram_squares(nodes_T, nodes_S) + _gram_squares(nodes_S, nodes_S)
        return distance.to(nodes_S.dtype)
    return _AffinityDistance.apply(nodes_S, nodes_T)


def pair_wise_distillation(preds_S: Tensor, preds_T: Tensor, pool_scale: float = 0.5) -> Tensor:
    """The unweighted PA loss; channel counts may differ, N and H x W may not."""
    check_same_positions("pa", preds_S, preds_T)
    kernel = max(1, round(1.0 / pool_scale))
    dtype = compute_dtype(preds_S)
    with torch.autocast(device_type=preds_S.device.type, enabled=False):
        nodes_S = nodes(preds_S.to(dtype), kernel)
        with torch.no_grad():
            nodes_T = nodes(preds_T.detach().to(dtype), kernel)
        n, _, hw = nodes_S.shape
        return affinity_distance(nodes_S, nodes_T) / (hw * hw) / n


@register("pa", PAParams)
class PairWiseDistillation(nn.Module):
    """Pair-wise (node affinity) distillation between two feature maps.

    Args:
        pool_scale: the pooled grid is ``pool_scale`` times the map's size per side, via
            max-pooling with kernel = stride = round(1 / pool_scale); in (0, 1], 1 = no pooling.
        loss_weight: factor the loss is multiplied by (SKD: 1; CIRKD: 10).

    Shapes:
        preds_S: (N, C_S, H, W); preds_T: (N, C_T, H, W). Returns a scalar.
    """


    def __init__(self, pool_scale: float = 0.5, loss_weight: float = 1.0):
        super().__init__()
        self.pool_scale, self.loss_weight = float(pool_scale), float(loss_weight)

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        return pair_wise_distillation(preds_S, preds_T, self.pool_scale) * self.loss_weight

    def extra_repr(self) -> str:
        return f"pool_scale={self.pool_scale}, loss_weight={self.loss_weight}"
