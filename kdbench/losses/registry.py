"""A plain name -> class registry for distillation losses.

``build("cwd", tau=4.0, loss_weight=3.0)`` returns a ready ``nn.Module``. Unknown names and
unknown parameters are rejected with the list of valid ones, so a typo in a study spec fails
before anything trains.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from kdbench.errors import UserError

_REGISTRY: dict[str, type] = {}


def register(name: str):
    """Class decorator: make a loss buildable as ``build(name, ...)``."""

    def decorator(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"loss name {name!r} is registered twice")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return decorator


def available() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> type:
    """The class registered under ``name``; a UserError listing the valid names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(
            f"unknown distillation method {name!r}{hint}; valid: {', '.join(available())}"
        ) from None


def parameters(name: str) -> dict[str, Any]:
    """The constructor parameters of a method and their defaults (``inspect.Parameter.empty``
    where there is none)."""
    signature = inspect.signature(get(name).__init__)
    return {
        p.name: p.default
        for p in list(signature.parameters.values())[1:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def check_params(name: str, params: dict[str, Any]) -> None:
    """Raise a UserError naming any parameter ``name`` does not take, or a required one missing."""
    valid = parameters(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise UserError(
            f"method {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(valid) or '(none)'}"
        )
    missing = [k for k, v in valid.items() if v is inspect.Parameter.empty and k not in params]
    if missing:
        raise UserError(f"method {name!r} needs parameter(s) {', '.join(missing)}")


def build(name: str, **params: Any):
    """Instantiate the loss registered as ``name`` with ``params`` after checking them."""
    check_params(name, params)
    return get(name)(**params)
