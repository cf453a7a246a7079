"""LD: localization distillation (Zheng et al., "Localization Distillation for Dense Object
Detection", CVPR 2022), the term mmdet's ``LDHead`` adds to GFL's losses
(mmdet/models/dense_heads/ld_head.py; configs/ld/ld_r18-gflv1-r101_fpn_1x_coco.py).

On each FPN level, at the positions the student head's own assigner makes positive (ATSS for
GFL), each of the four box edges' distributions over the ``reg_max + 1`` bins of the student is
pulled to the teacher's by mmdet's ``KnowledgeDistillationKLDivLoss`` at temperature ``T``
(softmax of the logits / T, KL averaged over the bins, times T^2), weighted by the student's best
class score there (sigmoid, detached), summed and divided by 4 (mmdet's ``avg_factor=4.0``); the
levels' losses add up. The teacher's distributions come from its own head on its own features.
"""

from __future__ import annotations

import torch
from mmdet.models.losses import KnowledgeDistillationKLDivLoss
from torch import Tensor, nn

from kdbench.losses.head_inputs import HeadInputs
from kdbench.losses.params import LDParams
from kdbench.losses.registry import register


def _flat(pred: Tensor, channels: int) -> Tensor:
    """(N, C*k, H, W) -> (N*H*W*k, C) in mmdet's order (positions, then the k groups)."""
    return pred.permute(0, 2, 3, 1).reshape(-1, channels)


@register("ld", LDParams)
class LDLoss(nn.Module):
    """LD between a GFL-like student head and its teacher (a ``needs_heads`` loss).

    Args:
        loss_weight: the weight of the KL term (mmdet's ``loss_ld.loss_weight``, 0.25).
        T: the distillation temperature (10).
    """

    def __init__(self, loss_weight: float = 0.25, T: float = 10.0):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.kl = KnowledgeDistillationKLDivLoss(loss_weight=self.loss_weight, T=T)

    def forward(self, heads: HeadInputs) -> Tensor:
        head = heads.student_head
        cls_scores, bbox_preds = heads.student_outputs[:2]
        with torch.no_grad():
            soft_targets = heads.teacher_head(heads.teacher_feats)[1]
        labels = heads.head_targets()["labels"]
        bins = head.reg_max + 1
        total = bbox_preds[0].sum() * 0
        for cls_score, bbox_pred, soft, level_labels in zip(cls_scores, bbox_preds, soft_targets, labels):
            flat_labels = level_labels.reshape(-1)
            positive = ((flat_labels >= 0) & (flat_labels < head.num_classes)).nonzero().squeeze(1)
            if len(positive) == 0:
                continue
            weight = _flat(cls_score.detach(), head.cls_out_channels).sigmoid().max(dim=1)[0][positive]
            pred = _flat(bbox_pred, 4 * bins)[positive].reshape(-1, bins)
            target = _flat(soft, 4 * bins)[positive].reshape(-1, bins)
            total = total + self.kl(pred, target, weight=weight[:, None].expand(-1, 4).reshape(-1), avg_factor=4.0)
        return total

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}, T={self.kl.T}"
