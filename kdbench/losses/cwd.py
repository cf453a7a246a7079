"""Channel-wise distillation (Shu et al., ICCV 2021, https://arxiv.org/abs/2011.13256).

Each channel of an (N, C, H, W) map becomes a distribution over its H*W positions,
``softmax(y_c / tau)``, and the student is pulled towards the teacher with
``KL(p_T || p_S)`` summed over positions, times ``tau**2``, averaged over the N*C channels.
This is exactly MMRazor's ``ChannelWiseDivergence`` (true KL, teacher entropy subtracted).

The forward and backward are fused in one ``autograd.Function``: the forward works row by row
in place and keeps only the gradient, ``(softmax(S/tau) - softmax(T/tau)) * tau / (N*C)``, so
autograd stores one map instead of the five or so that the textbook formulation keeps alive,
and the backward is a single scale.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from kdbench.losses.common import check_positive, check_same_shape, check_weight
from kdbench.losses.registry import register


def _compute_dtype(x: Tensor) -> torch.dtype:
    # float64 stays float64 (gradcheck); float32/float16/bfloat16 are computed in float32.
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _scaled_rows(x: Tensor, tau: float, dtype: torch.dtype) -> Tensor:
    """(N, C, H, W) -> (N*C, H*W) rows of x / tau in ``dtype``. The result is only read (by
    log_softmax), so at tau = 1 in the right dtype it is a view of the input, not a copy."""
    rows = x.reshape(x.shape[0] * x.shape[1], -1)
    if rows.dtype == dtype:  # .to() would alias the input: never scale it in place
        return rows if tau == 1.0 else rows * (1.0 / tau)
    return rows.to(dtype).mul_(1.0 / tau)


class _ChannelWiseKL(torch.autograd.Function):
    """sum_rows KL(softmax(T/tau) || softmax(S/tau)) * scale, with the gradient precomputed."""

    @staticmethod
    def forward(ctx, preds_S: Tensor, preds_T: Tensor, tau: float, scale: float) -> Tensor:
        dtype = _compute_dtype(preds_S)
        with torch.autocast(device_type=preds_S.device.type, enabled=False):
            # Peak: three (N*C, H*W) buffers (log p_T, log p_S, p_T); the scaled inputs are
            # temporaries freed as soon as their log-softmax exists.
            log_p_T = torch.log_softmax(_scaled_rows(preds_T, tau, dtype), dim=1)
            log_p_S = torch.log_softmax(_scaled_rows(preds_S, tau, dtype), dim=1)
            p_T = log_p_T.exp()
            # KL = sum p_T * (log p_T - log p_S), the difference taken elementwise (in log_p_T's
            # buffer) so that a small KL between two similar maps keeps its precision; dot() then
            # sums without another full-size temporary.
            kl = torch.dot(p_T.view(-1), log_p_T.sub_(log_p_S).view(-1))
            del log_p_T
            loss = kl * scale * tau * tau
            if ctx.needs_input_grad[0]:
                # d loss / d S = (p_S - p_T) * tau * scale, built in log_p_S's buffer.
                # d loss / d S = (p_S - p_T) * tau * scale: the difference is built in log_p_S's
                # buffer here, the constant is folded into the backward's single multiplication.
                ctx.save_for_backward(log_p_S.exp_().sub_(p_T))
                ctx.factor = tau * scale
                ctx.input_shape, ctx.input_dtype = preds_S.shape, preds_S.dtype
        return loss.to(preds_S.dtype if preds_S.dtype == torch.float64 else torch.float32)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        (difference,) = ctx.saved_tensors
        factor = grad_output.to(difference.dtype) * ctx.factor
        grad_S = (difference * factor).view(ctx.input_shape).to(ctx.input_dtype)
        return grad_S, None, None, None


def channel_wise_divergence(preds_S: Tensor, preds_T: Tensor, tau: float = 1.0) -> Tensor:
    """The CWD loss (without a weight) of two (N, C, H, W) maps; no gradient reaches preds_T."""
    check_same_shape("cwd", preds_S, preds_T)
    n, c = preds_S.shape[:2]
    return _ChannelWiseKL.apply(preds_S, preds_T.detach(), float(tau), 1.0 / (n * c))


@register("cwd")
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
        self.tau = check_positive("tau", tau)
        self.loss_weight = check_weight(loss_weight)

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        return channel_wise_divergence(preds_S, preds_T, self.tau) * self.loss_weight

    def extra_repr(self) -> str:
        return f"tau={self.tau}, loss_weight={self.loss_weight}"
