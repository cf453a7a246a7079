"""Where a model config named in a spec lives, found without importing mmseg or mmdet.

Names: ``mmseg::<dir>/<file>.py`` or ``mmdet::<dir>/<file>.py`` (configs packaged in the
installed package's ``.mim/configs``), a kdbench config name (``runners/configs/<name>.py``: the
tiny CPU models), or a path to a ``.py`` file. Used by the preflight (before anything runs) and by
runners.build.
"""

from __future__ import annotations

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
            near = sorted(p.name for p in folder.glob("*.py"))[:6] if folder.is_dir() else []
            hint = f"; files in {package}::{Path(relative).parent}/: {', '.join(near)}" if near else ""
            raise UserError(f"{where}: {name!r} is not a config packaged with {package}{hint}")
        return path
    path = Path(name)
    if not path.suffix and (KDBENCH_CONFIGS / f"{name}.py").is_file():
        return KDBENCH_CONFIGS / f"{name}.py"
    if path.suffix == ".py" and path.is_file():
        return path
    raise UserError(f"{where}: config {name!r} does not exist; give a path to a .py file, "
                    f"'mmseg::<dir>/<file>.py', 'mmdet::<dir>/<file>.py' or one of: "
                    f"{', '.join(kdbench_config_names())}")
