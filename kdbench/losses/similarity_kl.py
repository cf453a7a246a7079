"""The KL divergence between row-wise softmaxes of two similarity matrices, the core that CIRKD's
two losses share (kdbench.losses.cirkd_pair and kdbench.losses.cirkd_memory).

For student rows ``A_S`` (R, D) against columns ``B_S`` (K, D), and the teacher's ``A_T``, ``B_T``
(any width D')::

    kl = sum_r KL(softmax(A_T[r] B_T^T / tau) || softmax(A_S[r] B_S^T / tau))

The textbook formulation keeps each (R, K) similarity matrix and its softmaxes for the backward;
for CIRKD's shapes that is the largest memory of the step (an (HW x HW) matrix per pair of images,
or 4,000 queue entries per labelled pixel). Here the forward goes through the rows in blocks and
works out the gradient there, ``dkl / d(A_S B_S^T) = (softmax_S - softmax_T) / tau``, folded at once
into the gradients of ``A_S`` and ``B_S`` (``G B_S`` and ``G^T A_S``); only those, of the inputs'
size, are kept, and each backward returns them scaled (a graph may be walked twice: the first
steps' check that every term reaches the student takes a gradient before the step's own backward).
No gradient reaches the teacher's rows.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Elements of one block's (rows x K) matrices: on a CPU 16 MiB of float32 (rows enough for the matrix
# products to run at full speed), on a GPU 64 MiB (few kernel launches). The working-memory estimate
# (params.CIRKDPairParams) uses the larger.
BLOCK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 24}


def compute_dtype(x: Tensor) -> torch.dtype:
    """float64 stays float64 (gradcheck); half precision is computed in float32."""
    return torch.promote_types(x.dtype, torch.float32)


def kl_and_gradients(a_s: Tensor, b_s: Tensor, a_t: Tensor, b_t: Tensor, tau: float, grad_a: bool = True,
                     grad_b: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(kl summed over the rows, its gradient for ``a_s`` when ``grad_a``, for ``b_s`` when
    ``grad_b``), computed block by block over the rows (no autograd). Each block's rows are divided by
    tau (not the columns: a queue's columns are many and stay uncopied)."""
    rows, columns = a_s.shape[0], b_s.shape[0]
    step = max(1, BLOCK_ELEMENTS.get(a_s.device.type, 1 << 22) // max(columns, 1))
    kl = a_s.new_zeros((), dtype=torch.float64)
    d_a = torch.empty_like(a_s) if grad_a else None
    d_b = torch.zeros_like(b_s) if grad_b else None
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        log_p_s = torch.log_softmax((a_s[start:stop] / tau) @ b_s.T, dim=1)
        log_p_t = torch.log_softmax((a_t[start:stop] / tau) @ b_t.T, dim=1)
        p_t = log_p_t.exp()
        kl += torch.sum(p_t * (log_p_t - log_p_s)).double()
        if d_a is None:
            continue
        g = log_p_s.exp_().sub_(p_t)  # tau * d kl / d logits, in log_p_s's storage
        torch.mm(g, b_s, out=d_a[start:stop]).div_(tau)
        if d_b is not None:
            d_b.addmm_(g.T, a_s[start:stop], alpha=1.0 / tau)
    return kl, d_a, d_b


class QueueKL(torch.autograd.Function):
    """``kl(A_S, B, A_T, B) * scale`` against fixed columns ``B`` (a memory queue): the gradient
    reaches ``A_S`` only."""

    @staticmethod
    def forward(ctx, a_s: Tensor, a_t: Tensor, columns: Tensor, tau: float, scale: float) -> Tensor:
        dtype = compute_dtype(a_s)
        kl, d_a, _ = kl_and_gradients(a_s.to(dtype), columns.to(dtype), a_t.to(dtype), columns.to(dtype), tau,
                                      grad_a=ctx.needs_input_grad[0])
        ctx.grad, ctx.scale, ctx.input_dtype = d_a, scale, a_s.dtype
        return (kl * scale).to(dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        grad = ctx.grad * (grad_output.to(ctx.grad.dtype) * ctx.scale)
        return grad.to(ctx.input_dtype), None, None, None, None


class PairKL(torch.autograd.Function):
    """``sum_{i, j} kl(S_i, S_j, T_i, T_j) * scale`` over every ordered pair of the batch's maps,
    ``S`` (B, P, C) and ``T`` (B, P, C'): the gradient reaches ``S`` through both sides of each
    similarity matrix."""

    @staticmethod
    def forward(ctx, s: Tensor, t: Tensor, tau: float, scale: float) -> Tensor:
        dtype = compute_dtype(s)
        s_c, t_c = s.to(dtype), t.to(dtype)
        needs_grad = ctx.needs_input_grad[0]
        total = s_c.new_zeros((), dtype=torch.float64)
        grad = torch.zeros_like(s_c) if needs_grad else None
        for i in range(s.shape[0]):
            for j in range(s.shape[0]):
                kl, d_a, d_b = kl_and_gradients(s_c[i], s_c[j], t_c[i], t_c[j], tau, needs_grad, needs_grad)
                total += kl
                if grad is not None:
                    grad[i] += d_a
                    grad[j] += d_b
        ctx.grad, ctx.scale, ctx.input_dtype = grad, scale, s.dtype
        return (total * scale).to(dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        grad = ctx.grad * (grad_output.to(ctx.grad.dtype) * ctx.scale)
        return grad.to(ctx.input_dtype), None, None, None
