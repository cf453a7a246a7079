"""Af-DCD, augmentation-free dense contrastive distillation (Fan et al., "Augmentation-free Dense
Contrastive Knowledge Distillation for Efficient Semantic Segmentation", NeurIPS 2023), as the
authors' code computes it: OSVAI/Af-DCD, ``losses/ocmgd.py`` (``OmniContrastiveFeatureLoss``) at
commit 5b086a7, with the weights of its Cityscapes script
``train_scripts/cityscape/deeplabv3_r101_mbv2_r18_v2_ocmgd.sh`` (``--lambda-fd 0.000002
--lambda-ctr 0.005``; the script's other options are train_ocmgd.py's defaults: a random mask, the
plain projector). Its sibling ``deeplabv3_r101_deeplabv3_r18_ocmgd.sh`` sets the same weights; its
``--rand_mask`` and ``--enhance_projector`` options are not the parser's spelling
(``--rand-mask``), so it does not run as published.

For a student map S (through ``align``, a 1x1 conv with bias, when its channels differ from the
teacher's C) and the teacher map T, both (B, C, H, W):

- masked feature reconstruction: a mask zeroes each position with probability ``mask_ratio``
  (``rand_mask``; otherwise the centre block [H/3, 2H/3) x [W/3, 2W/3)), the projector (conv3x3 -
  ReLU - conv3x3, or with ``enhance_projector`` the authors' two-branch block) makes
  ``F = projector(S * mask)``, and ``fd = sum (F - T)^2 / B``;
- omni-contrastive term: F and T are max-pooled by ``pool_size`` (0: not pooled) to (h, w), cut
  into patches of ``patch_size`` (ph, pw) and their channels into ``M_ocd`` groups; within a patch,
  the ph*pw*M tokens (a position and a channel group, C/M values each) of F are compared with those
  of T by the negative L1 distance ``sim``; each token a of F has one positive, the same token of T,
  and as negatives every token of T of another channel group (any position of the patch)::

      ctr = 1 / (h w B) * sum_a [ log(exp(sim[a, a] / tau) + sum_{b: group(b) != group(a)} exp(sim[a, b] / tau))
                                  - sim[a, a] / tau ]

- ``loss = loss_weight * (lambda_fd * fd + lambda_ctr * ctr)``.

``tau_ocd`` 0.07, ``M_ocd`` 16, ``pool_size`` 4, ``patch_size`` 4x4 and ``mask_ratio`` 0.75 are the
loss's defaults in ocmgd.py. ``align`` and the projector train with the student; their names are
the authors' (``align``, ``projetor``, spelt as they spell it), so their module's state dict loads
into this one. They are built at the first call, when the channel counts are known
(``build_connectors``). The mask is drawn from torch's global CPU generator as theirs is, so the
same seed gives the same mask. The negatives are selected by a mask of -inf instead of being
gathered into a new matrix (the same sum). The pooled map must divide into patches and C into
``M_ocd`` groups.

The authors clip the gradient norm of the loss's own parameters (``align`` and the projector) at
15 after every backward (train_ocmgd.py). kdbench has no per-loss clipping: a preset that follows
them sets the schedule's gradient clipping (``schedule.grad_clip: 15``, where available), which
clips every trained parameter, the student's included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.errors import UserError
from kdbench.losses.params import AfDCDParams
from kdbench.losses.registry import register


class EnhancedProjector(nn.Module):
    """The authors' ``EnhancedProjector``: two conv3x3-ReLU blocks in a row, each followed by a
    conv3x3 adaptor, the two adaptors' outputs averaged (their attribute names)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.block_2 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.adpator_1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.adpator_2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        first = self.block_1(x)
        return (self.adpator_1(first) + self.adpator_2(self.block_2(first))) / 2.0


