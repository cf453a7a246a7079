"""MMRazor's distillation losses and connectors as kdbench methods and parameters.

Each MMRazor loss type maps to the kdbench method that computes the same value, its arguments
renamed; a connector that shapes the student's input to the loss either becomes a 1x1 adapter
(``ConvModuleConnector``) or belongs to the kdbench loss, which owns its trainable parts
(``MGDConnector`` -> ``mgd``'s align and generation; ``FBKD*Connector`` -> ``fbkd``'s non-local
blocks). Where MMRazor's arguments give a value kdbench's method does not compute, the import
is refused with one line saying why (a UserError, exit 2):

- ``KLDivergence`` (MMRazor's pixel-wise KD) is ``pi`` with its ``tau`` and its ``reduction``
  (default ``batchmean``: the summed KL divided by N, H x W times pi's default per-position
  mean); ``none`` returns a map, not a loss, and is refused.
- ``L2Loss`` is ``fitnets`` (mean squared difference) with ``normalize=False, div_element=True``.
"""

from __future__ import annotations

from kdbench import losses
from kdbench.errors import UserError


def _renamed(renames: dict[str, str]):
    def convert(loss: dict, where: str) -> dict:
        return {renames[k]: loss[k] for k in renames if k in loss}
    return convert


def _kl(loss: dict, where: str) -> dict:
    reduction = loss.get("reduction", "batchmean")  # MMRazor's default
    if reduction not in ("batchmean", "sum", "mean"):
        raise UserError(f"{where}: KLDivergence reduction {reduction!r} has no kdbench counterpart: pi takes "
                        "MMRazor's batchmean, sum and mean (a loss is one number)")
    return {**_renamed({"tau": "tau"})(loss, where), "reduction": reduction}


def _l2(loss: dict, where: str) -> dict:
    settings = {k: loss.get(k, default) for k, default in (("normalize", True), ("div_element", False),
                                                            ("dist", False))}
    if settings != {"normalize": False, "div_element": True, "dist": False}:
        raise UserError(f"{where}: L2Loss with {settings} has no kdbench method: fitnets is L2Loss with "
                        "normalize=False, div_element=True, dist=False (the mean squared difference)")
    return {}


def _dist(loss: dict, where: str) -> dict:
    # MMRazor's DISTLoss on a 4-D map: each class correlated across the batch at each position.
    return {**_renamed({"tau": "tau", "inter_loss_weight": "inter_loss_weight",
                        "intra_loss_weight": "intra_loss_weight"})(loss, where), "intra": "batch"}


# MMRazor loss type -> (kdbench method, its arguments -> kdbench parameters, the arguments it takes
# besides loss_weight).
LOSSES = {
    "ChannelWiseDivergence": ("cwd", _renamed({"tau": "tau"}), {"tau"}),
    "ATLoss": ("at", _renamed({}), set()),
    "FBKDLoss": ("fbkd", _renamed({"mask_l2_weight": "mask_weight", "channel_weight": "channel_weight",
                                   "spatial_weight": "spatial_weight", "nonloacl_weight": "nonlocal_weight"}),
                 {"mask_l2_weight", "channel_weight", "spatial_weight", "nonloacl_weight"}),
    "PKDLoss": ("pkd", _renamed({"resize_stu": "resize_stu"}), {"resize_stu"}),
    "MGDLoss": ("mgd", _renamed({"alpha_mgd": "alpha_mgd"}), {"alpha_mgd"}),
    "KLDivergence": ("pi", _kl, {"tau", "reduction", "teacher_detach"}),
    "L2Loss": ("fitnets", _l2, {"normalize", "mult", "div_element", "dist"}),
    "DISTLoss": ("dist", _dist, {"tau", "inter_loss_weight", "intra_loss_weight", "teacher_detach"}),
}

# What a student connector becomes: its arguments -> the loss's parameters ("adapter": kdbench's
# 1x1 adapter). The arguments that only size a layer (channels) are read off the maps by kdbench.
_FBKD_CONNECTOR = {"reduction": "reduction", "sub_sample": "sub_sample", "maxpool_stride": "maxpool_stride",
                   "spatial_T": "spatial_t", "channel_T": "channel_t"}
CONNECTORS = {
    "MGDConnector": ("mgd", {"lambda_mgd": "lambda_mgd", "mask_on_channel": "mask_on_channel"},
                     {"student_channels", "teacher_channels"}),
    "FBKDStudentConnector": ("fbkd", _FBKD_CONNECTOR, {"in_channels", "mode", "norm_cfg", "conv_cfg", "zeros_init"}),
    "FBKDTeacherConnector": ("fbkd", _FBKD_CONNECTOR, {"in_channels", "mode", "norm_cfg", "conv_cfg", "zeros_init"}),
}
_FIXED = {"mode": "dot_product", "norm_cfg": {"type": "BN"}, "conv_cfg": {"type": "Conv2d"}, "zeros_init": True}


def loss_params(name: str, loss: dict, source: str) -> tuple[str, dict]:
    """(kdbench method, parameters) of the ``distill_losses`` entry ``name``."""
    where = f"{source}: model.distiller.distill_losses.{name}"
    kind = loss.get("type")
    if kind not in LOSSES:
        raise UserError(f"{where}: MMRazor loss {kind!r} has no kdbench method (mapped: "
                        f"{', '.join(LOSSES)}; kdbench's methods: {', '.join(losses.available())})")
    method, convert, takes = LOSSES[kind]
    unknown = sorted(set(loss) - {"type", "loss_weight", *takes})
    if unknown:
        raise UserError(f"{where}: {', '.join(unknown)}: no such argument of MMRazor's {kind} "
                        f"(it takes loss_weight{''.join(', ' + k for k in sorted(takes))})")
    if loss.get("teacher_detach", True) is not True:
        raise UserError(f"{where}: teacher_detach=False trains the teacher: kdbench's teacher is frozen")
    return method, convert(loss, where)


def connector_params(connector: dict, method: str, where: str) -> dict:
    """The loss parameters a connector of a ``method`` term carries (its trainable parts are the loss's)."""
    kind = connector.get("type")
    if kind not in CONNECTORS or CONNECTORS[kind][0] != method:
        owners = ", ".join(f"{k} ({v[0]})" for k, v in CONNECTORS.items())
        raise UserError(f"{where}: connector {kind!r} on a {method} term has no kdbench counterpart (kdbench maps "
                        f"ConvModuleConnector to an adapter, and {owners})")
    _, renames, sizing = CONNECTORS[kind]
    unknown = sorted(set(connector) - {"type", "init_cfg", *renames, *sizing})
    if unknown:
        raise UserError(f"{where}: {kind} argument(s) {', '.join(unknown)} have no kdbench counterpart")
    for key, value in _FIXED.items():
        if key in sizing and connector.get(key, value) != value:
            raise UserError(f"{where}: {kind} {key}={connector[key]!r}: kdbench's {method} has {key}={value!r}")
    return {renames[k]: connector[k] for k in renames if k in connector}
