"""Channel-wise distillation (Shu et al., ICCV 2021, https://arxiv.org/abs/2011.13256).

Each channel of an (N, C, H, W) map becomes a distribution over its H*W positions,
``softmax(y_c / tau)``, and the student is pulled towards the teacher with
``KL(p_T || p_S)`` summed over positions, times ``tau**2``, averaged over the N*C channels.
This is exactly MMRazor's ``ChannelWiseDivergence`` (true KL, teacher entropy subtracted).

The forward and backward are one ``autograd.Function`` that works through the (N*C, H*W) rows in
blocks small enough to stay in cache, so that each element comes from main memory once instead of
once per operation of the textbook formulation. For float32 maps on a CPU, a compiled kernel
(``_cwd_cpu.cpp``, built at set-up, see ``_native.py``) does the same in one pass per row when it
is built; the two agree to float32 rounding. The forward keeps one map, the gradient's
direction ``softmax(S/tau) - softmax(T/tau)``; the backward scales it in place by
``tau / (N*C)`` (times the incoming gradient) and returns it: one pass, no allocation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from kdbench.losses import _native
from kdbench.losses.common import check_same_shape, compute_dtype
from kdbench.losses.params import CWDParams
from kdbench.losses.registry import register

# Elements per block of rows. On a CPU the three float32 block buffers (log p_T, log p_S, and
# p_T, which first holds the scaled rows) take 3 MiB, which stays in the L2 caches while a block is
# worked on, so main memory sees each input once instead of once per operation of the textbook
# formulation. On a GPU a block is a quarter of the map (at most 2**22 elements): the extra
# memory stays bounded and the number of kernel launches small.
_CPU_BLOCK = 1 << 18
_GPU_BLOCK = 1 << 22


def _rows_per_block(rows: int, length: int, device: torch.device) -> int:
    target = _CPU_BLOCK if device.type == "cpu" else min(_GPU_BLOCK, -(-rows * length // 4))
    return max(1, min(rows, target // max(length, 1)))


def _scaled_block(rows: Tensor, inv_tau: float, buffer: Tensor) -> Tensor:
    """rows / tau in ``buffer``'s dtype; at tau = 1 in the right dtype the rows themselves (the
    caller only reads them)."""
    if rows.dtype == buffer.dtype:
        return rows if inv_tau == 1.0 else torch.mul(rows, inv_tau, out=buffer)
    return buffer.copy_(rows).mul_(inv_tau)  # half precision: scaled in float32, never before


def _native_kernel(rows_S: Tensor, rows_T: Tensor):
    """The compiled CPU kernel, for contiguous float32 CPU rows, when it is built; else None."""
    if rows_S.device.type != "cpu" or rows_S.dtype != torch.float32 or rows_T.dtype != torch.float32:
        return None
    if not (rows_S.is_contiguous() and rows_T.is_contiguous()) or rows_S.numel() == 0:
        return None
    return _native.cwd_cpu()


class _ChannelWiseKL(torch.autograd.Function):
    """sum_rows KL(softmax(T/tau) || softmax(S/tau)) * scale over the (N*C, H*W) rows.

    The forward goes through the rows block by block: log p_T and log p_S by log_softmax (each
    row shifted by its own maximum inside, so maps that differ by a per-channel constant give 0
    without cancellation), p_T = exp(log p_T), the block's sum of p_T * (log p_T - log p_S), and
    the block of the gradient's direction p_S - p_T, written into the one map the forward keeps.

    The first backward scales that map in place by ``grad_output * tau * scale`` and hands it out
    as the gradient, so the backward allocates nothing and makes one pass. The map is then
    released (the gradient is its only owner from there on); a further backward through a retained
    graph recomputes ``(p_S - p_T) * tau * scale`` block by block from the inputs instead.
    """

    @staticmethod
    def forward(ctx, preds_S: Tensor, preds_T: Tensor, tau: float, scale: float) -> Tensor:
        dtype = compute_dtype(preds_S)
        rows_S = preds_S.reshape(preds_S.shape[0] * preds_S.shape[1], -1)
        rows_T = preds_T.reshape(rows_S.shape)
        n_rows, length = rows_S.shape
        block = _rows_per_block(n_rows, length, preds_S.device)
        inv_tau = 1.0 / tau
        needs_grad = ctx.needs_input_grad[0]
        ctx.difference, ctx.native = None, False
        if needs_grad:
            ctx.save_for_backward(rows_S, rows_T)  # for a second backward only
            ctx.tau, ctx.factor = tau, tau * scale
            ctx.input_shape, ctx.input_dtype, ctx.dtype = preds_S.shape, preds_S.dtype, dtype
        if rows_S.numel() == 0:  # no positions: nothing to distil
            return torch.zeros((), dtype=dtype, device=preds_S.device)
        native = _native_kernel(rows_S, rows_T)
        if native is not None:  # one pass per row; the map is kept only for a backward
            kl_rows, difference = native.cwd_forward(rows_S, rows_T, tau, needs_grad)
            ctx.difference = difference if needs_grad else None
            ctx.native = True
            return (kl_rows.sum() * (scale * tau * tau)).to(dtype)
        with torch.autocast(device_type=preds_S.device.type, enabled=False):
            buffers = torch.empty((3, block, length), dtype=dtype, device=preds_S.device)
            sums = torch.empty(-(-n_rows // block), dtype=dtype, device=preds_S.device)
            difference = torch.empty((n_rows, length), dtype=dtype, device=preds_S.device) if needs_grad else None
            for k, start in enumerate(range(0, n_rows, block)):
                stop = min(n_rows, start + block)
                log_p_T, log_p_S, p_T = (b[: stop - start] for b in buffers)
                # p_T's buffer holds each side's scaled rows first: no output aliases its input.
                torch.log_softmax(_scaled_block(rows_T[start:stop], inv_tau, p_T), 1, out=log_p_T)
                torch.log_softmax(_scaled_block(rows_S[start:stop], inv_tau, p_T), 1, out=log_p_S)
                torch.exp(log_p_T, out=p_T)
                if difference is not None:
                    torch.exp(log_p_S, out=difference[start:stop]).sub_(p_T)
                # The difference is taken elementwise, so that a small KL between two similar maps
                # keeps its precision; each block's sum is one float, added up in float64.
                torch.dot(p_T.reshape(-1), log_p_T.sub_(log_p_S).reshape(-1), out=sums[k])
            kl = sums.double().sum()
        # Not saved for backward: it is neither an input nor an output, nobody else can write it.
        ctx.difference = difference
        return (kl * (scale * tau * tau)).to(dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        factor = grad_output.to(ctx.dtype) * ctx.factor  # the forward's compute dtype
        grad, ctx.difference = ctx.difference, None
        with torch.autocast(device_type=grad_output.device.type, enabled=False):
            if grad is not None:
                grad.mul_(factor)  # a 0-d tensor: no host synchronisation
            elif ctx.native:  # the same kernel again: the first backward's bits
                rows_S, rows_T = ctx.saved_tensors
                grad = _native_kernel(rows_S, rows_T).cwd_forward(rows_S, rows_T, ctx.tau, True)[1].mul_(factor)
            else:
                grad = _recomputed_gradient(*ctx.saved_tensors, ctx.tau, factor)
        return grad.view(ctx.input_shape).to(ctx.input_dtype), None, None, None


def _recomputed_gradient(rows_S: Tensor, rows_T: Tensor, tau: float, factor: Tensor) -> Tensor:
    """(p_S - p_T) * factor over the (N*C, H*W) rows, block by block, with the forward's very
    operations (exp of log_softmax), so that a second backward gives the first one's bits."""
    dtype = compute_dtype(rows_S)
    n_rows, length = rows_S.shape
    block = _rows_per_block(n_rows, length, rows_S.device)
    inv_tau = 1.0 / tau
    grad = torch.empty((n_rows, length), dtype=dtype, device=rows_S.device)
    buffers = torch.empty((2, block, length), dtype=dtype, device=rows_S.device)
    for start in range(0, n_rows if length else 0, block):
        stop = min(n_rows, start + block)
        log_p, p_T = (b[: stop - start] for b in buffers)
        torch.log_softmax(_scaled_block(rows_T[start:stop], inv_tau, p_T), 1, out=log_p)
        torch.exp(log_p, out=p_T)
        torch.log_softmax(_scaled_block(rows_S[start:stop], inv_tau, grad[start:stop]), 1, out=log_p)
        torch.exp(log_p, out=grad[start:stop]).sub_(p_T).mul_(factor)
    return grad


