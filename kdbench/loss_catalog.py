"""What the registered distillation losses are and take, without importing torch.

Validating a study term needs the method names, their parameters and whether a set of values is
accepted (a temperature <= 0, an unknown norm, ...). ``kdbench.losses`` answers all three but
imports torch (over a second), so specs are validated through this module instead:

- names and parameters (with their defaults) are read from the source of ``kdbench/losses/*.py``
  (classes decorated ``@register("name")`` and their ``__init__``), with ``ast``;
- whether values are accepted is the answer of ``kdbench.losses.build`` itself, asked once per
  distinct (method, params, weight) and remembered in memory and on disk under ``$KDBENCH_CACHE``
  (default ``~/.cache/kdbench``) keyed by a hash of the losses' source, so a changed loss is asked again.

Anything the source scan cannot read with certainty (a default that is not a literal, a class
without its own ``__init__``) falls back to importing ``kdbench.losses``: the answers are always
the registry's.
"""

from __future__ import annotations

import ast
import atexit
import hashlib
import inspect
from functools import cache
from pathlib import Path
from typing import Any

from kdbench.errors import UserError

SOURCES = Path(__file__).resolve().parent / "losses"
CACHE_VERSION = 2
_answers: dict[str, str | None] = {}   # key -> None (accepted) or the UserError's message
_unsaved: dict[str, str | None] = {}
_save_at_exit: list[bool] = []
_loaded = False                        # the disk cache has been read into _answers


def _default(node: ast.expr | None) -> Any:
    return inspect.Parameter.empty if node is None else ast.literal_eval(node)


def _signature(init: ast.FunctionDef) -> dict[str, Any]:
    """``inspect.signature``'s keyword-callable parameters (self dropped) and their defaults."""
    args = init.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    params = {a.arg: _default(d) for a, d in list(zip(positional, defaults))[1:]  # [1:]: self
              if a not in args.posonlyargs}  # positional-only: not settable by keyword
    params.update({a.arg: _default(d) for a, d in zip(args.kwonlyargs, args.kw_defaults)})
    return params


@cache
def _sources() -> tuple[str, tuple[tuple[str, str], ...]]:
    """(hash of the losses' source, (file name, text) of each file): one read of the files, no
    parse, so a saved study expansion is checked without the scan."""
    digest = hashlib.sha256()
    texts = []
    for path in sorted(SOURCES.glob("*.py")):
        text = path.read_text()
        digest.update(path.name.encode() + b"\0" + text.encode() + b"\0")
        texts.append((path.name, text))
    return digest.hexdigest()[:20], tuple(texts)


@cache
def _scan() -> tuple[str, dict[str, dict[str, Any]] | None]:
    """(hash of the losses' source, {name: parameters}) or (hash, None) when the scan is unsure."""
    found: dict[str, dict[str, Any]] = {}
    sure = True
    source_digest, texts = _sources()
    for _, text in texts:
        if "register" not in text:
            continue
        registered = 0
        for node in ast.parse(text).body:  # registered classes are module-level (checked below)
            if not isinstance(node, ast.ClassDef):
                continue
            names = [d.args[0].value for d in node.decorator_list
                     if isinstance(d, ast.Call) and getattr(d.func, "id", None) == "register"
                     and d.args and isinstance(d.args[0], ast.Constant)]
            if not names:
                continue
            init = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
            try:
                params = _signature(init) if init is not None and not init.decorator_list else None
            except ValueError:  # a default that is not a literal
                params = None
            if params is None or names[0] in found:
                sure = False
            found[names[0]] = params or {}
            registered += 1
        if registered != text.count("@register("):  # one elsewhere (nested, aliased): ask the registry
            sure = False
    return source_digest, (found if sure else None)


def source_hash() -> str:
    """A hash of the losses' source: what the answers depend on (read, not parsed)."""
    return _sources()[0]


def _registry():
    from kdbench import losses  # imports torch

    return losses


def available() -> list[str]:
    """The registered method names, sorted (as ``kdbench.losses.available``)."""
    found = _scan()[1]
    return sorted(found) if found is not None else _registry().available()


def parameters(name: str) -> dict[str, Any]:
    """A method's constructor parameters and defaults (as ``kdbench.losses.parameters``)."""
    found = _scan()[1]
    if found is None or name not in found:
        return _registry().parameters(name)  # an unknown name: the registry's own error
    return dict(found[name])


def _cache_file() -> Path:
    from kdbench.cache import cache_root

    return cache_root() / "terms" / f"{source_hash()}.json"


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from kdbench import store

    saved = store.read_json(_cache_file())
    if isinstance(saved, dict) and saved.get("version") == CACHE_VERSION and isinstance(saved.get("answers"), dict):
        _answers.update({k: v for k, v in saved["answers"].items() if v is None or isinstance(v, str)})


def save() -> None:
    """Write the answers learnt in this process to the disk cache (also done at exit)."""
    if not _unsaved:
        return
    from kdbench import store
    from kdbench.cache import write_cache

    path = _cache_file()
    saved = store.read_json(path)
    answers = saved.get("answers", {}) if isinstance(saved, dict) and saved.get("version") == CACHE_VERSION else {}
    answers = {**(answers if isinstance(answers, dict) else {}), **_unsaved}
    text = store.dumps({"version": CACHE_VERSION, "answers": answers}) + "\n"
    if write_cache(path, text):  # a read-only cache only costs speed: the answers stay unsaved
        _unsaved.clear()


def check(method: str, params: dict, loss_weight: float) -> None:
    """Raise the UserError ``kdbench.losses.build(method, **params, loss_weight=...)`` raises, if any."""
    key = repr([method, params, loss_weight])  # the same values in another key order: asked again, no harm
    _load()
    if key not in _answers:
        try:
            _registry().build(method, **params, loss_weight=loss_weight)
            answer = None
        except UserError as error:
            answer = str(error)
        if not _save_at_exit:
            _save_at_exit.append(atexit.register(save) is save)
        _answers[key] = _unsaved[key] = answer
    if _answers[key] is not None:
        raise UserError(_answers[key])
