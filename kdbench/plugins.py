"""Plugin modules named by a study or run file (``plugins: [my_kd.py, my_package.losses]``).

A plugin registers its own losses with ``kdbench.losses.register`` exactly as the built-in ones
do; importing it is all kdbench does. An entry ending in ``.py`` is a file, relative to the spec's
folder; anything else is an importable module name. Entries are returned resolved (files as
absolute paths), so a run file written by a launch finds the same plugin from any directory, on
any node that sees the same file system. A file is imported once per process, however often it
is named.

A plugin is code: importing it runs it. ``plan``, ``launch``, ``run`` and ``losses --plugin`` import
a study's plugins (the methods they name must be checked and trained); ``status``, ``collect`` and
``report`` read results only and import none (``not_imported``): a loss they do not know is taken
as written, and what a report needs from it each run recorded when it trained (final.json ``terms``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from kdbench.errors import UserError
from kdbench.schema import Checker, join

_NOT_IMPORTING: list[bool] = []   # non-empty inside ``not_imported``
_UNIMPORTED: set[str] = set()       # entries named but not imported there


@contextlib.contextmanager
def not_imported():
    """Within this block ``load`` resolves and checks plugin entries but imports none (a verb that
    only reads results runs no plugin code); ``unimported()`` says whether one was named."""
    _NOT_IMPORTING.append(True)
    try:
        yield
    finally:
        _NOT_IMPORTING.pop()
        if not _NOT_IMPORTING:
            _UNIMPORTED.clear()


def unimported() -> bool:
    """Whether a plugin was named and, in a ``not_imported`` block, left unimported: a method no
    loaded loss has may then be one of its losses."""
    return bool(_UNIMPORTED)


def _module_name(path: Path) -> str:
    """A stable module name for a plugin file: its stem and a hash of its absolute path."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    return f"kdbench_plugin_{path.stem}_{digest}"


def _import_file(path: Path) -> None:
    name = _module_name(path)
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def load(check: Checker, entries: object, path: str, base: Path) -> tuple[str, ...]:
    """Import every plugin in ``entries`` (key ``path`` of the file ``check`` reads); returns the
    resolved entries. A missing file, a module that does not import or that registers a name
    twice is one UserError naming the file, the key and the cause."""
    resolved = []
    for index, entry in enumerate(check.sequence(entries, path)):
        where = join(path, index)
        entry = check.string(entry, where)
        try:
            if entry.endswith(".py"):
                file = (base / entry).resolve()
                if not file.is_file():
                    raise check.fail(where, f"{entry!r}: no such file (plugin files are relative to {base})")
                _import(str(file), _import_file, file)
                resolved.append(str(file))
            else:
                _import(entry, importlib.import_module, entry)
                resolved.append(entry)
        except UserError as error:
            if str(error).startswith(check.source):
                raise
            raise check.fail(where, f"{entry!r}: {error}") from None
        except Exception as error:  # an import error, a syntax error: the plugin's own message
            raise check.fail(where, f"{entry!r} does not import: {_first_line(error)}") from None
    return tuple(resolved)


def _import(entry: str, run, argument) -> None:
    """``run(argument)``: the import, unless inside ``not_imported``, where it is only noted."""
    if _NOT_IMPORTING:
        _UNIMPORTED.add(entry)
    else:
        run(argument)


def load_entries(entries: Sequence[str]) -> None:
    """Import resolved entries (as ``load`` returns them), e.g. in a SLURM job before its run."""
    load(Checker("plugins"), list(entries), "plugins", Path.cwd())
