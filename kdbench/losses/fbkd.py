"""Feature-based KD (Zhang & Ma, "Improve Object Detection with Feature-based Knowledge
Distillation: Towards Accurate and Efficient Detectors", ICLR 2021), at the defaults MMRazor ships
as its authors' (mmrazor/models/losses/fbkd_loss.py and
mmrazor/models/architectures/connectors/fbkd_connector.py): four terms between an adapted student
map S' and the teacher map T, each of shape (N, C, H, W):

- attention-masked feature loss, ``mask_weight * sqrt(sum((T - conv1x1(S))^2 * M))``, where M is the
  mean of the teacher's and the student's spatial attention (detached): for a map X,
  ``softmax_{h,w}(mean_c |X| / spatial_t) * H * W`` (mean 1 over the positions);
- channel loss, ``channel_weight * ||mean_{h,w} T - linear(mean_{h,w} S)||_2``;
- spatial loss, ``spatial_weight * ||mean_c T - conv3x3(mean_c S)||_2``;
- global relation loss, ``nonlocal_weight * ||NL_T(T) - conv1x1(NL_S(S))||_2``, NL a non-local block
  (dot-product pairwise function, channel ``reduction``, its output conv followed by a BN whose weight starts at zero,
  and with ``sub_sample`` its key and value maps max-pooled by 2 and then by ``maxpool_stride``).

The non-local blocks are mmcv's (their parameters and state dicts), applied by
``non_local_forward``: their dot-product weights carry no softmax, so the product is taken keys
first and no (HW x HW) map is made. The channel attention is computed as the source defines it but
not used, as in the authors' code.
The adaptation layers and both non-local blocks train with the student (the teacher's block too:
it sees the frozen teacher map). They are built at the first call, when the channel counts are
known (the student's may differ from the teacher's). Norms are Frobenius norms over the whole
batch, as MMRazor's ``torch.dist`` takes them, but summed as ``sqrt(sum(d^2))``: on a CPU,
``torch.dist`` and ``torch.linalg.vector_norm`` of a float32 feature map of a few million elements
are off by about 1e-4 relative, the pairwise sum by about 1e-9.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdbench.losses.common import channel_sum
from kdbench.losses.params import FBKDParams
from kdbench.losses.registry import register


def _norm(x: Tensor) -> Tensor:
    """The Frobenius norm, summed pairwise (accurate in float32 on millions of elements)."""
    return x.pow(2).sum().sqrt()


def spatial_attention(x: Tensor, temperature: float) -> Tensor:
    """(N, 1, H, W): softmax over positions of the channel-mean absolute activation, times H*W
    (the channel mean of |x| a few channels at a time: no map of |x| is made)."""
    n, c, h, w = x.shape
    energy = channel_sum(x, torch.abs, x.dtype) / c
    return (torch.softmax(energy / temperature, dim=1) * (h * w)).reshape(n, 1, h, w)


def non_local(channels: int, reduction: int, sub_sample: bool, maxpool_stride: int) -> nn.Module:
    """mmcv's NonLocal2d (dot product, its output conv followed by a zero-initialised BN); with sub_sample,
    its value (g) and key (phi) maps are max-pooled by 2 (mmcv) and then by ``maxpool_stride``."""
    from mmcv.cnn import NonLocal2d

    block = NonLocal2d(channels, reduction=reduction, mode="dot_product", sub_sample=sub_sample,
                       norm_cfg={"type": "BN"}, zeros_init=True)
    if sub_sample:
        block.g = nn.Sequential(block.g, nn.MaxPool2d(maxpool_stride))
        block.phi = nn.Sequential(block.phi, nn.MaxPool2d(maxpool_stride))
    return block


def non_local_forward(block: nn.Module, x: Tensor) -> Tensor:
    """A non-local block of ``non_local`` applied to x: mmcv's dot-product NonLocal2d,
    ``x + conv_out(y)`` with ``y[p] = sum_q (theta[p] . phi[q]) g[q] / L`` over the L key positions,
    computed as ``((g phi^T) / L) theta``: the (C' x C') product of values and keys first, so no
    (HW x L) map of pairwise weights is made (C' = C / reduction, much less than HW), in
    (C' / HW) of the multiply-adds. Equal to mmcv's forward up to the float rounding of a
    different summation order."""
    n, _, h, w = x.shape
    g = block.g(x).flatten(2)  # (N, C', L)
    theta = block.theta(x).flatten(2)  # (N, C', HW)
    phi = block.phi(x).flatten(2)  # (N, C', L)
    context = torch.bmm(g, phi.transpose(1, 2)).div_(phi.shape[2])  # (N, C', C')
    return x + block.conv_out(torch.bmm(context, theta).view(n, -1, h, w))


@register("fbkd", FBKDParams)
class FBKDLoss(nn.Module):
    """FBKD between a student map and a teacher map of the same spatial size.

    Args:
        loss_weight: the factor on the sum of the four terms.
        mask_weight, channel_weight, spatial_weight, nonlocal_weight: each term's weight
            (7e-5, 4e-3, 4e-3, 7e-5).
        spatial_t, channel_t: attention temperatures (0.5).
        reduction, sub_sample, maxpool_stride: the non-local blocks' settings (2, False, 2).
    """

    def __init__(self, loss_weight: float = 1.0, mask_weight: float = 7e-5, channel_weight: float = 4e-3,
                 spatial_weight: float = 4e-3, nonlocal_weight: float = 7e-5, spatial_t: float = 0.5,
                 channel_t: float = 0.5, reduction: int = 2, sub_sample: bool = False, maxpool_stride: int = 2):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.weights = (float(mask_weight), float(channel_weight), float(spatial_weight), float(nonlocal_weight))
        self.spatial_t, self.channel_t = float(spatial_t), float(channel_t)
        self.block = (int(reduction), bool(sub_sample), int(maxpool_stride))
        self.student_adapt: nn.ModuleDict | None = None
        self.teacher_non_local: nn.Module | None = None

    def build_connectors(self, preds_S: Tensor, preds_T: Tensor) -> None:
        """The adapters and non-local blocks for these maps' channel counts, on their device."""
        cs, ct = preds_S.shape[1], preds_T.shape[1]
        self.student_adapt = nn.ModuleDict({
            "feature": nn.Conv2d(cs, ct, 1), "channel": nn.Linear(cs, ct), "spatial": nn.Conv2d(1, 1, 3, padding=1),
            "non_local": non_local(cs, *self.block), "relation": nn.Conv2d(cs, ct, 1),
        }).to(device=preds_S.device, dtype=preds_S.dtype)
        self.teacher_non_local = non_local(ct, *self.block).to(device=preds_T.device, dtype=preds_S.dtype)

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        if preds_S.shape[0] != preds_T.shape[0] or preds_S.shape[2:] != preds_T.shape[2:]:
            raise ValueError(f"fbkd: student {tuple(preds_S.shape)} and teacher {tuple(preds_T.shape)} maps differ "
                             "in batch or size (set resize: true)")
        if self.student_adapt is None:
            self.build_connectors(preds_S, preds_T)
        adapt = self.student_adapt
        teacher = preds_T.to(preds_S.dtype)
        with torch.no_grad():  # the mask is a weight, not a path for the gradient
            mask = (spatial_attention(teacher, self.spatial_t) + spatial_attention(preds_S, self.spatial_t)) / 2
        masked = ((teacher - adapt["feature"](preds_S)) ** 2 * mask).sum().sqrt()
        channel = _norm(teacher.mean(dim=(2, 3)) - adapt["channel"](preds_S.mean(dim=(2, 3))))
        spatial = _norm(teacher.mean(dim=1, keepdim=True) - adapt["spatial"](preds_S.mean(dim=1, keepdim=True)))
        relation = _norm(non_local_forward(self.teacher_non_local, teacher)
                         - adapt["relation"](non_local_forward(adapt["non_local"], preds_S)))
        w_mask, w_channel, w_spatial, w_relation = self.weights
        total = w_mask * masked + w_channel * channel + w_spatial * spatial + w_relation * relation
        return self.loss_weight * total
