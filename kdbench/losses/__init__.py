"""Distillation losses for dense prediction, one module per method.

Every loss is an ``nn.Module`` called as ``loss(preds_S, preds_T)`` (plus ``labels`` for the
methods whose ``needs_labels`` is True) that returns a scalar already multiplied by its
``loss_weight``. Build one by name::

    from kdbench import losses
    cwd = losses.build("cwd", tau=4.0, loss_weight=3.0)

Every module of this package is imported here so that its ``@register`` runs; adding a method is
adding a file.
"""

import importlib
import pkgutil

from kdbench.losses.registry import available, build, check_params, get, parameters, register

_INFRASTRUCTURE = {"registry", "common", "adapters"}
for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

from kdbench.losses.adapters import ChannelAdapter, align  # noqa: E402
from kdbench.losses.cwd import ChannelWiseDivergence, channel_wise_divergence  # noqa: E402

__all__ = [
    "ChannelAdapter",
    "ChannelWiseDivergence",
    "align",
    "available",
    "build",
    "channel_wise_divergence",
    "check_params",
    "get",
    "parameters",
    "register",
]
