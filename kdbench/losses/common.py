"""What the distillation losses share: shape checks (their parameters are checked by their
declarations, kdbench.losses.params) and the dtype they compute in."""

from __future__ import annotations

import torch
from torch import Tensor

from kdbench.errors import UserError


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a loss computes in: float64 stays float64 (gradcheck); float32, float16 and
    bfloat16 are computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def check_same_shape(method: str, preds_S: Tensor, preds_T: Tensor, ndim: int = 4) -> None:
    """Student and teacher maps must agree; the error names both shapes and the two fixes."""
    if preds_S.dim() != ndim or preds_T.dim() != ndim:
        raise UserError(
            f"{method}: expected {ndim}-d maps (N, C, H, W), got student {tuple(preds_S.shape)} "
            f"and teacher {tuple(preds_T.shape)}"
        )
    if preds_S.shape != preds_T.shape:
        fixes = []
        if preds_S.shape[1] != preds_T.shape[1]:
            fixes.append("add an adapter (channel counts differ)")
        if preds_S.shape[2:] != preds_T.shape[2:]:
            fixes.append("set resize: true (spatial sizes differ)")
        raise UserError(
            f"{method}: student map {tuple(preds_S.shape)} and teacher map "
            f"{tuple(preds_T.shape)} differ; {' and '.join(fixes)}"
        )


def check_same_positions(method: str, preds_S: Tensor, preds_T: Tensor) -> None:
    """Raise a UserError unless both are 4-d maps with the same batch and spatial size (for the
    methods that compare positions, whose channel counts may differ)."""
    if preds_S.dim() != 4 or preds_T.dim() != 4:
        raise UserError(
            f"{method}: expected 4-d maps (N, C, H, W), got student {tuple(preds_S.shape)} and "
            f"teacher {tuple(preds_T.shape)}"
        )
    if preds_S.shape[0] != preds_T.shape[0] or preds_S.shape[2:] != preds_T.shape[2:]:
        raise UserError(
            f"{method}: student map {tuple(preds_S.shape)} and teacher map {tuple(preds_T.shape)} "
            "differ in batch or spatial size (channels may differ); set resize: true"
        )


def sum_of_squares(x: Tensor) -> Tensor:
    """sum x^2 over a map, one image (first-axis slice) at a time: each a pairwise sum, accurate in
    float32 on millions of values (on a CPU, ``torch.dot`` of a whole float32 map of a few million
    values is off by about 1e-4 relative), with a temporary of one image only."""
    return sum(x[i].square().sum() for i in range(x.shape[0]))
