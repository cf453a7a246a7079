"""Distillation losses for dense prediction, one module per method.

Every loss is an ``nn.Module`` called as ``loss(preds_S, preds_T)`` (plus ``labels`` for the
methods whose ``needs_labels`` is True) that returns a scalar already multiplied by its
``loss_weight``. Build one by name::

    from kdbench import losses
    cwd = losses.build("cwd", tau=4.0, loss_weight=3.0)

This package imports without torch: names, parameters and validation come from the declarations
(kdbench.losses.params); a loss's module (and torch) is imported when it is built. A new method is
a module with a ``LossParams`` dataclass and a class decorated ``@register(name, params)``: in
this package (then listed in ``params.BUILTINS``) or in a plugin named by a spec. A plugin may
also register its class alone, ``@register(name)``: its parameters, defaults and types are then
read from its ``__init__`` (kdbench.losses.signature).
"""

from kdbench.losses.params import LossParams, choice, integer, non_negative, positive
from kdbench.losses.registry import available, build, check_params, declaration, get, origin, parameters, register

__all__ = [
    "LossParams",
    "available",
    "build",
    "check_params",
    "choice",
    "declaration",
    "get",
    "integer",
    "non_negative",
    "origin",
    "parameters",
    "positive",
    "register",
]
