"""FGD: focal and global distillation (Yang et al., "Focal and Global Knowledge Distillation for
Detectors", CVPR 2022), as its authors compute it: yzd-v/FGD at commit c03a6cf,
``mmdet/distillation/losses/fgd.py`` (``FeatureLoss``).

For a student map S (aligned to the teacher's C channels by a 1x1 convolution ``align`` where the
channel counts differ) and a teacher map T of N images, C channels and H x W positions:

- attention at temperature ``temp``, of either map X: spatial A_S(X) = H*W * softmax over the
  positions of mean_c |X| / temp, channel A_C(X) = C * softmax over the channels of mean_hw |X| / temp;
- box masks from each image's ground-truth boxes (x1, y1, x2, y2 in its pixels), scaled to the map
  by the image's (h, w) (its size before the batch's padding, which the map also covers: the authors'
  scaling, kept as they wrote it): a box covers the rows floor(y1 / h * H) .. ceil(y2 / h * H) and the columns
  floor(x1 / w * W) .. ceil(x2 / w * W) (both ends included), and weighs 1 / (rows * columns) over
  them (the count taken before the map's edge cuts it, as the authors do); the foreground mask M_fg
  is the largest weight of the boxes covering a position (0 where none does), the background mask
  M_bg is 1 where M_fg is 0, divided by its sum (when there is one);
- focal terms, with the teacher's attention: fg = sum M_fg * A_S(T) * A_C(T) * (S - T)^2 / N, and
  bg the same with M_bg;
- attention-mask term: mask = (sum |A_C(S) - A_C(T)| + sum |A_S(S) - A_S(T)|) / N;
- global relation term, a GcBlock on each map: context(X) = sum over the positions of X weighted by
  softmax(conv_mask(X)) over the positions, G(X) = X + channel_add_conv(context(X)) with
  channel_add_conv = conv1x1 (C -> C/2), LayerNorm, ReLU, conv1x1 (C/2 -> C); the student's map goes
  through ``conv_mask_s`` and ``channel_add_conv_s``, the teacher's through ``conv_mask_t`` and
  ``channel_add_conv_t``: rela = sum (G_s(S) - G_t(T))^2 / N;

  loss = loss_weight * (alpha_fgd * fg + beta_fgd * bg + gamma_fgd * mask + lambda_fgd * rela)

The teacher's map carries no gradient; its GcBlock's layers do (they train with the student, as in
the authors' distiller). The layers keep the authors' names (``align``, ``conv_mask_s``,
``conv_mask_t``, ``channel_add_conv_s``, ``channel_add_conv_t``, the latter two with the indices
0, 1 and 3 of their Sequential), so a state dict of the authors' ``FeatureLoss`` loads into this
module. They are built at the first call, when the channel counts are known, or by such a state
dict loaded first, and initialised as the authors do: ``conv_mask_*`` Kaiming-normal (fan in, ReLU
gain) with zero bias, the last convolution of ``channel_add_conv_*`` zero, the rest PyTorch's
defaults. One difference, outside what a detector's boxes do: a box that starts left of or above
the image covers the map from its first row or column (the authors' slice would wrap around).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdbench.losses.params import FGDParams
from kdbench.losses.registry import register


def attention(x: Tensor, temp: float) -> tuple[Tensor, Tensor]:
    """(spatial (N, H, W), channel (N, C)) attention of an (N, C, H, W) map at temperature ``temp``."""
    n, c, h, w = x.shape
    value = x.abs()
    spatial = (h * w) * torch.softmax(value.mean(dim=1).reshape(n, -1) / temp, dim=1)
    channel = c * torch.softmax(value.mean(dim=(2, 3)) / temp, dim=1)
    return spatial.reshape(n, h, w), channel


def box_masks(boxes: list[Tensor], image_shapes: list[tuple[int, int]], height: int, width: int,
              dtype: torch.dtype, device) -> tuple[Tensor, Tensor]:
    """(foreground, background) masks (N, H, W) of a map of ``height`` x ``width`` positions from
    each image's boxes (x1, y1, x2, y2 in its pixels) and its (h, w, ...) or an mmdet meta dict holding
    it as ``img_shape``."""
    foreground = torch.zeros(len(boxes), height, width, dtype=dtype, device=device)
    rows = torch.arange(height, device=device)
    columns = torch.arange(width, device=device)
    for i, (image_boxes, shape) in enumerate(zip(boxes, image_shapes)):
        if len(image_boxes) == 0:
            continue
        shape = shape["img_shape"] if isinstance(shape, dict) else shape  # the authors' img_metas also do
        image_h, image_w = shape[0], shape[1]  # an mmdet img_shape may add the channels: (h, w, 3)
        b = image_boxes.detach().to(device)
        left, right = torch.floor(b[:, 0] / image_w * width).int(), torch.ceil(b[:, 2] / image_w * width).int()
        top, bottom = torch.floor(b[:, 1] / image_h * height).int(), torch.ceil(b[:, 3] / image_h * height).int()
        weight = (1.0 / (bottom + 1 - top) / (right + 1 - left)).to(dtype)  # in the default dtype first, as theirs
        in_rows = (rows[None, :] >= top[:, None]) & (rows[None, :] <= bottom[:, None])
        in_columns = (columns[None, :] >= left[:, None]) & (columns[None, :] <= right[:, None])
        covered = in_rows[:, :, None] & in_columns[:, None, :]
        foreground[i] = torch.where(covered, weight[:, None, None], torch.zeros((), dtype=dtype, device=device)).amax(0)
    background = (foreground == 0).to(dtype)
    total = background.sum(dim=(1, 2), keepdim=True)
    return foreground, torch.where(total > 0, background / total.clamp(min=1), background)


def _context_transform(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels // 2, kernel_size=1), nn.LayerNorm([channels // 2, 1, 1]),
                         nn.ReLU(inplace=True), nn.Conv2d(channels // 2, channels, kernel_size=1))


@register("fgd", FGDParams)
class FGDLoss(nn.Module):
    """FGD between a student map and a teacher map of the same batch and spatial size, given each
    image's ground-truth boxes; the student's channels may differ (``align`` maps them).

    Args:
        temp: the attention temperature (0.5).
        alpha_fgd, beta_fgd: the foreground and background terms' factors (1e-3, 5e-4).
        gamma_fgd: the attention-mask term's factor (1e-3).
        lambda_fgd: the global relation term's factor (5e-6).
        loss_weight: a further factor on the loss.
    """

    def __init__(self, temp: float = 0.5, alpha_fgd: float = 0.001, beta_fgd: float = 0.0005,
                 gamma_fgd: float = 0.001, lambda_fgd: float = 0.000005, loss_weight: float = 1.0):
        super().__init__()
        self.temp, self.loss_weight = float(temp), float(loss_weight)
        self.alpha_fgd, self.beta_fgd = float(alpha_fgd), float(beta_fgd)
        self.gamma_fgd, self.lambda_fgd = float(gamma_fgd), float(lambda_fgd)
        self.align: nn.Module | None = None
        self.conv_mask_s: nn.Module | None = None
        self.conv_mask_t: nn.Module | None = None
        self.channel_add_conv_s: nn.Module | None = None
        self.channel_add_conv_t: nn.Module | None = None

    def build_connectors(self, student_channels: int, teacher_channels: int, device=None,
                         dtype: torch.dtype | None = None) -> None:
        """The layers for these channel counts, initialised as the authors' ``reset_parameters``."""
        if student_channels != teacher_channels:
            self.align = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
        self.conv_mask_s = nn.Conv2d(teacher_channels, 1, kernel_size=1)
        self.conv_mask_t = nn.Conv2d(teacher_channels, 1, kernel_size=1)
        self.channel_add_conv_s = _context_transform(teacher_channels)
        self.channel_add_conv_t = _context_transform(teacher_channels)
        for conv in (self.conv_mask_s, self.conv_mask_t):
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        for block in (self.channel_add_conv_s, self.channel_add_conv_t):
            nn.init.zeros_(block[-1].weight)
            nn.init.zeros_(block[-1].bias)
        self.to(device=device, dtype=dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A state dict loaded before the first call (the authors' ``FeatureLoss``'s, or a
        checkpoint's) builds the layers its weights fit."""
        weight = state_dict.get(prefix + "conv_mask_s.weight")
        if self.conv_mask_s is None and weight is not None:
            align = state_dict.get(prefix + "align.weight")
            teacher_channels = weight.shape[1]
            student_channels = teacher_channels if align is None else align.shape[1]
            self.build_connectors(student_channels, teacher_channels, weight.device, weight.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _global(self, x: Tensor, conv_mask: nn.Module, channel_add_conv: nn.Module) -> Tensor:
        """x plus the GcBlock's transform of its context (x weighted by a softmax over positions)."""
        n, c = x.shape[:2]
        weights = torch.softmax(conv_mask(x).reshape(n, 1, -1), dim=2)
        context = torch.bmm(x.reshape(n, c, -1), weights.transpose(1, 2)).reshape(n, c, 1, 1)
        return x + channel_add_conv(context)

    def forward(self, preds_S: Tensor, preds_T: Tensor, boxes: list[Tensor] | None = None,
                image_shapes: list[tuple[int, int]] | None = None) -> Tensor:
        if boxes is None or image_shapes is None:
            raise ValueError("fgd needs each image's ground-truth boxes and shape (boxes=, image_shapes=)")
        if preds_S.dim() != 4 or preds_S.shape[0] != preds_T.shape[0] or preds_S.shape[2:] != preds_T.shape[2:]:
            raise ValueError(f"fgd: student {tuple(preds_S.shape)} and teacher {tuple(preds_T.shape)} maps differ "
                             "in batch or size (set resize: true)")
        dtype = torch.float64 if preds_S.dtype == torch.float64 else torch.float32
        if self.conv_mask_s is None:
            self.build_connectors(preds_S.shape[1], preds_T.shape[1], preds_S.device, dtype)
        with torch.autocast(device_type=preds_S.device.type, enabled=False):
            s, t = preds_S.to(dtype), preds_T.detach().to(dtype)
            s = self.align(s) if self.align is not None else s
            n, _, h, w = s.shape
            spatial_t, channel_t = attention(t, self.temp)
            spatial_s, channel_s = attention(s, self.temp)
            with torch.no_grad():
                foreground, background = box_masks(boxes, image_shapes, h, w, dtype, s.device)
            weighted = ((s - t).square() * channel_t[:, :, None, None]).sum(dim=1) * spatial_t
            focal = self.alpha_fgd * (weighted * foreground).sum() + self.beta_fgd * (weighted * background).sum()
            mask = (channel_s - channel_t).abs().sum() + (spatial_s - spatial_t).abs().sum()
            relation = (self._global(s, self.conv_mask_s, self.channel_add_conv_s)
                        - self._global(t, self.conv_mask_t, self.channel_add_conv_t)).square().sum()
            loss = (focal + self.gamma_fgd * mask + self.lambda_fgd * relation) / n
        return loss * self.loss_weight

    def extra_repr(self) -> str:
        return (f"temp={self.temp}, alpha_fgd={self.alpha_fgd}, beta_fgd={self.beta_fgd}, "
                f"gamma_fgd={self.gamma_fgd}, lambda_fgd={self.lambda_fgd}, loss_weight={self.loss_weight}")
