"""Tapping intermediate outputs of a model by location (kdbench.locations: a dotted module path,
optionally indexing its tuple output), with forward hooks."""

from __future__ import annotations

import difflib

from torch import Tensor, nn

from kdbench import locations
from kdbench.errors import UserError


class StopForward(Exception):
    """Raised by a hook once every tapped output of a model is captured: the rest of the
    forward pass (e.g. a teacher's head when only its backbone is distilled) is skipped."""


def find_module(model: nn.Module, path: str, role: str) -> nn.Module:
    """The submodule at ``path``; an error naming the close matches when there is none."""
    modules = dict(model.named_modules())
    if path in modules and path:
        return modules[path]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(path, names, n=4, cutoff=0.5)
    if not close:  # e.g. a recorder prefix: suggest modules whose name ends like the path
        tail = path.split(".")[-1]
        close = [n for n in names if n.endswith(tail)][:4]
    hint = f"; close matches: {', '.join(close)}" if close else ""
    top = ", ".join(n for n in names if "." not in n)
    raise UserError(f"{role} location {path!r} is not in the model{hint} (top-level modules: {top})")


def select(output, location: str, role: str) -> list[Tensor]:
    """What ``location`` takes from one call's ``output``: the first tensor, element N, or every
    element (``[*]``: one entry each, as if each were a call of its own)."""
    index = locations.split(location)[1]
    if index is None:
        return [output[0] if isinstance(output, (tuple, list)) else output]
    if not isinstance(output, (tuple, list)):
        raise UserError(f"{role} location {location!r}: {locations.module_of(location)} returns one tensor, "
                        f"not a tuple to index; drop the [{index}]")
    if index == locations.ALL:
        return list(output)
    if index >= len(output):
        raise UserError(f"{role} location {location!r}: {locations.module_of(location)} returns "
                        f"{len(output)} outputs (valid: [0] to [{len(output) - 1}], or [*])")
    return [output[index]]


class Taps:
    """Forward hooks on a set of modules that collect every output while ``active``.

    A module called several times per forward (a detection head's conv shared by the FPN
    levels) yields one output per call, in call order; ``module[*]`` yields each element of its
    tuple output the same way.
    """

    def __init__(self, model: nn.Module, paths: list[str], role: str, stop_when_done: bool = False):
        self.paths = list(dict.fromkeys(paths))
        self.outputs: dict[str, list[Tensor]] = {p: [] for p in self.paths}
        self.active = False
        self.stop_when_done = stop_when_done
        self._handles = []
        self._calls_needed: dict[str, int] | None = None
        self.role = role
        for path in self.paths:
            module = find_module(model, locations.module_of(path), role)
            self._handles.append(module.register_forward_hook(self._hook(path)))

    def _hook(self, path: str):
        def hook(module, args, output):
            if not self.active:
                return
            self.outputs[path].extend(select(output, path, self.role))
            if self.stop_when_done and self._calls_needed is not None and all(
                len(self.outputs[p]) >= n for p, n in self._calls_needed.items()
            ):
                raise StopForward

        return hook

    def __enter__(self) -> Taps:
        for values in self.outputs.values():
            values.clear()
        self.active = True
        return self

    def __exit__(self, *exc) -> bool:
        self.active = False
        if self._calls_needed is None and exc[0] is None:
            # The first complete pass tells how many calls each tapped module makes.
            self._calls_needed = {p: len(v) for p, v in self.outputs.items()}
        return exc[0] is StopForward

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
