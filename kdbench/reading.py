"""Reading the files people write: study specs (YAML) and run files (JSON).

Both readers return plain data (dicts, lists, scalars) and refuse, in one line naming the file, the
key path and the line, what a typo or a hostile file can hide in otherwise valid YAML or JSON:

- a YAML alias (``*name``): ``yaml.safe_load`` builds aliases by reference, so a few hundred bytes
  of nested aliases stand for billions of values, which the first walk over them (validation, the
  run id's canonical JSON) builds in memory. No spec needs one: ``base:`` and ``defaults:`` share
  settings;
- a key given twice in one mapping: YAML and JSON keep the last one without a word, so half of a
  grid (a second ``grid:`` block) could vanish;
- nesting deeper than ``MAX_DEPTH`` levels: no spec comes near it, and the recursive readers and
  checks would run out of stack on it.

The file itself is read by ``read_spec_text``: a regular file of at most ``SPEC_CAP`` bytes (1 MiB),
so ``kdbench plan /dev/zero`` or a FIFO named as a study is one line, never a hang or a memory
blow-up (kdbench.safeio).
"""

from __future__ import annotations

import contextlib
import json
import json.decoder
import json.scanner
from pathlib import Path
from typing import Any

import yaml

from kdbench.errors import UserError
from kdbench.safeio import SPEC_CAP, UnsafeFile, read_capped
from kdbench.schema import join

MAX_DEPTH = 64              # a spec's deepest key path is about 10 (base.student.overrides.model...)


def read_spec_text(path: str | Path, what: str, root: str | Path | None = None) -> str:
    """The text of a spec file (``what``: ``the study``, ``the run file``), read bounded; with
    ``root``, never through a link out of that folder. Anything else is one UserError naming the
    file and why."""
    try:
        return read_capped(path, SPEC_CAP, root).decode()
    except UnsafeFile as error:
        raise UserError(f"{path}: cannot read {what}: {error.reason}") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read {what} ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: cannot read {what}: not UTF-8 text (byte {error.start})") from None


def read_yaml(text: str, source: str) -> Any:
    """The data of one YAML document, read with the safe loader (no Python tags)."""
    loader = _YamlLoader(text, source)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserError(f"{source}: not valid YAML{where}: {problem}") from None
    finally:
        loader.dispose()


def _where(source: str, path: str, line: int) -> str:
    return f"{source}: {path or '(top level)'} (line {line})"


class _YamlLoader(yaml.SafeLoader):
    """The safe loader, refusing aliases, repeated keys and deep nesting while it composes the
    document's nodes (before anything is built from them)."""

    def __init__(self, text: str, source: str):
        super().__init__(text)
        self.source = source
        self.paths = [""]       # the key path of each node being composed, the innermost last

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        path = self.paths[-1]   # a mapping's key (index None) is shown at its mapping's path
        if isinstance(index, int):
            path = join(path, index)
        elif isinstance(index, yaml.ScalarNode):
            path = join(path, str(index.value))
        start = self.peek_event().start_mark.line + 1
        if self.check_event(yaml.AliasEvent):
            raise UserError(f"{_where(self.source, path, start)}: a YAML alias (*{self.peek_event().anchor}) is "
                            "not accepted (nested aliases can stand for billions of values): write the value out")
        if len(self.paths) > MAX_DEPTH:
            raise UserError(f"{_where(self.source, path, start)}: nested more than {MAX_DEPTH} levels deep")
        self.paths.append(path)
        try:
            return super().compose_node(parent, index)
        finally:
            self.paths.pop()

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], int] = {}     # (tag, text) of each key -> its line
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue        # a list or mapping as a key: never valid in a spec, and refused later
            line = key.start_mark.line + 1
            if (key.tag, key.value) in first:
                raise UserError(f"{_where(self.source, join(self.paths[-1], str(key.value)), line)}: "
                                f"{_twice(key.value, first[key.tag, key.value])}")
            first[key.tag, key.value] = line
        return node


def _twice(key: Any, first_line: int) -> str:
    return f"the key {key!r} is given twice (first on line {first_line}); give each key once"


# -- JSON -------------------------------------------------------------------------------------
def read_json(text: str, source: str) -> Any:
    """The data of one JSON document."""
    decoder = _JsonDecoder(source)
    try:
        data = decoder.decode(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{source}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    if decoder.repeated:
        line, first_line, key, mapping = min(decoder.repeated, key=lambda item: item[0])
        raise UserError(f"{_where(source, join(_path_to(data, mapping), key), line)}: {_twice(key, first_line)}")
    return data


class _JsonDecoder(json.JSONDecoder):
    """json's decoder with its pure-Python scanner, whose object and array steps are ours: they
    see where each value starts, so a repeated key and too deep a nesting are found with their
    line. Run files are small: the pure-Python scanner's speed does not matter."""

    def __init__(self, source: str):
        super().__init__()
        self.source = source
        self.depth = 0
        self.repeated: list[tuple[int, int, str, dict]] = []   # (line, first line, key, its object)
        self.parse_object = self._object
        self.parse_array = self._array
        self.scan_once = json.scanner.py_make_scanner(self)

    @contextlib.contextmanager
    def _level(self, text: str, start: int):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            line = text.count("\n", 0, start) + 1
            raise UserError(f"{self.source}: line {line}: nested more than {MAX_DEPTH} levels deep")
        try:
            yield
        finally:
            self.depth -= 1

    def _object(self, text_and_start, strict, scan_once, object_hook, pairs_hook, memo=None):
        text, start = text_and_start
        starts: list[int] = []  # where each value starts; its key's line is that of the ':' before it

        def scan(string: str, at: int):
            starts.append(at)
            return scan_once(string, at)

        with self._level(text, start):
            pairs, end = json.decoder.JSONObject(text_and_start, strict, scan, None, list, memo)
        result: dict = {}
        first: dict[str, int] = {}
        for (key, value), at in zip(pairs, starts):
            if key in first:
                self.repeated.append((_line(text, at), _line(text, first[key]), key, result))
            first.setdefault(key, at)
            result[key] = value
        return result, end

    def _array(self, text_and_start, scan_once):
        with self._level(*text_and_start):
            return json.decoder.JSONArray(text_and_start, scan_once)


def _line(text: str, value_start: int) -> int:
    """The line of the key whose value starts at ``value_start`` (a key never spans lines)."""
    return text.count("\n", 0, text.rfind(":", 0, value_start)) + 1


def _path_to(data: Any, target: dict, path: str = "") -> str | None:
    """The key path of the object ``target`` inside ``data`` (at most MAX_DEPTH deep)."""
    if data is target:
        return path
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        found = _path_to(value, target, join(path, key))
        if found is not None:
            return found
    return None
