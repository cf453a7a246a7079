"""The student and the teacher of an MMRazor distillation config, as kdbench names them.

- ``architecture`` and ``teacher`` give a ``cfg_path`` (``mmdet::dir/file.py``); an mmdet 2.x
  name that mmdet 3 renamed is mapped to the packaged file its model-zoo entry names (else the
  one-line error names the near files). The MGD config gives the student as a model dict instead
  (its ``_base_`` config's model): it is named by the ``_base_`` config it equals, and the parts
  whose ``init_cfg`` loads the teacher checkpoint (``Pretrained``, prefix ``neck.``) become
  ``student.init_from_teacher``.
- ``teacher_ckpt``: a URL or a path as given; a bare file name is looked up in mmdet's and
  mmseg's metafiles (runners.model_zoo). A checkpoint that the zoo lists for another architecture
  than the teacher config (MMRazor's RetinaNet CWD config inherits the Faster R-CNN one through
  ``_base_``) is replaced by the teacher config's own checkpoint, with a note saying so.
- The teacher's ``expect`` (the teacher gate) is its checkpoint's published score.

Notes (what the import changed or could not keep) are returned as lines for the user.
"""

from __future__ import annotations

import ast
from pathlib import Path

from kdbench.errors import UserError
from runners import model_zoo
from runners.config_files import resolve_config


def packaged_name(name: str, where: str, notes: list[str]) -> str:
    """A config name that the installed package has: ``name`` itself, or the mmdet 3 file an
    mmdet 2.x name became (a note says so)."""
    try:
        resolve_config(name, where)
        return name
    except UserError:
        new = model_zoo.renamed(name) if "::" in name else None
        if new is None:
            raise
    notes.append(f"{where}: {name!r} is mmdet 2.x's name; mmdet 3 packages it as {new!r} (its model-zoo "
                 "entry's checkpoint folder carries the old name)")
    return new


def _package_bases(path: Path) -> list[str]:
    """The packaged (``pkg::``) configs in ``path``'s ``_base_`` tree, nearest first."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_" for t in node.targets):
            value = ast.literal_eval(node.value)
            for name in [value] if isinstance(value, str) else list(value):
                found += [name] if "::" in name else _package_bases(path.parent / name)
    return found


def _without_init(model: dict, parts) -> dict:
    return {k: ({kk: vv for kk, vv in v.items() if kk != "init_cfg"} if k in parts and isinstance(v, dict) else v)
            for k, v in model.items() if k != "_scope_"}


def _student_of_dict(arch: dict, path: Path, checkpoint: str | None, source: str) -> tuple[str, list[str]]:
    """(the packaged config whose model ``arch`` is, the parts it starts from the teacher's checkpoint)."""
    from mmengine.config import Config

    parts = [k for k, v in arch.items() if isinstance(v, dict) and isinstance(v.get("init_cfg"), dict)
             and v["init_cfg"].get("type") == "Pretrained" and v["init_cfg"].get("checkpoint") == checkpoint
             and v["init_cfg"].get("prefix") == f"{k}."]
    wanted = _without_init(arch, parts)
    for name in _package_bases(path):
        model = Config.fromfile(str(resolve_config(name, f"{source}: _base_"))).get("model")
        if model is not None and _without_init(model.to_dict(), parts) == wanted:
            return name, parts
    raise UserError(f"{source}: model.architecture is a model dict that is not the model of a packaged _base_ "
                    f"config ({', '.join(_package_bases(path)) or 'none'}): kdbench names a student by its "
                    "config; give architecture.cfg_path")


def student_config(model, path: Path, source: str, notes: list[str]) -> tuple[str, list[str]]:
    arch = model.get("architecture") or {}
    if arch.get("cfg_path"):
        if arch.get("pretrained"):
            notes.append(f"{source}: model.architecture.pretrained=True: MMRazor starts the student from the "
                         f"model-zoo weights of {arch['cfg_path']} (mmengine.hub.get_model); kdbench starts it from "
                         "its config's own initialisation (the ImageNet backbone), the student baseline's start")
        return packaged_name(arch["cfg_path"], f"{source}: model.architecture.cfg_path", notes), []
    if arch.get("type"):
        return _student_of_dict(arch.to_dict() if hasattr(arch, "to_dict") else dict(arch), path,
                                model.get("teacher_ckpt"), source)
    raise UserError(f"{source}: model.architecture: give cfg_path (a packaged mmdet/mmseg config)")


def teacher_config(model, source: str, notes: list[str]) -> str:
    teacher = model.get("teacher") or {}
    if not teacher.get("cfg_path"):
        raise UserError(f"{source}: model.teacher: kdbench needs cfg_path (a packaged mmdet/mmseg config)")
    return packaged_name(teacher["cfg_path"], f"{source}: model.teacher.cfg_path", notes)


def _folder(config: str) -> str:
    return config.split("::")[-1].split("/")[0]


def teacher_checkpoint(given: str | None, config: str, source: str, notes: list[str]) -> str:
    """The teacher checkpoint's URL or path (see the module's docstring)."""
    where = f"{source}: model.teacher_ckpt"
    zoo = model_zoo.by_config(config)
    if not given:
        if zoo is None:
            raise UserError(f"{where}: not set, and no metafile lists a checkpoint of {config}: set teacher_ckpt")
        notes.append(f"{where}: not set; the model zoo's checkpoint of {config}: {zoo.weights}")
        return zoo.weights
    listed = model_zoo.by_file(given)
    if listed is not None and _folder(listed.config) != _folder(config):
        if zoo is None:
            raise UserError(f"{where}: {Path(given).name} is a {_folder(listed.config)} checkpoint, the teacher a "
                            f"{_folder(config)} ({config}), and no metafile lists one for it: set teacher_ckpt")
        notes.append(f"{where}: {Path(given).name} is mmdet's {listed.config.split('::')[-1]} checkpoint, not one of "
                     f"the teacher {config} (inherited through _base_?); imported with the zoo's checkpoint of the "
                     f"teacher instead: {zoo.weights}")
        return zoo.weights
    if "://" in given or Path(given).is_file():
        return given
    if listed is None:
        raise UserError(f"{where}: {given!r} is a bare file name that no mmdet or mmseg metafile lists: set "
                        "teacher_ckpt to its URL or path")
    notes.append(f"{where}: the bare file name {given!r} is the model zoo's {listed.weights}")
    return listed.weights


def teacher_expect(checkpoint: str, config: str) -> dict | None:
    """The teacher gate: the score its checkpoint (else its config) is published with."""
    found = model_zoo.by_file(checkpoint) or model_zoo.by_config(config)
    if found is None or not found.metrics:
        return None
    metric, value = next(iter(found.metrics.items()))
    return {"metric": metric, "value": value, "tolerance": 1.0}
