"""Where a model config named in a spec lives, found without importing mmseg or mmdet.

Names: ``mmseg::<dir>/<file>.py`` or ``mmdet::<dir>/<file>.py`` (configs packaged in the
installed package's ``.mim/configs``), a kdbench config name (``runners/configs/<name>.py``: the
tiny CPU models), or a path to a ``.py`` file. Used by the preflight (before anything runs) and by
runners.build.
"""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

from kdbench.errors import UserError

KDBENCH_CONFIGS = Path(__file__).resolve().parent / "configs"
PACKAGES = ("mmseg", "mmdet")


def kdbench_config_names() -> list[str]:
    return sorted(p.stem for p in KDBENCH_CONFIGS.glob("[!_]*.py"))


def resolve_config(name: str, where: str = "config") -> Path:
    """The file a config name points at; a UserError naming the valid forms (and near files)."""
    if "::" in name:
        package, _, relative = name.partition("::")
        if package not in PACKAGES:
            raise UserError(f"{where}: {name!r}: the package must be mmseg or mmdet, got {package!r}")
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise UserError(f"{where}: {name!r}: {package} is not installed (run make setup)")
        path = Path(spec.origin).parent / ".mim" / "configs" / relative
        if not path.is_file():
            folder = path.parent
            files = sorted(p.name for p in folder.glob("*.py")) if folder.is_dir() else []
            near = difflib.get_close_matches(path.name, files, n=3, cutoff=0.6) or files[:6]
            close = difflib.get_close_matches(f"{package}::{relative}", [
                f"{package}::{p.relative_to(path.parents[len(Path(relative).parts) - 1])}"
                for p in path.parents[len(Path(relative).parts) - 1].glob("*/*.py")], n=3, cutoff=0.8) \
                if not files and len(Path(relative).parts) == 2 else []
            hint = f"; files in {package}::{Path(relative).parent}/: {', '.join(near)}" if near else \
                f"; closest configs: {', '.join(close)}" if close else ""
            raise UserError(f"{where}: {name!r} is not a config packaged with {package}{hint}")
        return path
    path = Path(name)
    if not path.suffix and (KDBENCH_CONFIGS / f"{name}.py").is_file():
        return KDBENCH_CONFIGS / f"{name}.py"
    if path.suffix == ".py" and path.is_file():
        return path
    close = difflib.get_close_matches(name, kdbench_config_names(), n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    raise UserError(f"{where}: config {name!r} does not exist{hint}; give a path to a .py file, "
                    f"'mmseg::<dir>/<file>.py', 'mmdet::<dir>/<file>.py' or one of: "
                    f"{', '.join(kdbench_config_names())}")