def tokens(x: Tensor, patch: tuple[int, int], groups: int) -> Tensor:
    """(B, C, H, W) -> (B * patches, ph * pw * M, C / M): per patch, one token per (position in the
    patch, channel group), position-major."""
    b, c, h, w = x.shape
    ph, pw = patch
    x = x.reshape(b, groups, c // groups, h // ph, ph, w // pw, pw)
    return x.permute(0, 3, 5, 4, 6, 1, 2).reshape(b * (h // ph) * (w // pw), ph * pw * groups, c // groups)


def omni_contrastive(preds: Tensor, targets: Tensor, tau: float, groups: int, pool: int,
                     patch: tuple[int, int]) -> Tensor:
    """The omni-contrastive sum over every token, divided by the pooled map's h * w (not by B)."""
    if pool:
        preds, targets = F.max_pool2d(preds, pool), F.max_pool2d(targets, pool)
    _, c, h, w = preds.shape
    if h % patch[0] or w % patch[1] or c % groups or h == 0 or w == 0:
        raise UserError(f"afdcd: the map {tuple(preds.shape)} (after pool_size {pool}) does not divide into "
                        f"{patch[0]}x{patch[1]} patches and {groups} channel groups; set pool_size, patch_size "
                        f"or M_ocd to fit, or distil another location")
    # The cross-entropy in float64 at least: logits of L1 distances over tau are in the hundreds, where
    # float32's rounding of the log-sum-exp alone moves the gradient by 1e-4 of its size.
    distances = torch.cdist(tokens(preds, patch, groups), tokens(targets, patch, groups), p=1)
    logits = distances.to(torch.promote_types(distances.dtype, torch.float64)) / -tau
    length = logits.shape[-1]
    group = torch.arange(length, device=preds.device) % groups
    other = (group[:, None] == group[None, :]) & ~torch.eye(length, dtype=torch.bool, device=preds.device)
    positives = logits.diagonal(dim1=1, dim2=2)
    total = (torch.logsumexp(logits.masked_fill(other, float("-inf")), dim=2) - positives).sum() / (h * w)
    return total.to(preds.dtype)


@register("afdcd", AfDCDParams)
class AfDCDLoss(nn.Module):
    """Af-DCD's masked reconstruction and omni-contrastive terms. Parameters: see ``AfDCDParams``."""

    def __init__(self, lambda_fd: float = 2e-6, lambda_ctr: float = 0.005, tau_ocd: float = 0.07, M_ocd: int = 16,
                 pool_size: int = 4, patch_size: tuple = (4, 4), mask_ratio: float = 0.75, rand_mask: bool = True,
                 enhance_projector: bool = False, loss_weight: float = 1.0):
        super().__init__()
        self.lambda_fd, self.lambda_ctr = float(lambda_fd), float(lambda_ctr)
        self.tau_ocd, self.M_ocd, self.pool_size = float(tau_ocd), int(M_ocd), int(pool_size)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.mask_ratio, self.rand_mask, self.enhance_projector = float(mask_ratio), bool(rand_mask), enhance_projector
        self.loss_weight = float(loss_weight)
        self.align: nn.Module | None = None
        self.projetor: nn.Module | None = None

    def build_connectors(self, preds_S: Tensor, preds_T: Tensor) -> None:
        """``align`` (identity for equal channel counts) and the projector, on the maps' device."""
        cs, ct = preds_S.shape[1], preds_T.shape[1]
        self.align = nn.Conv2d(cs, ct, 1) if cs != ct else nn.Identity()
        self.projetor = EnhancedProjector(ct) if self.enhance_projector else nn.Sequential(
            nn.Conv2d(ct, ct, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(ct, ct, 3, padding=1))
        dtype = torch.promote_types(preds_S.dtype, torch.float32)
        self.align.to(device=preds_S.device, dtype=dtype)
        self.projetor.to(device=preds_S.device, dtype=dtype)

    def mask(self, b: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """(B, 1, H, W): 0 where masked. Random: drawn on the CPU generator, kept where the draw is at
        most 1 - mask_ratio; else the centre block is 0."""
        if self.rand_mask:
            return (torch.rand((b, 1, h, w)) <= 1 - self.mask_ratio).to(device=device, dtype=dtype)
        keep = torch.ones((b, 1, h, w), device=device, dtype=dtype)
        keep[:, :, h // 3:2 * h // 3, w // 3:2 * w // 3] = 0
        return keep

    def forward(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        if preds_S.dim() != 4 or preds_T.dim() != 4 or preds_S.shape[0] != preds_T.shape[0] \
                or preds_S.shape[2:] != preds_T.shape[2:]:
            raise UserError(f"afdcd: student {tuple(preds_S.shape)} and teacher {tuple(preds_T.shape)} maps must be "
                            "(N, C, H, W) of one batch and size (channels may differ); set resize: true")
        if self.projetor is None:
            self.build_connectors(preds_S, preds_T)
        student = self.align(preds_S)
        teacher = preds_T.detach().to(student.dtype)
        b, _, h, w = teacher.shape
        generated = self.projetor(student * self.mask(b, h, w, student.device, student.dtype))
        reconstruction = (generated - teacher).pow(2).sum() / b
        contrast = omni_contrastive(generated, teacher, self.tau_ocd, self.M_ocd, self.pool_size,
                                    self.patch_size) / b
        return self.loss_weight * (self.lambda_fd * reconstruction + self.lambda_ctr * contrast)