def channel_wise_divergence(preds_S: Tensor, preds_T: Tensor, tau: float = 1.0) -> Tensor:
    """The CWD loss (without a weight) of two (N, C, H, W) maps; no gradient reaches preds_T."""
    check_same_shape("cwd", preds_S, preds_T)
    n, c = preds_S.shape[:2]
    if not torch.is_grad_enabled():  # no graph (evaluation, logging): keep no gradient map either
        preds_S = preds_S.detach()
    return _ChannelWiseKL.apply(preds_S, preds_T.detach(), float(tau), 1.0 / (n * c))


@register("cwd", CWDParams)
class ChannelWiseDivergence(nn.Module):
    """Channel-wise distillation loss, a drop-in for MMRazor's ``ChannelWiseDivergence``.

    Args:
        tau: softmax temperature T (the paper uses 4; MMRazor's configs 1).
        loss_weight: the factor alpha the loss is multiplied by (paper: 3 on logits, 50 on the
            feature map; MMRazor: 5).

    Shapes: preds_S and preds_T are (N, C, H, W) and equal; returns a scalar.
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0):
        super().__init__()
        self.tau, self.loss_weight = float(tau), float(loss_weight)

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        return channel_wise_divergence(preds_S, preds_T, self.tau) * self.loss_weight

    def extra_repr(self) -> str:
        return f"tau={self.tau}, loss_weight={self.loss_weight}"
