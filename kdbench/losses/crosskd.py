"""CrossKD: cross-head distillation (Wang et al., "CrossKD: Cross-Head Knowledge Distillation for
Object Detection", CVPR 2024), for a GFL head, as jbwang1997/CrossKD computes it at commit 87e156a
(mmdet/models/detectors/crosskd_gfl.py, configs/crosskd/crosskd_r50_gflv1_r101-2x-ms_fpn_1x_coco.py).

On each FPN level both heads run their classification and regression branches' first ``i`` =
``reused_teacher_head_idx`` stacked convs. The student's branch features (the output of conv
``i``, after the activation: the authors' code keeps the tensor that mmcv's in-place ReLU then
overwrites) are standardised per channel over (N, H, W) (unbiased std, + 1e-6), given the
teacher's per-channel std and mean, passed through a ReLU (for ``i`` > 0), and then through the
teacher's remaining convs, its ``gfl_cls`` / ``gfl_reg`` and its level's ``Scale``: cross-head
predictions. With the teacher's own predictions p_T:

- classification: quality focal KD, ``BCE(x, sigmoid(t)) * |sigmoid(x) - sigmoid(t)|^beta`` per
  class, weighted by the student head's label weights, summed over the levels and divided by the
  number of positives of the student head's assignment (``avg_factor``), times ``cls_weight``;
- regression: for each box edge, KL(softmax(t / T) || softmax(x / T)) summed over the bins,
  times T^2, weighted by sigmoid(max_c t_cls) (0 where the label weight is 0), divided by 4 per
  level, then by the sum of those weights over the levels, times ``reg_weight``.

Each division adds float32's eps to the divisor where mmdet's ``weight_reduce_loss`` does.

The loss is the sum of the two, times ``loss_weight``. The teacher's head is frozen; the gradient
reaches the student's head through its first ``i`` convs (and its FPN features).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmdet.utils import reduce_mean
from torch import Tensor, nn

from kdbench.errors import UserError
from kdbench.losses.head_inputs import HeadInputs
from kdbench.losses.params import CrossKDParams
from kdbench.losses.registry import register

EPS = 1e-6  # added to the student's per-channel std, as the authors' align_scale does


def _convs(convs: nn.ModuleList, x: Tensor, start: int, stop: int) -> Tensor:
    for conv in list(convs)[start:stop]:
        x = conv(x)
    return x


def _at_least_float32(x: Tensor) -> Tensor:
    """Box logits in float32 at least (the authors' ``.float()``, for mixed precision); float64 stays."""
    return x if x.dtype == torch.float64 else x.float()


def _predict(head: nn.Module, level: int, cls_feat: Tensor, reg_feat: Tensor, start: int) -> tuple[Tensor, Tensor]:
    """A GFL head's class and box logits of one level from its branches' features after ``start`` convs."""
    cls_score = head.gfl_cls(_convs(head.cls_convs, cls_feat, start, None))
    bbox_pred = head.scales[level](head.gfl_reg(_convs(head.reg_convs, reg_feat, start, None)))
    return cls_score, _at_least_float32(bbox_pred)


def aligned(student: Tensor, teacher: Tensor) -> Tensor:
    """The student's (N, C, H, W) map standardised per channel over (N, H, W) and given the
    teacher's per-channel std and mean."""
    dims = (0, 2, 3)
    s_std, s_mean = torch.std_mean(student, dim=dims, keepdim=True)
    t_std, t_mean = torch.std_mean(teacher, dim=dims, keepdim=True)
    return (student - s_mean) / (s_std + EPS) * t_std + t_mean


def quality_focal_kd(pred: Tensor, target: Tensor, beta: float) -> Tensor:
    """Per-element quality focal KD of logits ``pred`` towards the teacher's logits ``target``."""
    soft = target.sigmoid()
    return F.binary_cross_entropy_with_logits(pred, soft, reduction="none") * (pred.sigmoid() - soft).abs().pow(beta)


def edge_kl(pred: Tensor, target: Tensor, T: float) -> Tensor:
    """KL(softmax(target / T) || softmax(pred / T)) over the last axis, summed, times T^2."""
    soft = F.softmax(target / T, dim=-1)
    return F.kl_div(F.log_softmax(pred / T, dim=-1), soft, reduction="none").sum(-1) * (T * T)


@register("crosskd", CrossKDParams)
class CrossKDLoss(nn.Module):
    """CrossKD between a GFL student head and its teacher (a ``needs_heads`` loss); the
    parameters are CrossKDParams'."""

    def __init__(self, loss_weight: float = 1.0, reused_teacher_head_idx: int = 3, cls_weight: float = 1.0,
                 beta: float = 1.0, reg_weight: float = 4.0, reg_T: float = 1.0):
        super().__init__()
        self.loss_weight, self.index = float(loss_weight), int(reused_teacher_head_idx)
        self.cls_weight, self.beta = float(cls_weight), float(beta)
        self.reg_weight, self.reg_T = float(reg_weight), float(reg_T)

    def _check(self, heads: HeadInputs) -> None:
        student, teacher = heads.student_head, heads.teacher_head
        if self.index > min(student.stacked_convs, teacher.stacked_convs):
            raise UserError(f"crosskd: reused_teacher_head_idx {self.index} is beyond the heads' stacked convs "
                            f"(student {student.stacked_convs}, teacher {teacher.stacked_convs})")
        if student.reg_max != teacher.reg_max or student.cls_out_channels != teacher.cls_out_channels:
            raise UserError("crosskd: the student's and teacher's heads differ in classes or reg_max")

    def _cross(self, heads: HeadInputs, level: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(cross-head cls, cross-head box, teacher cls, teacher box) logits of one level."""
        s_head, t_head, i = heads.student_head, heads.teacher_head, self.index
        s_x, t_x = heads.student_feats[level], heads.teacher_feats[level]
        with torch.no_grad():
            t_cls_hold, t_reg_hold = _convs(t_head.cls_convs, t_x, 0, i), _convs(t_head.reg_convs, t_x, 0, i)
            t_cls, t_reg = _predict(t_head, level, t_cls_hold, t_reg_hold, i)
        s_cls_hold, s_reg_hold = _convs(s_head.cls_convs, s_x, 0, i), _convs(s_head.reg_convs, s_x, 0, i)
        if s_cls_hold.shape[1] != t_cls_hold.shape[1]:
            raise UserError(f"crosskd: the student's head features have {s_cls_hold.shape[1]} channels after "
                            f"conv {i}, the teacher's {t_cls_hold.shape[1]}; they must be equal")
        cls_feat, reg_feat = aligned(s_cls_hold, t_cls_hold), aligned(s_reg_hold, t_reg_hold)
        if i != 0:
            cls_feat, reg_feat = F.relu(cls_feat), F.relu(reg_feat)
        return (*_predict(t_head, level, cls_feat, reg_feat, i), t_cls, t_reg)

    def forward(self, heads: HeadInputs) -> Tensor:
        self._check(heads)
        targets = heads.head_targets()
        classes, bins = heads.student_head.cls_out_channels, heads.student_head.reg_max + 1
        device = heads.student_feats[0].device
        avg_factor = reduce_mean(torch.tensor(targets["avg_factor"], dtype=torch.float, device=device)).item()
        cls_total, reg_total, reg_norm = 0.0, 0.0, 0.0
        for level, label_weights in enumerate(targets["label_weights"]):
            cross_cls, cross_reg, t_cls, t_reg = self._cross(heads, level)
            cross_cls, t_cls = (x.permute(0, 2, 3, 1).reshape(-1, classes) for x in (cross_cls, t_cls))
            weights = label_weights.reshape(-1)
            cls_loss = quality_focal_kd(cross_cls, t_cls, self.beta) * weights[:, None]
            cls_total = cls_total + cls_loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)
            reg_weights = t_cls.max(dim=1)[0].sigmoid() * (weights != 0)
            kl = edge_kl(cross_reg.permute(0, 2, 3, 1).reshape(-1, 4, bins),
                         t_reg.permute(0, 2, 3, 1).reshape(-1, 4, bins), self.reg_T)
            reg_total = reg_total + (kl * reg_weights[:, None]).sum() / (4.0 + torch.finfo(torch.float32).eps)
            reg_norm = reg_norm + reg_weights.sum()
        loss = self.cls_weight * cls_total + self.reg_weight * reg_total / reg_norm
        return loss * self.loss_weight

    def extra_repr(self) -> str:
        return (f"loss_weight={self.loss_weight}, reused_teacher_head_idx={self.index}, cls_weight={self.cls_weight}, "
                f"beta={self.beta}, reg_weight={self.reg_weight}, reg_T={self.reg_T}")
