"""What a loss that declares ``needs_heads`` is given: the two detection heads and what they were
called with in the training step, one frozen dataclass, so a plugin's head loss reads it as the
built-ins (``ld``, ``crosskd``) do.

A term of such a loss names the head as its location (``student_location: bbox_head``, and
``teacher_location`` the same); the trainer calls the loss as ``loss(heads)`` with a
``HeadInputs``, not with two maps. The student's head and its inputs carry gradients; the teacher's
head is frozen (eval mode, ``requires_grad`` off) and the loss runs it under ``torch.no_grad()``
where it needs its outputs. See docs/head-losses.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn


@dataclass(frozen=True)
class HeadInputs:
    """One step's detection heads and their inputs.

    Attributes:
        student_head: the student's head module (e.g. mmdet's ``GFLHead``), trainable.
        teacher_head: the teacher's head module, frozen.
        student_feats: what the student's head is called with: one map per FPN level.
        teacher_feats: the same for the teacher (no gradient).
        student_outputs: what the student's head returned in this step's forward (for a GFL head,
            ``(cls_scores, bbox_preds)``, one map per level each), so a loss need not run it again.
        data_samples: the batch's mmdet data samples: ``gt_instances`` (boxes in the input image's
            pixels, labels) and ``metainfo`` (image and padded shapes), as the head's own loss reads them.
    """

    student_head: nn.Module
    teacher_head: nn.Module
    student_feats: tuple[Tensor, ...]
    teacher_feats: tuple[Tensor, ...]
    student_outputs: tuple[Any, ...]
    data_samples: list

    def head_targets(self) -> dict[str, Any]:
        """The student head's own training targets for this batch (mmdet's ``get_anchors`` and
        ``get_targets``: for GFL, ATSS assignment), per level: ``anchors``, ``labels``,
        ``label_weights``, ``bbox_targets``, and ``avg_factor`` (the number of positives)."""
        head = self.student_head
        cls_scores = self.student_outputs[0]
        metas = [sample.metainfo for sample in self.data_samples]
        gts = [sample.gt_instances for sample in self.data_samples]
        ignored = [sample.get("ignored_instances", None) for sample in self.data_samples]
        sizes = [score.shape[-2:] for score in cls_scores]
        anchors, valid = head.get_anchors(sizes, metas, device=cls_scores[0].device)
        anchors, labels, label_weights, bbox_targets, _, avg_factor = head.get_targets(
            anchors, valid, gts, metas, batch_gt_instances_ignore=ignored)
        return {"anchors": anchors, "labels": labels, "label_weights": label_weights,
                "bbox_targets": bbox_targets, "avg_factor": float(avg_factor)}
