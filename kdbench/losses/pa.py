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
spatial sizes must agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.losses.common import check_same_positions, compute_dtype
from kdbench.losses.params import PAParams
from kdbench.losses.registry import register


def nodes(feat: Tensor, kernel: int) -> Tensor:
    """(N, C, H, W) -> (N, C, H'W'): the max-pooled nodes, each a unit C-vector."""
    if kernel > 1:
        feat = F.max_pool2d(feat, kernel_size=kernel, stride=kernel, ceil_mode=True)
    return F.normalize(feat.flatten(2), p=2.0, dim=1)


def _gram_squares(a: Tensor, b: Tensor) -> Tensor:
    """||a b^T||_F**2 summed over the batch, for (N, C_a, P) and (N, C_b, P), in float64."""
    return torch.bmm(a, b.transpose(1, 2)).pow(2).sum(dtype=torch.float64)


def affinity_distance(nodes_S: Tensor, nodes_T: Tensor) -> Tensor:
    """sum_n ||S_T[n] - S_S[n]||_F**2 of the affinities S = F^T F (P x P per sample). With fewer
    channels than nodes it is taken through the C x C products instead, which never form a P x P
    matrix: ||A^T A - B^T B||**2 = ||A A^T||**2 - 2 ||A B^T||**2 + ||B B^T||**2."""
    channels, positions = nodes_S.shape[1] + nodes_T.shape[1], nodes_S.shape[2]
    if 3 * channels < 4 * positions:
        with torch.no_grad():
            teacher = _gram_squares(nodes_T, nodes_T)
        return teacher - 2 * _gram_squares(nodes_T, nodes_S) + _gram_squares(nodes_S, nodes_S)
    s_S = torch.bmm(nodes_S.transpose(1, 2), nodes_S)
    s_T = torch.bmm(nodes_T.transpose(1, 2), nodes_T)
    return (s_T - s_S).pow(2).sum()


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
        return (affinity_distance(nodes_S, nodes_T) / (hw * hw) / n).to(dtype)


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
