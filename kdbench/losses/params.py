"""What each distillation loss takes, declared without torch.

A loss's parameters are a frozen dataclass (a subclass of ``LossParams``): one field per
constructor parameter with its default, and a ``check`` that states the rules. Building the
dataclass validates the values, so a spec is checked, and ``kdbench losses`` lists the methods,
without importing torch. ``kdbench.losses.registry.register(name, params)`` ties a loss class to
its declaration; built-in and plugin losses are declared the same way, and the built-ins are
listed in ``BUILTINS`` (name -> module and declaration) so they are known before their module is
imported.

Class-level facts a trainer or preflight reads: the inputs a loss needs beyond the two maps
(``INPUTS``: ``needs_labels``, called with the segmentation labels; ``needs_boxes``, called with the
ground-truth boxes and the images' shapes), ``needs_adapter`` (student and teacher maps must have equal
channels; False where only positions are compared) and ``needs_heads`` (the loss is called with the two
detection heads and their inputs, kdbench.losses.head_inputs, instead of two maps; ``head_parts``
then names the submodules a head must have to serve it, ``head_kind`` says what such a head is).
One fact the reports read: ``kind``, what the loss
distils (``distils()`` for a loss whose kind depends on its parameters): ``channel-wise`` (a
distribution over the positions of each channel, as CWD) or ``spatial`` (each position, or
positions against each other, every channel alike: the other methods of the CWD paper's Table 2);
None where a loss declares neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from kdbench.errors import UserError
from kdbench.schema import did_you_mean

CHANNEL_WISE, SPATIAL = "channel-wise", "spatial"
KINDS = (CHANNEL_WISE, SPATIAL)

# The inputs a loss may declare it needs beyond the two maps, each a class attribute (False unless
# declared): the attribute -> (the task whose runs have that input, what it is, as errors name it).
# The trainer passes each declared input to the loss (runners/distill.py, DistillModel._loss_inputs):
# needs_labels as a third positional argument, ``labels`` (N, H, W); needs_boxes as the keywords
# ``boxes`` (one (n_i, 4) tensor of x1, y1, x2, y2 per image, in the input image's pixels) and
# ``image_shapes`` (one (h, w) per image: the resized image before the batch's padding).
INPUTS: dict[str, tuple[str, str]] = {
    "needs_labels": ("seg", "segmentation labels"),
    "needs_boxes": ("det", "ground-truth boxes"),
}


def positive(name: str, value: Any) -> float:
    """A temperature or scale: a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{name} must be a number > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def non_negative(name: str, value: Any) -> float:
    """A finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{name} must be a finite number >= 0, got {value!r}")
    if value < 0:
        raise UserError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def integer(name: str, value: Any, minimum: int | None = None) -> int:
    """An integer (not a bool), at least ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise UserError(f"{name} must be a positive integer, got {value!r}" if minimum == 1
                        else f"{name} must be >= {minimum}, got {value!r}")
    return value


def choice(name: str, value: Any, valid: tuple[str, ...]) -> str:
    """One of ``valid``."""
    if value not in valid:
        close = did_you_mean(value, valid) if isinstance(value, str) else ""
        raise UserError(f"unknown {name} {value!r}{close}; valid: {', '.join(valid)}")
    return value


