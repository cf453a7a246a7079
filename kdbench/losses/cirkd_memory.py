"""CIRKD's memory-based terms (Yang et al., "Cross-Image Relational Knowledge Distillation for
Semantic Segmentation", CVPR 2022), as the authors' code computes them: winycg/CIRKD,
``losses/cirkd_memory.py`` (``StudentSegContrast``) at commit 2d8ad0f, with the settings of its
``train_cirkd.py``.

The student map goes through a trainable projector to the teacher's D channels (conv1x1 - BN -
ReLU - conv1x1, no biases); both maps are L2-normalised over channels. The labels are resized
(nearest) to the maps' size; pixels labelled ``ignore_index`` are left out. Per class k the loss
keeps two queues of normalised teacher embeddings (buffers, so they are in the checkpoint): pixels
``Q_pix[k]`` (``pixel_memory_size`` entries) and regions ``Q_reg[k]`` (``region_memory_size``),
both starting as random unit vectors. Each training call first enqueues the batch's teacher map:

- per image and class present, the normalised mean embedding of the class's pixels, at the class's
  region pointer (which then advances by 1, cyclically);
- per image and class present with n pixels, K = min(n, 16) embeddings picked by a random
  permutation of range(n), written at the class's pixel pointer (or at the queue's last K places
  when they would not fit, the pointer then going back to 0). As in the authors' code, the
  permutation indexes the image's first n positions, not the class's pixels.

Then ``P`` entries per class are drawn (one random permutation of the queue length, shared by the
classes: ``pixel_contrast_size`` and ``region_contrast_size`` per class, train_cirkd.py's
4096 // num_classes + 1 and 1024 // num_classes + 1 by default), stacked class by class into
X_pix and X_reg, and for every labelled pixel's student and teacher embeddings s, t::

    pixel  = KL over rows of softmax(t X_pix^T / (ct * kt)) || softmax(s X_pix^T / (ct * kt)), batchmean, * kt^2
    region = the same against X_reg
    loss   = loss_weight * (lambda_memory_pixel * pixel + lambda_memory_region * region)

with ct = ``contrast_temperature`` (0.1) and kt = ``contrast_kd_temperature`` (1). The gradient
reaches the student (and the projector) only; the queues hold teacher embeddings.

Differences from the authors' code, none of which changes a value theirs computes on one
process: the projector's BN is ``BatchNorm2d`` (their ``SyncBatchNorm`` computes the same on one
process; their queue update gathers the teacher's keys from every process, which kdbench does not);
a batch without a labelled pixel gives 0 (theirs gives NaN, 0 times the mean of an empty tensor);
the projector and the queues are built at the first call, when the channel counts are known
(``build_connectors``), the queues in float32 (float64 for float64 maps); outside training the
queues are left as they are. Random draws come from torch's global generator, in the order the
authors' code makes them, so that the same seed gives the same draws. The KL is computed by
kdbench.losses.similarity_kl, in blocks of rows, without keeping the (pixels x entries) logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.errors import UserError
from kdbench.losses.params import CIRKDMemoryParams
from kdbench.losses.registry import register
from kdbench.losses.similarity_kl import QueueKL

PIXEL_UPDATE = 16  # pixels enqueued per image and class (the authors' pixel_update_freq)


def _contrast_size(value: int | None, total: int, num_classes: int) -> int:
    return value if value is not None else total // num_classes + 1


@register("cirkd_memory", CIRKDMemoryParams)
class CIRKDMemoryLoss(nn.Module):
    """CIRKD's memory-based pixel-to-pixel and pixel-to-region terms; called as
    ``loss(preds_S, preds_T, labels)`` with (N, H0, W0) labels. Parameters: see
    ``CIRKDMemoryParams``. The projector (``project_head``) trains with the student; its and the
    queues' names are the authors', so their module's state dict loads into this one."""

    def __init__(self, num_classes: int | None = None, pixel_memory_size: int = 20000,
                 region_memory_size: int = 2000, pixel_contrast_size: int | None = None,
                 region_contrast_size: int | None = None, contrast_temperature: float = 0.1,
                 contrast_kd_temperature: float = 1.0, lambda_memory_pixel: float = 0.1,
                 lambda_memory_region: float = 0.1, ignore_index: int = 255, loss_weight: float = 1.0):
        super().__init__()
        self.num_classes = num_classes
        self.pixel_memory_size, self.region_memory_size = int(pixel_memory_size), int(region_memory_size)
        self.contrast_sizes = (pixel_contrast_size, region_contrast_size)
        self.contrast_temperature = float(contrast_temperature)
        self.contrast_kd_temperature = float(contrast_kd_temperature)
        self.lambdas = (float(lambda_memory_pixel), float(lambda_memory_region))
        self.ignore_index, self.loss_weight = int(ignore_index), float(loss_weight)
        self.project_head: nn.Sequential | None = None

    def build_connectors(self, preds_S: Tensor, preds_T: Tensor) -> None:
        """The projector and the queues for these maps' channel counts, on their device (queues of
        random unit vectors, drawn from the global generator as the authors' constructor does)."""
        if self.num_classes is None:
            raise UserError("cirkd_memory: num_classes is not set (a study sets it from the student's decode "
                            "head; set params.num_classes)")
        cs, ct = preds_S.shape[1], preds_T.shape[1]
        device, dtype = preds_S.device, torch.promote_types(preds_S.dtype, torch.float32)
        self.project_head = nn.Sequential(nn.Conv2d(cs, ct, 1, bias=False), nn.BatchNorm2d(ct), nn.ReLU(True),
                                          nn.Conv2d(ct, ct, 1, bias=False)).to(device=device, dtype=dtype)
        k = self.num_classes
        regions = F.normalize(torch.randn(k, self.region_memory_size, ct), p=2, dim=2)
        pixels = F.normalize(torch.randn(k, self.pixel_memory_size, ct), p=2, dim=2)
        self.register_buffer("teacher_segment_queue", regions.to(device=device, dtype=dtype))
        self.register_buffer("segment_queue_ptr", torch.zeros(k, dtype=torch.long, device=device))
        self.register_buffer("teacher_pixel_queue", pixels.to(device=device, dtype=dtype))
        self.register_buffer("pixel_queue_ptr", torch.zeros(k, dtype=torch.long, device=device))

    @torch.no_grad()
    def enqueue(self, teacher: Tensor, labels: Tensor) -> None:
        """Write the batch's normalised teacher map (N, D, H, W) into the queues, image by image
        and class by class (ascending), labels (N, H, W) at the map's size. An image's region means
        are written together (they draw nothing); its pixels class by class, in the authors' order
        of random draws."""
        n, d = teacher.shape[:2]
        for image in range(n):
            rows = teacher[image].reshape(d, -1).T.contiguous()  # (HW, D): gathers of whole rows
            label = labels[image].reshape(-1)
            present = torch.unique(label[label != self.ignore_index])
            if present.numel() == 0:
                continue
            members = label[None, :] == present[:, None]  # (classes present, HW)
            counts = members.sum(dim=1)
            means = F.normalize((members.to(rows.dtype) @ rows) / counts[:, None].to(rows.dtype), p=2, dim=1)
            self.teacher_segment_queue[present, self.segment_queue_ptr[present]] = means
            self.segment_queue_ptr[present] = (self.segment_queue_ptr[present] + 1) % self.region_memory_size
            for lb, count in zip(present.tolist(), counts.tolist()):
                chosen = torch.randperm(count)[:min(count, PIXEL_UPDATE)]
                keys = F.normalize(rows[chosen.to(rows.device)], p=2, dim=1)
                ptr, size = int(self.pixel_queue_ptr[lb]), keys.shape[0]
                if ptr + size >= self.pixel_memory_size:
                    self.teacher_pixel_queue[lb, -size:] = keys
                    self.pixel_queue_ptr[lb] = 0
                else:
                    self.teacher_pixel_queue[lb, ptr:ptr + size] = keys
                    self.pixel_queue_ptr[lb] = (ptr + size) % self.pixel_memory_size

    def _labels_at(self, labels: Tensor, size: tuple) -> Tensor:
        resized = F.interpolate(labels[:, None].float(), size, mode="nearest")[:, 0].long()
        present = resized[resized != self.ignore_index]
        if present.numel() and (int(present.min()) < 0 or int(present.max()) >= self.num_classes):
            bad = int(present.max()) if int(present.max()) >= self.num_classes else int(present.min())
            raise UserError(f"cirkd_memory: label {bad} is outside 0..{self.num_classes - 1} (num_classes "
                            f"{self.num_classes}, ignore_index {self.ignore_index}); set params.num_classes")
        return resized

    def _entries(self, queue: Tensor, contrast: int) -> Tensor:
        """``contrast`` entries per class (one permutation of the queue length for every class),
        class by class: (num_classes * contrast, D)."""
        index = torch.randperm(queue.shape[1])[:contrast].to(queue.device)
        return queue[:, index].reshape(-1, queue.shape[2])

    def forward(self, preds_S: Tensor, preds_T: Tensor, labels: Tensor) -> Tensor:
        if preds_S.dim() != 4 or preds_T.dim() != 4 or preds_S.shape[0] != preds_T.shape[0] \
                or preds_S.shape[2:] != preds_T.shape[2:]:
            raise UserError(f"cirkd_memory: student {tuple(preds_S.shape)} and teacher {tuple(preds_T.shape)} maps "
                            "must be (N, C, H, W) of one batch and size (channels may differ); set resize: true")
        if self.project_head is None:
            self.build_connectors(preds_S, preds_T)
        teacher = F.normalize(preds_T.detach().to(self.teacher_pixel_queue.dtype), p=2, dim=1)
        student = F.normalize(self.project_head(preds_S), p=2, dim=1)
        labels = self._labels_at(labels, tuple(student.shape[2:]))
        keep = labels.reshape(-1) != self.ignore_index
        rows_S = student.permute(0, 2, 3, 1).reshape(-1, student.shape[1])[keep]
        rows_T = teacher.permute(0, 2, 3, 1).reshape(-1, teacher.shape[1])[keep]
        if self.training:
            self.enqueue(teacher, labels)
        if rows_S.shape[0] == 0:  # nothing labelled: no term (the authors' code gives NaN here)
            return student.sum() * 0.0
        k = self.num_classes
        pixel_size = _contrast_size(self.contrast_sizes[0], 4096, k)
        region_size = _contrast_size(self.contrast_sizes[1], 1024, k)
        pixels = self._entries(self.teacher_pixel_queue, pixel_size)
        regions = self._entries(self.teacher_segment_queue, region_size)
        kt = self.contrast_kd_temperature
        tau, scale = self.contrast_temperature * kt, kt * kt / rows_S.shape[0]
        if not torch.is_grad_enabled():
            rows_S = rows_S.detach()
        pixel = QueueKL.apply(rows_S, rows_T, pixels, tau, scale)
        region = QueueKL.apply(rows_S, rows_T, regions, tau, scale)
        return self.loss_weight * (self.lambdas[0] * pixel + self.lambdas[1] * region)
