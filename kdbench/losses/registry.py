"""The name -> loss registry: which methods exist, what they take, and how to build one.

``register(name, params)`` ties a loss class (an ``nn.Module`` called as ``loss(preds_S,
preds_T)``) to its parameter declaration (a ``LossParams`` dataclass, kdbench.losses.params);
built-in and plugin losses use it alike; ``register(name)`` alone reads the declaration from the
class's ``__init__`` signature (kdbench.losses.signature). Everything but ``get`` and ``build``
answers from the declarations, without importing torch: the built-ins are declared in
``params.BUILTINS`` and their modules are imported only when a loss is built.

Unknown names and parameters are rejected with the valid ones, so a typo in a study spec fails
before anything trains.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import sys
from typing import Any

from kdbench.errors import UserError
from kdbench.losses.params import BUILTINS, INPUTS, LossParams
from kdbench.losses.signature import declaration_from_signature

_CLASSES: dict[str, type] = {}                 # name -> loss class, once its module is imported
_DECLARED: dict[str, type[LossParams]] = {name: params for name, (_, params) in BUILTINS.items()}
_ORIGIN: dict[str, str] = {name: module for name, (module, _) in BUILTINS.items()}


def register(name: str, params: type[LossParams] | None = None):
    """Class decorator: make a loss buildable as ``build(name, ...)``, its parameters declared by
    ``params``, or without it by the class's ``__init__`` signature (kdbench.losses.signature).
    The class gets the inputs it needs (``needs_labels``, ``needs_boxes``: ``params.INPUTS``),
    ``needs_adapter`` and ``needs_heads`` from the declaration."""
    if params is not None and not (isinstance(params, type) and issubclass(params, LossParams)):
        raise TypeError(f"register({name!r}, ...): params must be a LossParams dataclass, got {params!r}")

    def decorator(cls: type) -> type:
        if _DECLARED.get(name, params) is not params or _CLASSES.get(name, cls) is not cls:
            where = _ORIGIN.get(name, "another module")
            raise UserError(f"loss {name!r} is registered twice (already by {where}); choose another name")
        declared = params or declaration_from_signature(cls, name)
        _DECLARED[name] = declared
        module = sys.modules.get(cls.__module__)
        _ORIGIN.setdefault(name, getattr(module, "__file__", None) or cls.__module__)  # a plugin: its file
        _CLASSES[name] = cls
        cls.registry_name = name
        cls.params = declared
        for needed in INPUTS:
            setattr(cls, needed, getattr(declared, needed))
        cls.needs_adapter = declared.needs_adapter
        cls.needs_heads = declared.needs_heads
        return cls

    return decorator


def available() -> list[str]:
    """The registered method names (built-ins and loaded plugins), sorted."""
    return sorted(_DECLARED)


def declaration(name: str) -> type[LossParams]:
    """The parameter declaration of ``name``; a UserError listing the valid names otherwise."""
    try:
        return _DECLARED[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), _DECLARED, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"unknown distillation method {name!r}{hint}; valid: {', '.join(available())}") from None


def parameters(name: str) -> dict[str, Any]:
    """A method's parameters and their defaults: its own, then ``loss_weight``."""
    fields = sorted(dataclasses.fields(declaration(name)), key=lambda field: field.name == "loss_weight")
    return {field.name: field.default for field in fields}


def origin(name: str) -> str:
    """Where ``name`` is defined: a built-in's module, or a plugin's file."""
    declaration(name)
    return _ORIGIN[name]


def check_params(name: str, params: dict[str, Any]) -> LossParams:
    """The validated parameters of ``name``: unknown parameters and bad values raise a UserError
    naming them and what is valid."""
    valid = parameters(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise UserError(f"method {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                        f"valid: {', '.join(valid)}")
    return declaration(name)(**params)


def get(name: str) -> type:
    """The loss class registered as ``name`` (imports a built-in's module, and so torch)."""
    declaration(name)
    if name not in _CLASSES:
        importlib.import_module(_ORIGIN[name])
    return _CLASSES[name]


def build(name: str, **params: Any):
    """Instantiate the loss registered as ``name`` with ``params`` after validating them."""
    checked = check_params(name, params)
    return get(name)(**checked.values())
