"""mmdet's and mmseg's model zoo, as their installed packages describe it: every packaged
``configs/<dir>/metafile.yml`` (mmseg: ``metafile.yaml``) lists the zoo's models, each with its
config, its checkpoint URL and its published metrics.

Read by ``kdbench import mmrazor`` to turn what an MMRazor config names into what kdbench needs:
a checkpoint given as a bare file name into its URL, an mmdet 2.x config name (renamed by mmdet
3: ``faster_rcnn_r50_fpn_1x_coco.py`` -> ``faster-rcnn_r50_fpn_1x_coco.py``) into the packaged
file, and a teacher into the score its checkpoint is published with (the teacher gate). The
checkpoint URLs keep the 2.x names (``.../faster_rcnn_r50_fpn_1x_coco/faster_rcnn_r50_fpn_1x_coco_2020...pth``):
that is how an old name finds its new file.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from runners.config_files import PACKAGES

# A metafile's metric -> (the metric as a kdbench run writes it, the package's task).
METRICS = {"box AP": "val/bbox_mAP", "mIoU": "val/mIoU"}


@dataclass(frozen=True)
class ZooModel:
    name: str                       # the metafile's Name
    config: str                     # "mmdet::dir/file.py"
    weights: str | None             # the checkpoint's URL
    metrics: dict                   # {"val/bbox_mAP": 41.0}: the published scores kdbench measures

    @property
    def file(self) -> str | None:
        """The checkpoint's file name (URL-decoded: ``%2B`` is ``+``)."""
        return unquote(self.weights.rsplit("/", 1)[-1]).split("?")[0] if self.weights else None

    @property
    def old_name(self) -> str | None:
        """The model's mmdet 2.x config stem: the folder its checkpoint is published in."""
        parts = self.weights.split("/") if self.weights else []
        return unquote(parts[-2]) if len(parts) >= 2 else None


def _metrics(results) -> dict:
    """The scores of an entry's ``Results``: a list of results (mmdet) or one (mmseg)."""
    found = {}
    for result in results if isinstance(results, list) else [results]:
        for key, value in (result.get("Metrics") or {}).items() if isinstance(result, dict) else ():
            if key in METRICS and isinstance(value, (int, float)) and METRICS[key] not in found:
                found[METRICS[key]] = float(value)
    return found


def _read(path: Path, package: str, root: Path) -> list[ZooModel]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(path.read_text(), Loader=loader) or {}
    except (OSError, yaml.YAMLError):
        return []
    models = []
    for entry in data.get("Models") or [] if isinstance(data, dict) else []:
        config = entry.get("Config") if isinstance(entry, dict) else None
        if not isinstance(config, str) or not config.startswith("configs/"):
            continue
        if not (root / config.removeprefix("configs/")).is_file():
            continue
        weights = entry.get("Weights")
        models.append(ZooModel(str(entry.get("Name")), f"{package}::{config.removeprefix('configs/')}",
                               weights if isinstance(weights, str) else None, _metrics(entry.get("Results"))))
    return models


@functools.cache
def models() -> tuple[ZooModel, ...]:
    """Every model the installed mmdet and mmseg packages list (none for a package not installed)."""
    found: list[ZooModel] = []
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        root = Path(spec.origin).parent / ".mim" / "configs"
        for path in sorted(root.glob("*/metafile.y*ml")):
            found.extend(_read(path, package, root))
    return tuple(found)


def by_file(name: str) -> ZooModel | None:
    """The model whose checkpoint is the file ``name`` (a bare file name or a URL's last part)."""
    wanted = unquote(name.rsplit("/", 1)[-1]).split("?")[0]
    return next((m for m in models() if m.file == wanted), None)


def by_config(config: str) -> ZooModel | None:
    """The zoo's model of a packaged config: the entry named after the file when several share it."""
    stem = Path(config.split("::")[-1]).stem
    matches = [m for m in models() if m.config == config and m.weights]
    return next((m for m in matches if m.name == stem), matches[0] if matches else None)


def renamed(config: str) -> str | None:
    """The mmdet 3 config an mmdet 2.x name (``mmdet::faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py``)
    became, where one metafile entry's checkpoint, in a folder of the old name, starts with it
    (the folder also holds variants: ``faster_rcnn_r50_fpn_giou_1x_coco``); None otherwise."""
    package, _, relative = config.partition("::")
    stem = Path(relative).stem
    matches = {m.config for m in models() if m.config.startswith(f"{package}::") and m.old_name == stem
               and m.file and m.file.startswith(stem)}  # the folder's own model, not a variant kept beside it
    return matches.pop() if len(matches) == 1 else None
