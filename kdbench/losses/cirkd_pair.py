"""CIRKD's mini-batch pixel-to-pixel term (Yang et al., "Cross-Image Relational Knowledge
Distillation for Semantic Segmentation", CVPR 2022), as the authors' code computes it:
winycg/CIRKD, ``losses/cirkd_mini_batch.py`` (``CriterionMiniBatchCrossImagePair``) at commit
2d8ad0f.

Both maps are L2-normalised over channels at every position (with ``pooling``, first averaged
over 2x2 windows, ``ceil_mode``). For every ordered pair of images (i, j) of the batch of B, the
(HW x HW) similarity maps ``A_S = S_i S_j^T`` and ``A_T = T_i T_j^T`` (rows: the positions of
image i) are compared row by row::

    loss = loss_weight / B^2 * sum_{i, j} 1/HW * sum_r KL(softmax(A_T[r] / tau) || softmax(A_S[r] / tau))

(``F.kl_div`` with ``batchmean`` over the HW rows, then the mean over the B^2 pairs). The gradient
reaches the student through both sides of each similarity map. The authors' training script
(``train_cirkd.py``) uses ``tau`` 0.1 (``--contrast-temperature``) and the weight 1
(``--lambda-minibatch-pixel``). Their later commits replace ``pooling`` by a 4x4 average pool on
maps of 256 x 256 positions or more; kdbench follows 2d8ad0f.

Student and teacher channel counts may differ (only positions are compared). Memory: the
authors' autograd formulation keeps every pair's (HW x HW) maps for the backward, O(B^2 (HW)^2);
this one (kdbench.losses.similarity_kl) works the gradient out in the forward and keeps only
blocks of one pair's rows at a time plus a gradient of the student map's size, O((HW)^2) at most
(``working_bytes``; the preflight refuses a location where that exceeds the run's memory).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.losses.common import check_same_positions
from kdbench.losses.params import CIRKDPairParams
from kdbench.losses.registry import register
from kdbench.losses.similarity_kl import PairKL


def pair_relation_kl(preds_S: Tensor, preds_T: Tensor, tau: float = 0.1, pooling: bool = False) -> Tensor:
    """The unweighted mini-batch term of two (B, C, H, W) maps (channel counts may differ)."""
    check_same_positions("cirkd_pair", preds_S, preds_T)
    preds_T = preds_T.detach()
    if pooling:
        preds_S = F.avg_pool2d(preds_S, 2, 2, ceil_mode=True)
        preds_T = F.avg_pool2d(preds_T, 2, 2, ceil_mode=True)
    b = preds_S.shape[0]
    rows_S = F.normalize(preds_S, p=2, dim=1).flatten(2).transpose(1, 2)  # (B, HW, C)
    rows_T = F.normalize(preds_T, p=2, dim=1).flatten(2).transpose(1, 2)
    positions = rows_S.shape[1]
    return PairKL.apply(rows_S, rows_T, float(tau), 1.0 / (b * b * max(positions, 1)))


@register("cirkd_pair", CIRKDPairParams)
class CIRKDPairLoss(nn.Module):
    """CIRKD's mini-batch cross-image pixel-to-pixel term.

    Args:
        tau: the similarity softmax's temperature (0.1).
        pooling: a 2x2 average pool before the similarities (False).
        loss_weight: the factor on the term (1, CIRKD's ``--lambda-minibatch-pixel``).
    """

    def __init__(self, tau: float = 0.1, pooling: bool = False, loss_weight: float = 1.0):
        super().__init__()
        self.tau, self.pooling, self.loss_weight = float(tau), bool(pooling), float(loss_weight)

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        return pair_relation_kl(preds_S, preds_T, self.tau, self.pooling) * self.loss_weight

    def extra_repr(self) -> str:
        return f"tau={self.tau}, pooling={self.pooling}, loss_weight={self.loss_weight}"
