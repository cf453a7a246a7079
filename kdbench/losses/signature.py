"""A loss's parameter declaration read from its class's ``__init__`` signature, for a loss
registered with one decorator, ``@register("name")``, and no ``LossParams`` dataclass.

Each parameter of ``__init__`` (after ``self``) becomes a declared parameter with its default and
its type: the annotation, or the default's type where there is none. A spec holds numbers,
strings, booleans and null, so the types a parameter may have are ``float`` (any finite number),
``int``, ``bool``, ``str``, a ``Literal`` of such values, or one of these ``| None``. The class's
own attributes ``needs_labels``, ``needs_boxes`` (the inputs of ``params.INPUTS``), ``needs_adapter``,
``needs_heads`` (with ``head_parts`` and ``head_kind``) and ``kind`` carry over to the declaration.
``loss_weight`` must be one of the parameters: a term's weight is passed to the loss as it.

A parameter without a default, ``*args`` or ``**kwargs``, or a type a spec cannot hold is a
UserError naming the loss, its file and the parameter. Rules beyond the types (a range, a
relation between parameters) need a ``LossParams`` dataclass with a ``check``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

from kdbench.errors import UserError
from kdbench.losses.params import INPUTS, KINDS, LossParams, choice, integer

SPEC_TYPES = "float, int, bool, str, a Literal of such values, or one of these | None"


def _number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value!r}")


def _of_type(kind: type, label: str) -> Callable[[str, Any], None]:
    def rule(name: str, value: Any) -> None:
        if isinstance(value, bool) is not (kind is bool) or not isinstance(value, kind):
            raise UserError(f"{name} must be {label}, got {value!r}")

    return rule


_SCALAR_RULES: dict[Any, Callable[[str, Any], None]] = {
    float: _number,
    int: integer,
    bool: _of_type(bool, "true or false"),
    str: _of_type(str, "a string"),
}


def _literal_rule(values: tuple) -> Callable[[str, Any], None] | None:
    if not all(isinstance(v, (bool, int, float, str)) or v is None for v in values):
        return None
    if all(isinstance(v, str) for v in values):
        return lambda name, value: choice(name, value, values)

    def rule(name: str, value: Any) -> None:
        if not any(value == v and type(value) is type(v) for v in values):
            raise UserError(f"{name} must be one of {', '.join(map(repr, values))}, got {value!r}")

    return rule


def _rule(annotation: Any) -> Callable[[str, Any], None] | None:
    """The check for values of ``annotation``, or None when a spec cannot hold it."""
    if annotation in _SCALAR_RULES:
        return _SCALAR_RULES[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return _literal_rule(args)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        inner = _rule(rest[0]) if len(rest) == 1 else None
        if inner is None:
            return None
        return lambda name, value: None if value is None else inner(name, value)
    return None


def _file(cls: type) -> str:
    module = sys.modules.get(cls.__module__)
    return getattr(module, "__file__", None) or cls.__module__


def _parameters(cls: type, where: str) -> list[inspect.Parameter]:
    try:
        signature = inspect.signature(cls.__init__, eval_str=True)
    except Exception as error:  # an annotation that does not evaluate, a builtin __init__
        raise UserError(f"{where}: cannot read {cls.__name__}.__init__'s parameters: "
                        f"{type(error).__name__}: {error}") from None
    return list(signature.parameters.values())[1:]  # after self


def _field(parameter: inspect.Parameter, where: str) -> tuple[str, Any, Callable[[str, Any], None]]:
    """(name, default, rule) of one ``__init__`` parameter."""
    label = f"{where}: parameter {parameter.name!r}"
    if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
        raise UserError(f"{where}: *{parameter.name} in __init__; a spec can only set named parameters, "
                        "so name each one with its default")
    if parameter.default is parameter.empty:
        raise UserError(f"{label} has no default; give it one (a spec may leave any parameter out)")
    annotation = parameter.annotation
    if annotation is parameter.empty:
        if parameter.default is None:
            raise UserError(f"{label} has the default None and no annotation; annotate its type")
        annotation = type(parameter.default)
    rule = _rule(annotation)
    if rule is None:
        shown = getattr(annotation, "__name__", None) or str(annotation)
        raise UserError(f"{label} is of type {shown}, which a spec cannot hold; valid: {SPEC_TYPES}")
    return parameter.name, parameter.default, rule


def _class_facts(cls: type, where: str) -> dict[str, Any]:
    facts = {**{fact: getattr(cls, fact, False) for fact in INPUTS},
             "needs_adapter": getattr(cls, "needs_adapter", True), "kind": getattr(cls, "kind", None),
             "needs_heads": getattr(cls, "needs_heads", False), "head_parts": tuple(getattr(cls, "head_parts", ())),
             "head_kind": str(getattr(cls, "head_kind", ""))}
    for fact in (*INPUTS, "needs_adapter", "needs_heads"):
        if not isinstance(facts[fact], bool):
            raise UserError(f"{where}: {cls.__name__}.{fact} must be True or False, got {facts[fact]!r}")
    if facts["kind"] is not None and facts["kind"] not in KINDS:
        raise UserError(f"{where}: {cls.__name__}.kind must be one of {', '.join(map(repr, KINDS))} or None, "
                        f"got {facts['kind']!r}")
    return facts


def declaration_from_signature(cls: type, name: str) -> type[LossParams]:
    """A ``LossParams`` dataclass for the loss class ``cls`` registered as ``name``, read from its
    ``__init__``; a UserError naming the loss, its file and the parameter when one cannot be declared."""
    where = f"loss {name!r} ({_file(cls)})"
    fields = [_field(parameter, where) for parameter in _parameters(cls, where)]
    if "loss_weight" not in [field_name for field_name, _, _ in fields]:
        raise UserError(f"{where}: {cls.__name__}.__init__ has no parameter loss_weight; add one "
                        "(a term's weight is passed to the loss as loss_weight)")
    rules = {field_name: rule for field_name, _, rule in fields if field_name != "loss_weight"}

    def check(self: LossParams) -> None:
        for field_name, rule in rules.items():
            rule(field_name, getattr(self, field_name))

    declared = dataclasses.make_dataclass(
        f"{cls.__name__}Params", [(n, Any, dataclasses.field(default=d)) for n, d, _ in fields],
        bases=(LossParams,), frozen=True,
        namespace={"check": check, "__module__": cls.__module__, **_class_facts(cls, where)})
    try:
        declared()  # the defaults must pass their own rules
    except UserError as error:
        raise UserError(f"{where}: the default of {error}") from None
    return declared
