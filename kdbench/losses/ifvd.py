"""Intra-class feature variation distillation (IFVD; Wang et al., ECCV 2020,
https://www.ecva.net/papers/eccv_2020/papers_ECCV/html/230_ECCV_2020_paper.php,
code https://github.com/YukangWang/IFVD).

The ground-truth labels are resized (nearest) to the feature map's size. Per sample and class,
the prototype is the mean feature of that class's pixels; every labelled pixel gets the cosine
similarity between its feature and its own class's prototype, and the student's cosine map is
regressed onto the teacher's::

    proto[n, k]  = mean_{i : y[n, i] = k} F[n, :, i]                 # per sample, per class
    m(F)[n, i]   = cos(F[n, :, i], proto[n, y[n, i]])                 # labelled pixels only
    loss         = loss_weight * mean_{(n, i) : y[n, i] != ignore} (m(F_S) - m(F_T))**2

Pixels labelled ``ignore_index`` are excluded from the prototypes and from the mean (the
reference code leaves them in the denominator with a difference of 0, which only rescales the
loss by the labelled fraction). Gradient flows through the student's prototypes too, as in the
reference code. Classes are handled together with ``index_add`` (no loop over pixels or
classes). The maps are (N, H, W), so student and teacher channel counts may differ.

Default weight 200 as IFVD's authors ship it; CIRKD's re-implementation uses 20.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.errors import UserError
from kdbench.losses.common import compute_dtype
from kdbench.losses.params import IFVDParams
from kdbench.losses.registry import register


def _prototype_cosines(feat: Tensor, index: Tensor, slots: int) -> Tensor:
    """feat (P, C) of labelled pixels, index (P,) = sample * K + class -> cos to own prototype."""
    sums = feat.new_zeros(slots, feat.shape[1]).index_add(0, index, feat)
    counts = torch.bincount(index, minlength=slots).to(feat.dtype).clamp_min_(1.0)
    protos = sums / counts[:, None]
    return F.cosine_similarity(feat, protos[index], dim=1)


def intra_class_variation(
    preds_S: Tensor, preds_T: Tensor, labels: Tensor, ignore_index: int = 255
) -> Tensor:
    """The unweighted IFVD loss of (N, C_S, H, W) / (N, C_T, H, W) maps and (N, H0, W0) labels."""
    if preds_S.dim() != 4 or preds_T.dim() != 4 or labels.dim() != 3:
        raise UserError(
            f"ifvd: expected (N, C, H, W) maps and (N, H0, W0) labels, got student "
            f"{tuple(preds_S.shape)}, teacher {tuple(preds_T.shape)}, labels {tuple(labels.shape)}"
        )
    n, _, h, w = preds_S.shape
    if preds_T.shape[0] != n or preds_T.shape[2:] != preds_S.shape[2:] or labels.shape[0] != n:
        raise UserError(
            f"ifvd: student {tuple(preds_S.shape)}, teacher {tuple(preds_T.shape)} and labels "
            f"{tuple(labels.shape)} must agree in N and the maps in H x W (channels may differ)"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise UserError(f"ifvd: labels must be an integer tensor, got {labels.dtype}")
    if labels.shape[1:] != (h, w):
        labels = F.interpolate(labels[:, None].double(), size=(h, w), mode="nearest")[:, 0]
    labels = labels.long()
    valid = labels != ignore_index
    if bool((labels[valid] < 0).any()):
        raise UserError(f"ifvd: labels must be >= 0 or ignore_index={ignore_index}")
    dtype = compute_dtype(preds_S)
    if not bool(valid.any()):
        return preds_S.to(dtype).sum() * 0.0  # nothing labelled: zero, still differentiable
    slots = n * (int(labels[valid].max()) + 1)
    sample = torch.arange(n, device=labels.device)[:, None, None]
    index = (sample * (slots // n) + labels)[valid]  # (P,) in the order of boolean indexing
    with torch.autocast(device_type=preds_S.device.type, enabled=False):
        f_S = preds_S.to(dtype).permute(0, 2, 3, 1)[valid]  # (P, C_S)
        cos_S = _prototype_cosines(f_S, index, slots)
        with torch.no_grad():
            f_T = preds_T.detach().to(dtype).permute(0, 2, 3, 1)[valid]
            cos_T = _prototype_cosines(f_T, index, slots)
        return (cos_S - cos_T).pow(2).mean()


@register("ifvd", IFVDParams)
class IntraClassFeatureVariation(nn.Module):
    """IFVD: match per-pixel cosine similarity to the class prototype.

    Args:
        loss_weight: factor the loss is multiplied by (IFVD: 200; CIRKD: 20).
        ignore_index: label value excluded from prototypes and from the loss.

    Shapes:
        preds_S: (N, C_S, H, W); preds_T: (N, C_T, H, W); labels: (N, H0, W0) integer class ids
        (resized by nearest neighbour to H x W). Returns a scalar.
    """


    def __init__(self, loss_weight: float = 200.0, ignore_index: int = 255):
        super().__init__()
        self.loss_weight, self.ignore_index = float(loss_weight), ignore_index

    def forward(self, preds_S: Tensor, preds_T: Tensor, labels: Tensor) -> Tensor:
        loss = intra_class_variation(preds_S, preds_T, labels, self.ignore_index)
        return loss * self.loss_weight

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}, ignore_index={self.ignore_index}"
