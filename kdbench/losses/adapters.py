"""Making a student map comparable with the teacher's: channel adapters and explicit resizing."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.errors import UserError


class ChannelAdapter(nn.Sequential):
    """A 1x1 convolution from the student's channel count to the teacher's, optionally followed
    by BatchNorm and ReLU (the paper's feature-map adapter: conv + BN + ReLU, 128 -> 512).

    It trains with the student and is dropped after distillation.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: bool = False, act: bool = False):
        if in_channels <= 0 or out_channels <= 0:
            raise UserError(
                f"adapter channels must be positive, got {in_channels} -> {out_channels}"
            )
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=not norm)
        ]
        if norm:
            layers.append(nn.BatchNorm2d(out_channels))
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self.in_channels, self.out_channels = in_channels, out_channels


def align(preds_S: Tensor, preds_T: Tensor, resize: bool = False, where: str = "") -> Tensor:
    """Return the student map resized (bilinearly) to the teacher's H x W when ``resize`` is set.

    Without ``resize``, differing spatial sizes are an error naming both shapes; differing
    channel counts always are (they need an adapter, which owns parameters, not a resize).
    """
    label = f"{where}: " if where else ""
    if preds_S.shape[1] != preds_T.shape[1]:
        raise UserError(
            f"{label}student has {preds_S.shape[1]} channels {tuple(preds_S.shape)} and teacher "
            f"{preds_T.shape[1]} {tuple(preds_T.shape)}; add an adapter"
        )
    if preds_S.shape[2:] != preds_T.shape[2:]:
        if not resize:
            raise UserError(
                f"{label}student map {tuple(preds_S.shape)} and teacher map "
                f"{tuple(preds_T.shape)} differ in size; set resize: true to resize the student"
            )
        preds_S = F.interpolate(
            preds_S, size=preds_T.shape[2:], mode="bilinear", align_corners=False
        )
    return preds_S
