"""Holistic distillation (HO) from structured knowledge distillation (SKD; Liu et al., CVPR 2019,
https://arxiv.org/abs/1903.04197): a WGAN-GP critic tells teacher score maps from student ones.

The module owns the critic ``D`` (strided 3x3 convs + LeakyReLU(0.2), then a global average ->
one score per sample) and D's own Adam optimiser. Two calls per training step::

    loss = ho(preds_S, preds_T)        # student term: -loss_weight * mean_n D(x(S))
    ho.discriminator_step(preds_S, preds_T)
        # D term:  d_weight * (mean D(x(S)) - mean D(x(T)) + gp_weight * GP), one Adam step
        # GP = mean_n (||grad_x D(x_hat)||_2 - 1)^2,  x_hat = a x(T) + (1 - a) x(S), a ~ U(0, 1)

``x(.)`` is the critic's input: ``preprocess="softmax"`` (default) feeds per-pixel class
probabilities; ``"batchnorm"`` feeds raw scores through a BatchNorm first layer, which is what the
SKD and CIRKD repositories actually ship (their ``preprocess_GAN_mode=1``); ``"none"`` raw scores.
The GP weight sits inside ``d_weight`` as in SKD (effective 0.1 * 10 = 1 on the GP term).

D's parameters get no gradient from the student term (its gradient in D's input is taken in the
forward, and the graph keeps no weight of D, so calling ``discriminator_step`` before that term's
``backward()`` is fine), and
``has_own_optimizer = True`` tells a trainer to build the student's optimiser from
``student_parameters()`` (always empty here), never from ``parameters()``, which includes D.
D's optimiser state travels in this module's ``state_dict`` (as its extra state), so a training
run resumed from a checkpoint continues the critic's Adam moments instead of restarting them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from kdbench.losses.common import check_same_shape
from kdbench.losses.params import HOParams
from kdbench.losses.registry import register


class _KeptGradient(torch.autograd.Function):
    """``value``, whose gradient in the critic's input ``grad`` was taken with it: the backward
    scales it, through the softmax when the critic saw ``softmax(x)`` (``probabilities``), into a
    new map each time (the dead-KD check takes one gradient before the step's own)."""

    @staticmethod
    def forward(ctx, x: Tensor, value: Tensor, grad: Tensor, probabilities: Tensor | None) -> Tensor:
        ctx.grad, ctx.probabilities, ctx.input_dtype = grad, probabilities, x.dtype
        return value.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        grad, probabilities = ctx.grad, ctx.probabilities
        scale = grad_output.to(grad.dtype)
        if probabilities is None:
            out = grad * scale
        else:  # softmax's backward is linear in the incoming gradient: scale its (new) output in place
            out = torch._softmax_backward_data(grad, probabilities, 1, grad.dtype).mul_(scale)
        return out.to(ctx.input_dtype), None, None, None


@register("ho", HOParams)
class HolisticDistillation(nn.Module):
    """Adversarial (WGAN-GP) holistic distillation of score maps.

    Args:
        loss_weight: weight of the student's adversarial term (SKD/CIRKD lambda_adv: 0.001).
        d_weight: weight of the critic's loss, GP included (SKD lambda_d: 0.1).
        gp_weight: gradient-penalty weight relative to the Wasserstein term (SKD: 10).
        lr_d: Adam learning rate of the critic, betas (0.9, 0.99) (SKD/CIRKD: 4e-4).
        in_channels: the score maps' channel count; None infers it at the first call.
        width: channels of the critic's first conv (doubled twice).
        preprocess: critic input, one of "softmax", "batchnorm", "none" (see module docstring).

    Shapes:
        preds_S, preds_T: (N, C, H, W) score maps (logits), equal shapes. Returns a scalar.
    """

    has_own_optimizer = True

    def __init__(self, loss_weight: float = 0.001, d_weight: float = 0.1, gp_weight: float = 10.0,
                 lr_d: float = 4e-4, in_channels: int | None = None, width: int = 64,
                 preprocess: str = "softmax"):
        super().__init__()
        self.loss_weight, self.d_weight = float(loss_weight), float(d_weight)
        self.gp_weight, self.lr_d = float(gp_weight), float(lr_d)
        self.preprocess = preprocess
        c = in_channels
        layers: list[nn.Module] = []
        if preprocess == "batchnorm":
            layers.append(nn.LazyBatchNorm2d() if c is None else nn.BatchNorm2d(c))
        layers.append(nn.LazyConv2d(width, 3, 2, 1) if c is None else nn.Conv2d(c, width, 3, 2, 1))
        # LeakyReLU in place: with a positive slope its backward reads the sign from its output, so
        # autograd keeps one map per layer instead of two (the GP's double backward included)
        layers += [nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(width, 2 * width, 3, 2, 1),
                   nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(2 * width, 4 * width, 3, 2, 1),
                   nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(4 * width, 1, 3, 1, 1), nn.AdaptiveAvgPool2d(1),
                   nn.Flatten(0)]
        self.discriminator = nn.Sequential(*layers)
        self._optimizer_d: torch.optim.Optimizer | None = None

    def student_parameters(self) -> list[nn.Parameter]:
        """Parameters that belong in the student's optimiser: none (D has its own)."""
        return []

    @property
    def optimizer_d(self) -> torch.optim.Optimizer:
        """The critic's Adam optimiser, created at first use (after lazy layers exist)."""
        if self._optimizer_d is None:
            self._optimizer_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr_d,
                                                 betas=(0.9, 0.99))
        return self._optimizer_d

    def _inputs(self, preds: Tensor) -> Tensor:
        """Score maps -> the critic's input in its parameter dtype; materialises lazy layers."""
        x = preds.to(torch.float64 if preds.dtype == torch.float64 else torch.float32)
        x = torch.softmax(x, dim=1) if self.preprocess == "softmax" else x
        first = self.discriminator[0]
        if isinstance(first, nn.modules.lazy.LazyModuleMixin) and first.has_uninitialized_params():
            training = self.discriminator.training
            with torch.no_grad():  # a dry run in eval mode: shapes only, no BN statistics
                self.discriminator.eval()(x[:1].detach())
            self.discriminator.train(training)
        return x.to(next(self.discriminator.parameters()).dtype)

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        check_same_shape("ho", preds_S, preds_T)
        with torch.autocast(device_type=preds_S.device.type, enabled=False):
            if not (torch.is_grad_enabled() and preds_S.requires_grad):
                return -self.discriminator(self._inputs(preds_S)).mean() * self.loss_weight
            # The critic's gradient in its input is taken now, so the graph keeps no critic weight:
            # a discriminator_step before this loss's backward() does no harm.
            x = self._inputs(preds_S.detach()).requires_grad_()
            value = -self.discriminator(x).mean() * self.loss_weight
            (grad,) = torch.autograd.grad(value, x)
            probabilities = x.detach() if self.preprocess == "softmax" else None
            return _KeptGradient.apply(preds_S, value.detach(), grad, probabilities)

    def discriminator_step(self, preds_S: Tensor, preds_T: Tensor) -> dict[str, float]:
        """One critic update on detached maps; returns {"loss_d": ..., "gp": ...}."""
        check_same_shape("ho", preds_S, preds_T)
        with torch.autocast(device_type=preds_S.device.type, enabled=False), torch.enable_grad():
            fake, real = self._inputs(preds_S.detach()), self._inputs(preds_T.detach())
            optimizer = self.optimizer_d
            alpha = torch.rand(real.shape[0], 1, 1, 1, dtype=real.dtype, device=real.device)
            mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(self.discriminator(mixed).sum(), mixed,
                                          create_graph=True)
            gp = (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()
            wasserstein = self.discriminator(fake).mean() - self.discriminator(real).mean()
            loss_d = self.d_weight * (wasserstein + self.gp_weight * gp)
            optimizer.zero_grad(set_to_none=True)
            loss_d.backward()
            optimizer.step()
        return {"loss_d": float(loss_d.detach()), "gp": float(gp.detach())}

    def get_extra_state(self) -> dict:
        return {"optimizer_d": None if self._optimizer_d is None else self._optimizer_d.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        saved = (state or {}).get("optimizer_d")
        if saved is not None:
            self.optimizer_d.load_state_dict(saved)

    def extra_repr(self) -> str:
        return (f"loss_weight={self.loss_weight}, d_weight={self.d_weight}, "
                f"gp_weight={self.gp_weight}, lr_d={self.lr_d}, preprocess={self.preprocess!r}")
