"""Tapping intermediate outputs of a model by dotted module path, with forward hooks."""

from __future__ import annotations

import difflib

from torch import Tensor, nn

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


class Taps:
    """Forward hooks on a set of modules that collect every output while ``active``.

    A module called several times per forward (a detection head's conv shared by the FPN
    levels) yields one output per call, in call order.
    """

    def __init__(self, model: nn.Module, paths: list[str], role: str, stop_when_done: bool = False):
        self.paths = list(dict.fromkeys(paths))
        self.outputs: dict[str, list[Tensor]] = {p: [] for p in self.paths}
        self.active = False
        self.stop_when_done = stop_when_done
        self._handles = []
        self._calls_needed: dict[str, int] | None = None
        for path in self.paths:
            module = find_module(model, path, role)
            self._handles.append(module.register_forward_hook(self._hook(path)))

    def _hook(self, path: str):
        def hook(module, args, output):
            if not self.active:
                return
            if isinstance(output, (tuple, list)):
                output = output[0]
            self.outputs[path].append(output)
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
