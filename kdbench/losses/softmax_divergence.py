"""A divergence between the softmaxes of two maps along one axis, worked through in cache-sized
blocks, for the losses that compare distributions along an axis other than CWD's rows
(pixel-wise KD, and the ``spatial`` and ``mse`` cells of the normalisation x divergence ablation).

The map is viewed as (outer, L, inner) with the softmax over L: (N, C, H*W) for a distribution
over the channels at each position, (N*C, H*W, 1) for one over the positions of each channel.
The divergence summed over every distribution is one of

- ``kl``: KL(softmax(T/tau) || softmax(S/tau)), from log_softmax (finite for any magnitude);
  its gradient in S/tau is p_S - p_T;
- ``mse``: sum (softmax(S) - softmax(T))**2; its gradient in S is 2 p_S (d - sum_L d p_S), d = p_S - p_T.

As CWD's ``_ChannelWiseKL``, the forward goes through the map block by block (a block's buffers
stay in cache, so main memory sees each element of S and T once) and writes the gradient's
direction into the one map it keeps; the first backward scales that map in place and hands it
out. A second backward through a retained graph recomputes it from the inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from kdbench.losses.common import compute_dtype

# Elements per block: three float32 buffers of 4 MiB each, which stay in the last-level cache. A
# block is at least one whole row, (L, inner), and, for rows of one distribution each, at least as
# many rows as threads: a softmax over the last axis runs its rows in parallel, one row on one thread.
_CPU_BLOCK = 1 << 20
_GPU_BLOCK = 1 << 22


def _blocks(outer: int, length: int, inner: int, device: torch.device, divergence: str) -> list[slice]:
    """The outer rows of each block: as many whole (contiguous) rows as fit the block size, at
    least one (a softmax over a middle axis is much slower on a strided part of a row), and with
    ``inner == 1`` at least one per thread. MSE takes blocks twice as large: its reference keeps
    more maps, and its blocks take more operations, each a parallel region."""
    target = (_CPU_BLOCK if device.type == "cpu" else _GPU_BLOCK) * (2 if divergence == "mse" else 1)
    step = max(1, target // max(length * inner, 1), torch.get_num_threads() if inner == 1 else 1)
    return [slice(o, min(outer, o + step)) for o in range(0, outer, step)]


def _scaled(block: Tensor, inv_tau: float, buffer: Tensor) -> Tensor:
    """block / tau in the compute dtype, in ``buffer`` (the block itself when nothing changes)."""
    if block.dtype == buffer.dtype and inv_tau == 1.0:
        return block
    return torch.mul(block, inv_tau, out=buffer) if block.dtype == buffer.dtype else buffer.copy_(block).mul_(inv_tau)


def _kl_block(s: Tensor, t: Tensor, inv_tau: float, buffers: Tensor, grad: Tensor | None) -> Tensor:
    log_p_T, log_p_S, p_T = buffers
    torch.log_softmax(_scaled(t, inv_tau, p_T), 1, out=log_p_T)
    torch.log_softmax(_scaled(s, inv_tau, p_T), 1, out=log_p_S)
    torch.exp(log_p_T, out=p_T)
    if grad is not None:
        torch.exp(log_p_S, out=grad).sub_(p_T)
    # The difference is taken elementwise (a small KL between similar maps keeps its precision)
    # and summed pairwise.
    return log_p_T.sub_(log_p_S).mul_(p_T).sum()


def _mse_block(s: Tensor, t: Tensor, inv_tau: float, buffers: Tensor, grad: Tensor | None) -> Tensor:
    p_S, p_T, work = buffers
    torch.softmax(_scaled(t, inv_tau, work), 1, out=p_T)
    torch.softmax(_scaled(s, inv_tau, work), 1, out=p_S)
    difference = torch.sub(p_S, p_T, out=p_T)  # p_S - p_T, in p_T's buffer
    total = torch.mul(difference, difference, out=work).sum()
    if grad is not None:  # p_S (d - sum_L d p_S); the factor 2 is applied with the backward's
        projection = torch.mul(difference, p_S, out=work).sum(dim=1, keepdim=True)
        torch.mul(difference.sub_(projection), p_S, out=grad)
    return total


_BLOCK_KERNELS = {"kl": _kl_block, "mse": _mse_block}


def _divergence(view_S: Tensor, view_T: Tensor, divergence: str, tau: float,
                with_grad: bool) -> tuple[Tensor, Tensor | None]:
    """(the divergence summed in float64, its gradient's direction or None) of two (outer, L, inner) views."""
    dtype = compute_dtype(view_S)
    outer, length, inner = view_S.shape
    if inner == 1:  # rows: the softmax over the last axis (more precise than over a middle one)
        view_S, view_T = view_S.reshape(outer, length), view_T.reshape(outer, length)
    blocks = _blocks(outer, length, inner, view_S.device, divergence)
    grad = torch.empty(view_S.shape, dtype=dtype, device=view_S.device) if with_grad else None
    sums = torch.empty(len(blocks), dtype=dtype, device=view_S.device)
    kernel, inv_tau = _BLOCK_KERNELS[divergence], 1.0 / tau
    largest = max((len(range(outer)[rows]) * length * inner for rows in blocks), default=0)
    storage = torch.empty(3 * largest, dtype=dtype, device=view_S.device)
    for k, index in enumerate(blocks):
        s, t = view_S[index], view_T[index]
        buffers = storage.view(3, -1)[:, : s.numel()].view(3, *s.shape)
        sums[k] = kernel(s, t, inv_tau, buffers, None if grad is None else grad[index])
    return sums.double().sum(), None if grad is None else grad.view(outer, length, inner)


class _SoftmaxDivergence(torch.autograd.Function):
    """divergence(S, T) summed over the distributions, times ``scale``; the gradient reaches S only."""

    @staticmethod
    def forward(ctx, view_S: Tensor, view_T: Tensor, divergence: str, tau: float, scale: float) -> Tensor:
        dtype = compute_dtype(view_S)
        needs_grad = ctx.needs_input_grad[0]
        with torch.autocast(device_type=view_S.device.type, enabled=False):
            total, grad = _divergence(view_S, view_T, divergence, tau, needs_grad)
        # d value / d S: tau * scale * direction for KL (the direction is in S / tau), 2 * scale for MSE.
        ctx.grad, ctx.factor = grad, scale * (tau if divergence == "kl" else 2.0)
        if needs_grad:
            ctx.save_for_backward(view_S, view_T)  # for a second backward only
            ctx.divergence, ctx.tau, ctx.input_dtype = divergence, tau, view_S.dtype
        return (total * scale * (tau * tau if divergence == "kl" else 1.0)).to(dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        grad, ctx.grad = ctx.grad, None
        if grad is None:  # a second backward: the first one handed out the kept map
            view_S, view_T = ctx.saved_tensors
            with torch.autocast(device_type=grad_output.device.type, enabled=False):
                grad = _divergence(view_S, view_T, ctx.divergence, ctx.tau, True)[1]
        grad.mul_(grad_output.to(grad.dtype) * ctx.factor)  # a 0-d tensor: no host synchronisation
        return grad.to(ctx.input_dtype), None, None, None, None


def softmax_divergence(view_S: Tensor, view_T: Tensor, divergence: str, tau: float = 1.0,
                       scale: float = 1.0) -> Tensor:
    """``divergence`` ("kl" or "mse") between softmax(view_S / tau) and softmax(view_T / tau)
    along axis 1 of two (outer, L, inner) views, summed over the distributions, times ``scale``
    (and tau**2 for KL). The result is in the compute dtype; no gradient reaches view_T."""
    if not torch.is_grad_enabled():  # no graph (evaluation, logging): keep no gradient map either
        view_S = view_S.detach()
    if view_S.numel() == 0:
        return (view_S.sum() * 0.0).to(compute_dtype(view_S))
    return _SoftmaxDivergence.apply(view_S, view_T.detach(), divergence, float(tau), float(scale))
