"""Small, explicit validation helpers for specs read from JSON or YAML.

Every error is one line naming the file, the key path and what is valid, e.g.
``studies/x.yaml: grid.tau[2]: must be a number > 0, got '4'``.
"""

from __future__ import annotations

import copy
import difflib
import math
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from kdbench.errors import Problems, UserError


class Checker:
    """Validates values under a file name, building key paths as it descends."""

    def __init__(self, source: str):
        self.source = str(source)

    def fail(self, path: str, message: str) -> UserError:
        where = f"{self.source}: {path}" if path else self.source
        return UserError(f"{where}: {message}", path, message)

    def mapping(self, value: Any, path: str, allowed: Iterable[str], required: Iterable[str] = ()) -> dict:
        """A dict whose keys are all in ``allowed`` and include ``required`` (every unknown and
        missing key reported at once)."""
        if not isinstance(value, Mapping):
            raise self.fail(path, f"must be a mapping, got {type(value).__name__}")
        allowed = list(allowed)
        problems = Problems()
        for key in value:
            if key not in allowed:
                hint, valid = did_you_mean(str(key), allowed), ", ".join(allowed) or "(none)"
                problems.add(self.fail(join(path, str(key)), f"unknown key{hint}; valid: {valid}"))
        for key in required:
            if key not in value:
                problems.add(self.fail(join(path, key), "is required"))
        problems.raise_any()
        return dict(value)

    def string(self, value: Any, path: str, choices: Iterable[str] | None = None, more: str = "") -> str:
        """A non-empty string, one of ``choices`` when given; ``more`` ends the error of a value
        outside them (how to add one)."""
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"must be a non-empty string, got {value!r}")
        if choices is not None:
            choices = list(choices)
            if value not in choices:
                raise self.fail(path, f"{value!r} is not valid{did_you_mean(value, choices)}; "
                                      f"valid: {', '.join(choices)}{more}")
        return value

    def printable(self, text: str, path: str, what: str = "a name") -> str:
        """``text``, which becomes a run name, a directory or report text: without control or
        bidirectional-override characters (U+202E shows the rest of a line reversed), which would
        make what is shown differ from what it is."""
        bad = next((c for c in text if not c.isprintable()), None)
        if bad is not None:
            code = f"U+{ord(bad):04X}" + (f" ({unicodedata.name(bad)})" if unicodedata.name(bad, "") else "")
            raise self.fail(path, f"{what}, {text!r}, holds {code}; names must be printable characters, "
                                  "without control or bidirectional-override ones")
        return text

    def integer(self, value: Any, path: str, minimum: int | None = None, maximum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(path, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.fail(path, f"must be <= {maximum}, got {value}")
        return value

    def number(self, value: Any, path: str, positive: bool = False, minimum: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(path, f"must be a finite number, got {value!r}")
        if positive and value <= 0:
            raise self.fail(path, f"must be a number > 0, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(path, f"must be >= {minimum}, got {value!r}")
        return float(value)

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"must be true or false, got {value!r}")
        return value

    def sequence(self, value: Any, path: str, min_length: int = 0) -> list:
        if not isinstance(value, (list, tuple)):
            raise self.fail(path, f"must be a list, got {type(value).__name__}")
        if len(value) < min_length:
            raise self.fail(path, f"must have at least {min_length} item(s)")
        return list(value)


def did_you_mean(value: str, valid: Iterable[str], n: int = 1) -> str:
    """`` (did you mean 'cwd'?)`` for a value close to a valid one (``n`` of them at most), else ''."""
    close = difflib.get_close_matches(value, list(valid), n=n, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def copy_data(value: Any) -> Any:
    """A deep copy of data read from JSON or YAML (dicts, lists, scalars), several times faster than
    ``copy.deepcopy``; anything else is deep-copied."""
    kind = type(value)
    if kind is dict:
        return {k: copy_data(v) for k, v in value.items()}
    if kind is list:
        return [copy_data(v) for v in value]
    if kind in (str, int, float, bool) or value is None:
        return value
    return copy.deepcopy(value)


def safe_name(text: str) -> bool:
    """Whether ``text`` is a non-empty name of letters, digits, '_', '-' and '.' only: safe as a
    directory name and in a batch script."""
    return bool(text) and all(c.isalnum() or c in "_-." for c in text)


def join(path: str, key: str | int) -> str:
    """``join("a.b", "c") == "a.b.c"``; ``join("a", 2) == "a[2]"``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key