@dataclass(frozen=True)
class LossParams:
    """The parameters every loss takes: its weight. Subclasses add theirs and a ``check``.

    Args:
        loss_weight: the factor the loss is multiplied by (alpha); 0 switches the term off but
            keeps it logged.
    """

    loss_weight: float = 1.0

    needs_labels: ClassVar[bool] = False
    needs_boxes: ClassVar[bool] = False
    needs_adapter: ClassVar[bool] = True
    needs_heads: ClassVar[bool] = False
    head_parts: ClassVar[tuple[str, ...]] = ()  # submodules the head must have (needs_heads)
    head_kind: ClassVar[str] = ""                # what such a head is, for the preflight's error
    kind: ClassVar[str | None] = None  # CHANNEL_WISE, SPATIAL or None (neither declared)

    def __post_init__(self) -> None:
        non_negative("loss_weight", self.loss_weight)
        self.check()

    def distils(self) -> str | None:
        """``channel-wise`` or ``spatial`` with these values, or None: the class's ``kind`` unless a
        loss's kind depends on its parameters (norm_divergence's ``norm``)."""
        return self.kind if self.kind in KINDS else None

    def check(self) -> None:
        """Raise a UserError naming the parameter when a value is not valid."""

    def values(self) -> dict[str, Any]:
        """The parameters as keyword arguments of the loss's constructor."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class CWDParams(LossParams):
    """Channel-wise distillation. ``tau``: the softmax temperature T over each channel's
    positions (the paper: 4; MMRazor's configs: 1)."""

    tau: float = 1.0
    kind: ClassVar[str | None] = CHANNEL_WISE

    def check(self) -> None:
        positive("tau", self.tau)


NORMS = ("channel", "spatial", "channel_mean", "none")
DIVERGENCES = ("kl", "mse")


@dataclass(frozen=True)
class NormDivergenceParams(LossParams):
    """One cell of the paper's normalisation x divergence ablation; ``tau`` applies to KL only."""

    norm: str = "channel"
    divergence: str = "kl"
    tau: float = 1.0

    def check(self) -> None:
        choice("norm", self.norm, NORMS)
        choice("divergence", self.divergence, DIVERGENCES)
        if self.divergence == "kl":
            positive("tau", self.tau)

    def distils(self) -> str | None:
        """``channel`` and ``channel_mean`` compare each channel over its positions (channel-wise),
        ``spatial`` the channels at each position; ``none`` imposes neither structure."""
        return {"channel": CHANNEL_WISE, "channel_mean": CHANNEL_WISE, "spatial": SPATIAL}.get(self.norm)


PI_REDUCTIONS = ("pixelmean", "batchmean", "sum", "mean")


@dataclass(frozen=True)
class PIParams(LossParams):
    """Pixel-wise KD: ``tau`` is the softmax temperature over classes (SKD and the CWD code: 1);
    the weight is SKD's lambda_pi = 10. ``reduction`` is what the summed KL is divided by:
    ``pixelmean`` (N*H*W, the default), or torch ``kl_div``'s ``batchmean`` (N), ``sum`` (1) and
    ``mean`` (N*C*H*W), as MMRazor's ``KLDivergence`` (mmrazor/models/losses/kl_divergence.py)
    applies them to the map."""

    kind: ClassVar[str | None] = SPATIAL

    loss_weight: float = 10.0
    tau: float = 1.0
    reduction: str = "pixelmean"

    def check(self) -> None:
        positive("tau", self.tau)
        choice("reduction", self.reduction, PI_REDUCTIONS)


@dataclass(frozen=True)
class ATParams(LossParams):
    """Attention transfer; the weight is CIRKD's 1e4 (the attention maps are unit vectors over
    the H*W positions, so the raw loss is of order 1 / (H*W)). Channel counts may differ."""

    kind: ClassVar[str | None] = SPATIAL

    loss_weight: float = 1e4
    needs_adapter: ClassVar[bool] = False


@dataclass(frozen=True)
class FitNetsParams(LossParams):
    """L2 mimicking of the adapted student map; the weight is CIRKD's 10."""

    kind: ClassVar[str | None] = SPATIAL

    loss_weight: float = 10.0


@dataclass(frozen=True)
class LocalParams(LossParams):
    """Local similarity over the 8-neighbourhood; no public weight exists, kdbench uses 1."""

    kind: ClassVar[str | None] = SPATIAL


@dataclass(frozen=True)
class PAParams(LossParams):
    """Pair-wise affinity (SKD, weight 1): the map is max-pooled to ``pool_scale`` of its size
    per side before the affinities are taken, in (0, 1]. Channel counts may differ."""

    kind: ClassVar[str | None] = SPATIAL

    pool_scale: float = 0.5
    needs_adapter: ClassVar[bool] = False

    def check(self) -> None:
        positive("pool_scale", self.pool_scale)
        if self.pool_scale > 1.0:
            raise UserError(f"pool_scale must be in (0, 1], got {self.pool_scale!r}")


@dataclass(frozen=True)
class IFVDParams(LossParams):
    """Intra-class feature variation (IFVD's weight 200; CIRKD uses 20); labels equal to
    ``ignore_index`` are left out. Channel counts may differ."""

    kind: ClassVar[str | None] = SPATIAL

    loss_weight: float = 200.0
    ignore_index: int = 255
    needs_labels: ClassVar[bool] = True
    needs_adapter: ClassVar[bool] = False

    def check(self) -> None:
        integer("ignore_index", self.ignore_index)


HO_PREPROCESS = ("softmax", "batchnorm", "none")


@dataclass(frozen=True)
class HOParams(LossParams):
    """Holistic (WGAN-GP critic) distillation at the official CWD code's and IFVD's settings (SKD's
    own code differs; docs/background.md#the-baselines-published-defaults): the student term's
    weight 0.001, the critic's ``d_weight`` 0.1 and ``gp_weight`` 10, its Adam learning rate
    ``lr_d`` 4e-4; ``in_channels`` None infers the score maps' channels at the first call,
    ``width`` is the critic's first conv width, ``preprocess`` its input (softmax, batchnorm or
    none)."""

    kind: ClassVar[str | None] = SPATIAL

    loss_weight: float = 0.001
    d_weight: float = 0.1
    gp_weight: float = 10.0
    lr_d: float = 4e-4
    in_channels: int | None = None
    width: int = 64
    preprocess: str = "softmax"

    def check(self) -> None:
        positive("d_weight", self.d_weight)
        non_negative("gp_weight", self.gp_weight)
        positive("lr_d", self.lr_d)
        if self.in_channels is not None:
            integer("in_channels", self.in_channels, minimum=1)
        integer("width", self.width, minimum=1)
        if self.preprocess not in HO_PREPROCESS:
            raise UserError(f"preprocess must be one of {HO_PREPROCESS}, got {self.preprocess!r}")


@dataclass(frozen=True)
class FBKDParams(LossParams):
    """Feature-based KD (Zhang & Ma, ICLR 2021) at the defaults MMRazor ships as its authors':
    the four terms' weights (attention-masked feature 7e-5, channel 4e-3, spatial 4e-3, non-local
    relation 7e-5), the attention temperatures 0.5, and the non-local blocks' ``reduction`` 2,
    ``sub_sample`` off and ``maxpool_stride`` 2. It adapts the student's channels itself."""

    mask_weight: float = 7e-5
    channel_weight: float = 4e-3
    spatial_weight: float = 4e-3
    nonlocal_weight: float = 7e-5
    spatial_t: float = 0.5
    channel_t: float = 0.5
    reduction: int = 2
    sub_sample: bool = False
    maxpool_stride: int = 2
    needs_adapter: ClassVar[bool] = False
    kind: ClassVar[str | None] = None  # its terms mix channel and spatial attention: neither alone

    def check(self) -> None:
        for name in ("mask_weight", "channel_weight", "spatial_weight", "nonlocal_weight"):
            non_negative(name, getattr(self, name))
        positive("spatial_t", self.spatial_t)
        positive("channel_t", self.channel_t)
        integer("reduction", self.reduction, minimum=1)
        integer("maxpool_stride", self.maxpool_stride, minimum=1)
        if not isinstance(self.sub_sample, bool):
            raise UserError(f"sub_sample must be true or false, got {self.sub_sample!r}")


def boolean(name: str, value: Any) -> bool:
    """True or false (not a number or a string)."""
    if not isinstance(value, bool):
        raise UserError(f"{name} must be true or false, got {value!r}")
    return value


@dataclass(frozen=True)
class PKDParams(LossParams):
    """PKD (Cao et al., NeurIPS 2022) at MMRazor's defaults (mmrazor/models/losses/pkd_loss.py):
    ``resize_stu`` resizes the student's map to the teacher's size where they differ (else the
    teacher's to the student's). Each channel is standardised over its positions and the batch:
    channel-wise."""

    resize_stu: bool = True
    kind: ClassVar[str | None] = CHANNEL_WISE

    def check(self) -> None:
        boolean("resize_stu", self.resize_stu)


@dataclass(frozen=True)
class MGDParams(LossParams):
    """Masked generative distillation (Yang et al., ECCV 2022) at MMRazor's defaults
    (mmrazor/models/losses/mgd_loss.py, architectures/connectors/mgd_connector.py): ``alpha_mgd``
    2e-5 on the summed squared error per image, ``lambda_mgd`` 0.65 the share of positions (with
    ``mask_on_channel``, of channels) masked, in [0, 1). It aligns the student's channels itself."""

    alpha_mgd: float = 2e-5
    lambda_mgd: float = 0.65
    mask_on_channel: bool = False
    needs_adapter: ClassVar[bool] = False
    kind: ClassVar[str | None] = SPATIAL

    def check(self) -> None:
        non_negative("alpha_mgd", self.alpha_mgd)
        if isinstance(self.lambda_mgd, bool) or not isinstance(self.lambda_mgd, (int, float)) \
                or not 0 <= self.lambda_mgd < 1:
            raise UserError(f"lambda_mgd must be a number in [0, 1), got {self.lambda_mgd!r}")
        boolean("mask_on_channel", self.mask_on_channel)


DIST_INTRA = ("pixels", "batch")


@dataclass(frozen=True)
class DISTParams(LossParams):
    """DIST (Huang et al., NeurIPS 2022) on class scores: ``tau`` the softmax temperature (1), the
    inter-class and intra-class relations' weights (1 and 1), and what the intra-class relation
    correlates each class over: ``pixels`` (every pixel of the batch, the authors' segmentation
    code) or ``batch`` (the images of the batch at each position, MMRazor's DISTLoss on a map)."""

    tau: float = 1.0
    inter_loss_weight: float = 1.0
    intra_loss_weight: float = 1.0
    intra: str = "pixels"

    def check(self) -> None:
        positive("tau", self.tau)
        non_negative("inter_loss_weight", self.inter_loss_weight)
        non_negative("intra_loss_weight", self.intra_loss_weight)
        choice("intra", self.intra, DIST_INTRA)

    def distils(self) -> str | None:
        """The inter-class relation compares the classes at each position (spatial), the
        intra-class relation over pixels each class over its positions (channel-wise): the one
        with a weight, neither when both have one (or with ``intra: batch``)."""
        if self.intra_loss_weight == 0:
            return SPATIAL
        if self.inter_loss_weight == 0 and self.intra == "pixels":
            return CHANNEL_WISE
        return None


@dataclass(frozen=True)
class CIRKDPairParams(LossParams):
    """CIRKD's mini-batch pixel-to-pixel term (winycg/CIRKD losses/cirkd_mini_batch.py @2d8ad0f):
    ``tau`` the similarity softmax's temperature (train_cirkd.py's --contrast-temperature, 0.1),
    ``pooling`` a 2x2 average pool first; the weight is --lambda-minibatch-pixel, 1. Channel
    counts may differ. Its time grows with the square of the map's positions, its memory with
    the square up to a block of rows, then with the map (``working_bytes``)."""

    tau: float = 0.1
    pooling: bool = False
    needs_adapter: ClassVar[bool] = False
    kind: ClassVar[str | None] = SPATIAL

    def check(self) -> None:
        positive("tau", self.tau)
        boolean("pooling", self.pooling)

    def working_bytes(self, student_shape: tuple, teacher_shape: tuple, batch_size: int) -> int:
        """Bytes the loss holds at its peak for (N, C, H, W) maps of these shapes at this batch size,
        in float32: five blocks of one pair's (rows x HW) similarity rows (kdbench.losses.similarity_kl:
        at most 2**24 elements each, or one row where a row is longer), the normalised maps and the
        student's gradient."""
        h, w = student_shape[-2:]
        if self.pooling:
            h, w = -(-h // 2), -(-w // 2)
        positions = h * w
        block = min(positions, max(1, (1 << 24) // max(positions, 1))) * positions
        maps = batch_size * positions * (2 * student_shape[1] + teacher_shape[1])
        return 4 * (5 * block + maps)


@dataclass(frozen=True)
class CIRKDMemoryParams(LossParams):
    """CIRKD's memory-based pixel-to-pixel and pixel-to-region terms (winycg/CIRKD
    losses/cirkd_memory.py), at train_cirkd.py's defaults: per-class queues of 20000 teacher pixel
    and 2000 region embeddings, ``pixel_contrast_size`` / ``region_contrast_size`` entries drawn
    per class (None: train_cirkd.py's 4096 // num_classes + 1 and 1024 // num_classes + 1),
    ``contrast_temperature`` 0.1, ``contrast_kd_temperature`` 1, ``lambda_memory_pixel`` and
    ``lambda_memory_region`` 0.1. ``num_classes`` None: the student's decode head's. Needs labels;
    trains a projector of its own."""

    num_classes: int | None = None
    pixel_memory_size: int = 20000
    region_memory_size: int = 2000
    pixel_contrast_size: int | None = None
    region_contrast_size: int | None = None
    contrast_temperature: float = 0.1
    contrast_kd_temperature: float = 1.0
    lambda_memory_pixel: float = 0.1
    lambda_memory_region: float = 0.1
    ignore_index: int = 255
    needs_labels: ClassVar[bool] = True
    needs_adapter: ClassVar[bool] = False
    kind: ClassVar[str | None] = SPATIAL

    def check(self) -> None:
        for name in ("num_classes", "pixel_contrast_size", "region_contrast_size"):
            if getattr(self, name) is not None:
                integer(name, getattr(self, name), minimum=1)
        integer("pixel_memory_size", self.pixel_memory_size, minimum=16)  # one update writes up to 16 pixels
        integer("region_memory_size", self.region_memory_size, minimum=1)
        positive("contrast_temperature", self.contrast_temperature)
        positive("contrast_kd_temperature", self.contrast_kd_temperature)
        non_negative("lambda_memory_pixel", self.lambda_memory_pixel)
        non_negative("lambda_memory_region", self.lambda_memory_region)
        integer("ignore_index", self.ignore_index)


@dataclass(frozen=True)
class AfDCDParams(LossParams):
    """Af-DCD (OSVAI/Af-DCD losses/ocmgd.py): masked feature reconstruction weighted ``lambda_fd``
    plus the omni-contrastive term weighted ``lambda_ctr``, at the values the authors' Cityscapes
    script train_scripts/cityscape/deeplabv3_r101_mbv2_r18_v2_ocmgd.sh sets (2e-6 and 0.005) and
    the loss's defaults: ``tau_ocd`` 0.07, ``M_ocd`` 16 channel groups, ``pool_size`` 4 (0: no
    pooling), ``patch_size`` 4x4, ``mask_ratio`` 0.75, ``rand_mask`` (else a fixed centre
    block), ``enhance_projector`` off. It adapts the student's channels itself."""

    lambda_fd: float = 2e-6
    lambda_ctr: float = 0.005
    tau_ocd: float = 0.07
    M_ocd: int = 16
    pool_size: int = 4
    patch_size: tuple = (4, 4)
    mask_ratio: float = 0.75
    rand_mask: bool = True
    enhance_projector: bool = False
    needs_adapter: ClassVar[bool] = False
    kind: ClassVar[str | None] = None  # reconstruction plus channel-group x position contrast: neither alone

    def check(self) -> None:
        non_negative("lambda_fd", self.lambda_fd)
        non_negative("lambda_ctr", self.lambda_ctr)
        positive("tau_ocd", self.tau_ocd)
        integer("M_ocd", self.M_ocd, minimum=1)
        integer("pool_size", self.pool_size, minimum=0)
        patch = self.patch_size
        if not (isinstance(patch, (list, tuple)) and len(patch) == 2) or \
                any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in patch):
            raise UserError(f"patch_size must be two positive integers [height, width], got {patch!r}")
        object.__setattr__(self, "patch_size", tuple(patch))
        non_negative("mask_ratio", self.mask_ratio)
        if self.mask_ratio >= 1:
            raise UserError(f"mask_ratio must be in [0, 1), got {self.mask_ratio!r}")
        boolean("rand_mask", self.rand_mask)
        boolean("enhance_projector", self.enhance_projector)


@dataclass(frozen=True)
class FGDParams(LossParams):
    """Focal and global distillation (Yang et al., CVPR 2022) at the defaults of the authors'
    ``FeatureLoss`` (yzd-v/FGD mmdet/distillation/losses/fgd.py): ``temp`` 0.5, the attention
    temperature; ``alpha_fgd`` 1e-3 on the foreground term, ``beta_fgd`` 5e-4 on the background
    term, ``gamma_fgd`` 1e-3 on the attention-mask term, ``lambda_fgd`` 5e-6 on the global relation
    term. Needs the ground-truth boxes; it aligns the student's channels itself."""

    temp: float = 0.5
    alpha_fgd: float = 0.001
    beta_fgd: float = 0.0005
    gamma_fgd: float = 0.001
    lambda_fgd: float = 0.000005
    needs_boxes: ClassVar[bool] = True
    needs_adapter: ClassVar[bool] = False
    kind: ClassVar[str | None] = None  # spatial and channel attention together: neither alone

    def check(self) -> None:
        positive("temp", self.temp)
        for name in ("alpha_fgd", "beta_fgd", "gamma_fgd", "lambda_fgd"):
            non_negative(name, getattr(self, name))


@dataclass(frozen=True)
class LDParams(LossParams):
    """Localization distillation (Zheng et al., CVPR 2022) as mmdet's LDHead computes it
    (mmdet/models/dense_heads/ld_head.py, configs/ld/ld_r18-gflv1-r101_fpn_1x_coco.py): the KL
    divergence of the teacher's and the student's box-edge distributions at temperature ``T`` 10,
    on the student's positive positions, weighted by the student's best class score; the weight
    is the config's ``loss_ld`` 0.25. Needs a distribution head such as GFL's."""

    loss_weight: float = 0.25
    T: float = 10.0
    needs_heads: ClassVar[bool] = True
    needs_adapter: ClassVar[bool] = False
    head_parts: ClassVar[tuple[str, ...]] = ("integral", "gfl_reg", "gfl_cls")
    head_kind: ClassVar[str] = "a head with box-edge distributions (integral, gfl_reg, gfl_cls), such as GFL's"

    def check(self) -> None:
        positive("T", self.T)
        if self.T < 1:
            raise UserError(f"T must be >= 1 (mmdet's KnowledgeDistillationKLDivLoss), got {self.T!r}")


@dataclass(frozen=True)
class CrossKDParams(LossParams):
    """CrossKD (Wang et al., CVPR 2024) on a GFL head, at the values of jbwang1997/CrossKD's
    configs/crosskd/crosskd_r50_gflv1_r101-2x-ms_fpn_1x_coco.py: the student's head features after
    ``reused_teacher_head_idx`` (3) of its stacked convs (before their activation) are brought to the
    teacher's per-channel statistics and run through the rest of the frozen teacher head; the
    cross-head class scores learn the teacher's by quality focal KD (``beta`` 1, ``cls_weight`` 1)
    and its box-edge distributions by KL at ``reg_T`` 1, summed over the bins (``reg_weight`` 4)."""

    reused_teacher_head_idx: int = 3
    cls_weight: float = 1.0
    beta: float = 1.0
    reg_weight: float = 4.0
    reg_T: float = 1.0
    needs_heads: ClassVar[bool] = True
    needs_adapter: ClassVar[bool] = False
    head_parts: ClassVar[tuple[str, ...]] = ("integral", "cls_convs", "reg_convs", "gfl_cls", "gfl_reg", "scales")
    head_kind: ClassVar[str] = "a GFL head (cls_convs, reg_convs, gfl_cls, gfl_reg, scales, integral)"

    def check(self) -> None:
        integer("reused_teacher_head_idx", self.reused_teacher_head_idx, minimum=0)
        non_negative("cls_weight", self.cls_weight)
        non_negative("beta", self.beta)
        non_negative("reg_weight", self.reg_weight)
        positive("reg_T", self.reg_T)

    def head_problem(self, student: dict, teacher: dict) -> str | None:
        """What keeps the two heads from serving this term, or None: ``student`` and ``teacher`` map
        each head's submodules to their first output shape (None where the probe did not see one)."""
        i = self.reused_teacher_head_idx
        convs = {role: sum(1 for name in parts if name.startswith("cls_convs.") and name.count(".") == 1)
                 for role, parts in (("student", student), ("teacher", teacher))}
        if i > min(convs.values()):
            return (f"reused_teacher_head_idx {i} is beyond the heads' stacked convs (student {convs['student']}, "
                    f"teacher {convs['teacher']}); valid: 0 to {min(convs.values())}")
        s, t = student.get(f"cls_convs.{i - 1}"), teacher.get(f"cls_convs.{i - 1}")
        if i > 0 and s and t and s[1] != t[1]:
            return (f"the student's head features after conv {i} have {s[1]} channels, the teacher's {t[1]}: "
                    "crosskd runs them through the teacher's head; give the student's head the teacher's feat_channels")
        return None


# The built-in losses: name -> (the module that registers its class, its declaration).
BUILTINS: dict[str, tuple[str, type[LossParams]]] = {
    "at": ("kdbench.losses.at", ATParams),
    "cwd": ("kdbench.losses.cwd", CWDParams),
    "fbkd": ("kdbench.losses.fbkd", FBKDParams),
    "fitnets": ("kdbench.losses.fitnets", FitNetsParams),
    "ho": ("kdbench.losses.ho", HOParams),
    "ifvd": ("kdbench.losses.ifvd", IFVDParams),
    "local": ("kdbench.losses.local", LocalParams),
    "norm_divergence": ("kdbench.losses.norm_divergence", NormDivergenceParams),
    "pa": ("kdbench.losses.pa", PAParams),
    "pi": ("kdbench.losses.pi", PIParams),
    "pkd": ("kdbench.losses.pkd", PKDParams),
    "mgd": ("kdbench.losses.mgd", MGDParams),
    "dist": ("kdbench.losses.dist", DISTParams),
    "cirkd_pair": ("kdbench.losses.cirkd_pair", CIRKDPairParams),
    "cirkd_memory": ("kdbench.losses.cirkd_memory", CIRKDMemoryParams),
    "afdcd": ("kdbench.losses.afdcd", AfDCDParams),
    "fgd": ("kdbench.losses.fgd", FGDParams),
    "ld": ("kdbench.losses.ld", LDParams),
    "crosskd": ("kdbench.losses.crosskd", CrossKDParams),
}
