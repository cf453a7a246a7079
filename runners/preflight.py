"""Checks of a study that need the models: every distilled location exists in its model.

Module names are read from a model built without weights (no download, no init), once per
distinct config and overrides, and cached on disk (``$KDBENCH_CACHE`` or ``~/.cache/kdbench``),
so planning a study again is fast and imports neither mmseg nor mmdet.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from pathlib import Path

from kdbench import store
from kdbench.configs import resolve_config
from kdbench.errors import UserError

CACHE_VERSION = 1


def _cache_dir() -> Path:
    return Path(os.environ.get("KDBENCH_CACHE") or Path.home() / ".cache" / "kdbench") / "modules"


def _key(task: str, config: str, overrides: dict) -> str:
    path = resolve_config(config)
    text = json.dumps([CACHE_VERSION, task, config, path.read_text(), overrides], sort_keys=True, default=str)
    # _base_ files change the model too: hash every .py file next to the config's folder tree root.
    for base in sorted(path.parent.glob("_*.py")):
        text += base.read_text()
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def module_names(task: str, config: str, overrides: dict) -> list[str]:
    cache = _cache_dir() / f"{_key(task, config, overrides)}.json"
    cached = store.read_json(cache)
    if isinstance(cached, list):
        return cached
    import warnings

    from runners.build import build_model, load_config

    with warnings.catch_warnings():  # mmseg's deprecation notices are not the user's business here
        warnings.simplefilter("ignore")
        model = build_model(load_config(config, overrides), task, init=False)
    names = [name for name, _ in model.named_modules() if name]
    cache.parent.mkdir(parents=True, exist_ok=True)
    store.write_json_atomic(cache, names)
    return names


def check_locations(study) -> None:
    """Raise a one-line UserError for the first distilled location that is not in its model."""
    seen: set[tuple] = set()
    for planned in study.runs:
        run = planned.run
        for index, term in enumerate(run.get("distill", [])):
            for role, key in (("student", "student_location"), ("teacher", "teacher_location")):
                spec = run[role]
                for location in term[key]:
                    marker = (role, spec["config"], json.dumps(spec["overrides"], sort_keys=True), location)
                    if marker in seen:
                        continue
                    seen.add(marker)
                    names = module_names(run["task"], spec["config"], spec["overrides"])
                    if location not in names:
                        close = difflib.get_close_matches(location, names, n=3, cutoff=0.5)
                        hint = f"; close matches: {', '.join(close)}" if close else ""
                        where = _where(study, planned, index, key)
                        raise UserError(f"{study.path}: {where}: {location!r} is not in the {role} model "
                                        f"({spec['config']}){hint}")


def _where(study, planned, index: int, key: str) -> str:
    method = planned.params.get("method")
    if method is not None:
        return f"methods.{method}.{key}" if not isinstance(study.spec.get("methods", {}).get(method), list) \
            else f"methods.{method}[{index}].{key}"
    return f"run {planned.name}: distill[{index}].{key}"
