"""MGD: masked generative distillation (Yang et al., "Masked Generative Distillation", ECCV 2022),
as MMRazor computes it: open-mmlab/mmrazor at commit 90c7af1fdf35a606a2fceaaeb4b6be2f0dac4eb7,
``mmrazor/models/architectures/connectors/mgd_connector.py`` (the student's side) and
``mmrazor/models/losses/mgd_loss.py`` (the loss).

The student's (N, C_S, H, W) map S goes through a 1x1 convolution ``align`` to the teacher's C_T
channels (only when C_S != C_T), is multiplied by a random mask that zeroes a share
``lambda_mgd`` of it, and a generation block ``generation`` (conv3x3 - ReLU - conv3x3, C_T
channels, padding 1) reconstructs the teacher's map T from what is left::

    M     = 1 where u <= 1 - lambda_mgd, else 0,   u ~ U[0, 1) of shape (N, 1, H, W), or
            (N, C_T, 1, 1) with ``mask_on_channel``
    loss  = loss_weight * alpha_mgd * sum (generation(align(S) * M) - T)^2 / N

``align`` and ``generation`` train with the student. They keep MMRazor's names (``align``,
``generation.0``, ``generation.2``), so a state dict of MMRazor's ``MGDConnector`` loads into this
module, and they are built at the first call, when the channel counts are known, or by such a
state dict when it is loaded first (built at the first call, they are initialised from a copy of
the generator's state, so that building them shifts no mask). The mask is drawn as MMRazor draws
it, ``torch.rand`` on the CPU's default generator at the call (so the same seed gives the same
mask as MMRazor's on any device, and a run draws the same masks under the same seed), and a new
mask at every call, as in MMRazor's connector, whether training or not; a ``mask`` passed to the
call replaces the draw.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from kdbench.losses.common import sum_of_squares
from kdbench.losses.params import MGDParams
from kdbench.losses.registry import register


def random_mask(shape: tuple[int, ...], lambda_mgd: float) -> Tensor:
    """A float mask of ``shape`` on the CPU: 0 where a uniform draw exceeds 1 - lambda_mgd, else 1."""
    return (torch.rand(shape) <= 1 - lambda_mgd).to(torch.get_default_dtype())


class _SquaredDistance(torch.autograd.Function):
    """sum (x - target)^2; keeps the difference only (not x), the gradient's direction."""

    @staticmethod
    def forward(ctx, x: Tensor, target: Tensor) -> Tensor:
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # half precision: in float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            difference = torch.sub(x.to(dtype), target.to(dtype))
            if ctx.needs_input_grad[0]:
                ctx.save_for_backward(difference)  # released as soon as the backward has used it
                ctx.input_dtype = x.dtype
            return sum_of_squares(difference)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        (difference,) = ctx.saved_tensors
        return (difference * (2 * grad_output.to(difference.dtype))).to(ctx.input_dtype), None


@register("mgd", MGDParams)
class MGDLoss(nn.Module):
    """MGD between a student map and a teacher map of the same batch and spatial size; the
    student's channels may differ (``align`` maps them).

    Args:
        alpha_mgd: the factor on the squared error summed per image (2e-5).
        lambda_mgd: the share of positions (or channels) masked, in [0, 1) (0.65).
        mask_on_channel: mask whole channels instead of positions.
        loss_weight: a further factor on the loss.
    """

    def __init__(self, alpha_mgd: float = 2e-5, lambda_mgd: float = 0.65, mask_on_channel: bool = False,
                 loss_weight: float = 1.0):
        super().__init__()
        self.alpha_mgd, self.lambda_mgd = float(alpha_mgd), float(lambda_mgd)
        self.mask_on_channel, self.loss_weight = bool(mask_on_channel), float(loss_weight)
        self.align: nn.Module | None = None
        self.generation: nn.Module | None = None

    def build_connectors(self, student_channels: int, teacher_channels: int, device=None,
                         dtype: torch.dtype | None = None) -> None:
        """``align`` (where the channel counts differ) and ``generation`` for these channel counts."""
        if student_channels != teacher_channels:
            self.align = nn.Conv2d(student_channels, teacher_channels, kernel_size=1).to(device=device, dtype=dtype)
        self.generation = nn.Sequential(
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=3, padding=1),
        ).to(device=device, dtype=dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A state dict loaded before the first call (MMRazor's ``MGDConnector``'s, or a
        checkpoint's) builds the layers its weights fit."""
        weight = state_dict.get(prefix + "generation.0.weight")
        if self.generation is None and weight is not None:
            align = state_dict.get(prefix + "align.weight")
            student_channels = weight.shape[0] if align is None else align.shape[1]
            self.build_connectors(student_channels, weight.shape[0], weight.device, weight.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, preds_S: Tensor, preds_T: Tensor, mask: Tensor | None = None) -> Tensor:
        """The loss; ``mask`` (of the drawn mask's shape) replaces the random draw where given."""
        if preds_S.dim() != 4 or preds_S.shape[0] != preds_T.shape[0] or preds_S.shape[2:] != preds_T.shape[2:]:
            raise ValueError(f"mgd: student {tuple(preds_S.shape)} and teacher {tuple(preds_T.shape)} maps differ "
                             "in batch or size (set resize: true)")
        if self.generation is None:
            dtype = torch.float64 if preds_S.dtype == torch.float64 else torch.float32
            # Initialised from a copy of the generator's state: building the layers at the first
            # call does not change the masks drawn after it (they are MMRazor's under one seed).
            with torch.random.fork_rng(devices=[]):
                self.build_connectors(preds_S.shape[1], preds_T.shape[1], preds_S.device, dtype)
        feature = self.align(preds_S) if self.align is not None else preds_S
        n, c, h, w = feature.shape
        if mask is None:
            mask = random_mask((n, c, 1, 1) if self.mask_on_channel else (n, 1, h, w), self.lambda_mgd)
        generated = self.generation(feature * mask.to(device=feature.device, dtype=feature.dtype))
        distance = _SquaredDistance.apply(generated, preds_T.detach())
        return distance * (self.alpha_mgd * self.loss_weight / n)

    def extra_repr(self) -> str:
        return (f"alpha_mgd={self.alpha_mgd}, lambda_mgd={self.lambda_mgd}, "
                f"mask_on_channel={self.mask_on_channel}, loss_weight={self.loss_weight}")
