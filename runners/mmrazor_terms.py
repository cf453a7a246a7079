"""An MMRazor ``ConfigurableDistiller`` as kdbench distill terms: one term per ``distill_losses``
entry, its student and teacher inputs read off ``loss_forward_mappings``.

A ``ModuleOutputs`` recorder's ``source`` is the location, and ``data_idx`` picks one element of
what the module returns (``neck[2]``: FPN level 2, as kdbench.locations reads it). A student
``ConvModuleConnector`` becomes an adapter (a 1x1 conv, with norm and act as it has); the
connectors of MGD and FBKD carry their loss's parameters (runners.mmrazor_losses).
"""

from __future__ import annotations

from kdbench.errors import UserError
from runners.mmrazor_losses import connector_params, loss_params


def _location(recorder: dict, data_idx, where: str) -> str:
    """The location a recorder's output comes from: ``source``, or ``source[data_idx]`` for one
    element of a module that returns several (kdbench.locations; an FPN neck's levels)."""
    kind = recorder.get("type")
    if kind != "ModuleOutputs":
        raise UserError(f"{where}: recorder type {kind!r} has no kdbench counterpart "
                        "(kdbench distils module outputs: ModuleOutputs)")
    source = recorder["source"]
    if data_idx is None:
        return source
    if not isinstance(data_idx, int) or isinstance(data_idx, bool) or data_idx < 0:
        raise UserError(f"{where}: data_idx must be an integer >= 0, got {data_idx!r}")
    return f"{source}[{data_idx}]"


def _connectors(distiller: dict) -> dict:
    """MMRazor 1.x names them ``connectors``; ``student_connectors`` is read as well."""
    return {**(distiller.get("student_connectors") or {}), **(distiller.get("connectors") or {})}


def _adapter(connector: dict, where: str) -> dict:
    """A ``ConvModuleConnector`` as a kdbench adapter: a 1x1 conv, with BN and ReLU as it has them."""
    if connector.get("kernel_size", 1) != 1:
        raise UserError(f"{where}: a ConvModuleConnector with kernel_size {connector['kernel_size']} has no "
                        "kdbench counterpart (kdbench's adapter is a 1x1 conv, with or without norm and act)")
    act = connector.get("act_cfg", {"type": "ReLU"})
    return {"norm": connector.get("norm_cfg") is not None, "act": act is not None}


def _side(spec: dict, side: str, method: str, distiller: dict, here: str) -> tuple[str, dict | None, dict]:
    """(location, adapter, loss parameters from its connector) of one input of a loss."""
    recorders = distiller.get(f"{side}_recorders", {})
    if spec.get("recorder") not in recorders:
        raise UserError(f"{here}: recorder {spec.get('recorder')!r} is not in distiller.{side}_recorders")
    location = _location(recorders[spec["recorder"]], spec.get("data_idx"), here)
    name = spec.get("connector")
    if name is None:
        return location, None, {}
    connector = _connectors(distiller).get(name)
    if connector is None:
        raise UserError(f"{here}: connector {name!r} is not in distiller.connectors")
    if connector.get("type") == "ConvModuleConnector":
        if side == "teacher":
            raise UserError(f"{here}: a teacher ConvModuleConnector has no kdbench counterpart (adapters are "
                            "the student's)")
        return location, _adapter(connector, here), {}
    return location, None, connector_params(connector, method, here)


def term(name: str, loss: dict, distiller: dict, source: str) -> dict:
    """The kdbench term of the ``distill_losses`` entry ``name``."""
    method, params = loss_params(name, loss, source)
    mapping = distiller.get("loss_forward_mappings", {}).get(name)
    if not mapping:
        raise UserError(f"{source}: model.distiller.loss_forward_mappings.{name}: missing")
    sides: dict[str, tuple] = {}
    for arg, spec in mapping.items():
        side = "student" if spec.get("from_student") else "teacher"
        here = f"{source}: model.distiller.loss_forward_mappings.{name}.{arg}"
        if side in sides:
            raise UserError(f"{here}: a second {side} input; kdbench's terms take one of each")
        sides[side] = _side(spec, side, method, distiller, here)
    if set(sides) != {"student", "teacher"}:
        raise UserError(f"{source}: model.distiller.loss_forward_mappings.{name}: needs a student and a "
                        "teacher input (from_student true and false)")
    student, teacher = sides["student"][2], sides["teacher"][2]
    clash = sorted(k for k in set(student) & set(teacher) if student[k] != teacher[k])
    if clash:
        raise UserError(f"{source}: model.distiller.loss_forward_mappings.{name}: the student's and the "
                        f"teacher's connectors differ in {', '.join(clash)}: kdbench's {method} has one value")
    short = name.removeprefix("loss_")
    found = {"name": short if short.startswith(method) else f"{method}_{short}", "method": method,
             "params": {**params, **teacher, **student}, "weight": loss.get("loss_weight", 1.0),
             "student_location": sides["student"][0], "teacher_location": sides["teacher"][0]}
    if sides["student"][1] is not None:
        found["adapter"] = sides["student"][1]
    if method == "pkd" and found["params"].get("resize_stu", True):
        # PKDLoss resizes the student's map bilinearly to the teacher's where they differ (a Swin Mask
        # R-CNN's FPN starts a level lower than RetinaNet's): kdbench's resize, the same interpolation.
        found["resize"] = True
    return found


def terms(distiller: dict, source: str) -> list[dict]:
    if distiller.get("type") != "ConfigurableDistiller":
        raise UserError(f"{source}: model.distiller.type {distiller.get('type')!r}: kdbench imports "
                        "ConfigurableDistiller")
    if distiller.get("distill_deliveries"):
        raise UserError(f"{source}: model.distiller.distill_deliveries: deliveries (the teacher's outputs "
                        "replacing the student's) have no kdbench counterpart")
    return [term(name, loss, distiller, source) for name, loss in (distiller.get("distill_losses") or {}).items()]
