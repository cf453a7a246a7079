"""What the distillation losses share: shape checks (their parameters are checked by their
declarations, kdbench.losses.params), the dtype they compute in, and sums over a map's channels."""

from __future__ import annotations

from collections.abc import Callable

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


# Elements of one block of ``channel_sum``: 2 MiB in float32, which stays in cache.
_CHANNEL_BLOCK = 1 << 19


def channel_sum(x: Tensor, op: Callable[[Tensor], Tensor], dtype: torch.dtype) -> Tensor:
    """sum_c op(x[:, c]) of an (N, C, ...) map as (N, prod(...)) in ``dtype``, a few channels at a
    time: each block's op(x) stays in cache, so no map of op(x) is made, and on a CPU it runs several
    times faster than one reduction of the whole map over its middle axis (``vector_norm`` over
    dim 1 of a (N, 19, H*W) map is 20x slower than ``square().sum(1)``)."""
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    step = max(1, _CHANNEL_BLOCK // max(n * flat.shape[2], 1))
    total = op(flat[:, :step].to(dtype)).sum(dim=1)
    for k in range(step, c, step):
        total.add_(op(flat[:, k:k + step].to(dtype)).sum(dim=1))
    return total
