"""Where a distill term taps a model: a dotted module path, optionally indexing its output.

- ``decode_head.conv_seg``: the module's output (the first tensor, when it returns several);
- ``neck[2]``: element 2 of the tuple or list the module returns (MMRazor's ``data_idx``), e.g.
  one FPN level, including levels that no module of their own produces (Faster R-CNN's fifth,
  a max-pool inside ``FPN.forward``) and levels after the neck's own normalisation;
- ``neck[*]``: every element, each distilled as its own pair (as calls of a shared module are).
"""

from __future__ import annotations

import re

ALL = "*"
_INDEXED = re.compile(r"^(?P<module>[^\[\]]+)\[(?P<index>\d+|\*)\]$")


def split(location: str) -> tuple[str, int | str | None]:
    """(module path, index): None for the module's own output, an int, or ``ALL``. A location that
    ends in ``]`` indexes; one not of the form ``module[N]`` or ``module[*]`` raises ValueError.
    Anything else is a module path as written (the model check names it if no module has it)."""
    if not location.endswith("]"):
        return location, None
    match = _INDEXED.match(location)
    if match is None:
        raise ValueError(f"{location!r}: index an output as module[N] or module[*] (N >= 0)")
    index = match["index"]
    return match["module"], ALL if index == ALL else int(index)


def module_of(location: str) -> str:
    return split(location)[0]
