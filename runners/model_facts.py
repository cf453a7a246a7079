"""What the preflight needs to know of a model, without its weights: its module names, the
output shape of every module at an input size (a probe forward on PyTorch's ``meta`` device), the
shape of every state-dict entry (what ``student.init_from_teacher`` compares), and the pretrained
weights its config names (what runners.weights fetches).

This is kdbench's one cache of facts: each is computed once per distinct config text, overrides and
input size, and kept on disk (``$KDBENCH_CACHE/modules``, ``/shapes``, ``/state`` and ``/pretrained``, default
``~/.cache/kdbench``), so planning a study again imports neither torch, mmseg nor mmdet (a second
or more without it: ``kdbench bench --suite grid``, row ``cli_start_plan_uncached`` against
``cli_start_plan``).
A file that cannot be read is a miss; one that cannot be written (a read-only home, a full disk) is
simply not kept. Deleting the folder only costs time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from kdbench import store
from kdbench.spec import RunSpec
from runners.config_files import resolve_config

CACHE_VERSION = 1
SHAPES_VERSION = 2  # 2: tuple outputs recorded per element, name[i] and name[*]
DET_PAD = 32                      # mmdet's data preprocessors pad to a multiple of 32


def cache_root() -> Path:
    """``$KDBENCH_CACHE``, default ``~/.cache/kdbench``."""
    return Path(os.environ.get("KDBENCH_CACHE") or Path.home() / ".cache" / "kdbench")


def _cache_dir() -> Path:
    return cache_root() / "modules"


def write_cache(path: Path, data) -> None:
    """``data`` as JSON, whole or not at all; a cache that cannot be written is just not kept."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        store.write_json_atomic(path, data)
    except OSError:
        pass


_KEYS: dict[str, str] = {}           # this process's answers, beside the disk's
_NAMES: dict[str, list[str]] = {}
_REFERENCES: dict[str, list[str]] = {}
_SHAPES: dict[str, dict] = {}


def _key(task: str, config: str, overrides: dict) -> str:
    """A hash of what builds the model (config text, its _base_ files, overrides); computed once
    per process for each (task, config, overrides)."""
    memo = json.dumps([task, config, overrides], sort_keys=True, default=str)
    if memo not in _KEYS:
        _KEYS[memo] = _hash_config(task, config, overrides)
    return _KEYS[memo]


def _hash_config(task: str, config: str, overrides: dict) -> str:
    path = resolve_config(config)
    text = json.dumps([CACHE_VERSION, task, config, path.read_text(), overrides], sort_keys=True, default=str)
    # _base_ files change the model too: hash every .py file next to the config's folder tree root.
    for base in sorted(path.parent.glob("_*.py")):
        text += base.read_text()
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def module_names(task: str, config: str, overrides: dict) -> list[str]:
    key = _key(task, config, overrides)
    if key not in _NAMES:
        _NAMES[key] = _module_names(task, config, overrides, key)
    return _NAMES[key]


def _module_names(task: str, config: str, overrides: dict, key: str) -> list[str]:
    cache = _cache_dir() / f"{key}.json"
    cached = store.read_json(cache)
    if isinstance(cached, list):
        return cached
    import warnings

    from runners.build import build_model, load_config

    with warnings.catch_warnings():  # mmseg's deprecation notices are not the user's business here
        warnings.simplefilter("ignore")
        model = build_model(load_config(config, overrides), task, init=False)
    names = [name for name, _ in model.named_modules() if name]
    write_cache(cache, names)
    return names


def reference_slots(model_cfg):
    """Every place a model config names weights to initialise from, as (dict, key): a
    ``pretrained`` string (mmseg's segmentors hand it to their backbone) and the ``checkpoint`` of a
    ``Pretrained`` init_cfg, at any depth."""
    if isinstance(model_cfg, dict):
        if isinstance(model_cfg.get("pretrained"), str):
            yield model_cfg, "pretrained"
        if model_cfg.get("type") == "Pretrained" and isinstance(model_cfg.get("checkpoint"), str):
            yield model_cfg, "checkpoint"
        for value in model_cfg.values():
            yield from reference_slots(value)
    elif isinstance(model_cfg, (list, tuple)):
        for value in model_cfg:
            yield from reference_slots(value)


def pretrained_references(task: str, config: str, overrides: dict) -> list[str]:
    """The weights a config's model initialises from, as it names them (``open-mmlab://resnet18_v1c``,
    ``torchvision://resnet50``, a URL or a path), in order, each once. Read from the config (mmengine
    only), then kept on disk like the module names, so planning again imports nothing."""
    key = _key(task, config, overrides)
    if key not in _REFERENCES:
        cache = cache_root() / "pretrained" / f"{key}.json"
        cached = store.read_json(cache)
        if not isinstance(cached, list):
            from runners.build import load_config

            model_cfg = load_config(config, overrides).model.to_dict()
            cached = list(dict.fromkeys(node[slot] for node, slot in reference_slots(model_cfg)))
            write_cache(cache, cached)
        _REFERENCES[key] = cached
    return _REFERENCES[key]


def input_size(run: RunSpec) -> tuple[int, int]:
    """(h, w) of the images a run's model sees: seg, the training crop (runners.datasets); det,
    the fashion scenes' size or the COCO resize scale, padded to a multiple of 32."""
    from runners.datasets import COCO_SCALE, fashion_size, training_size

    if run.task == "seg":
        return training_size(run)
    params = run.dataset.params
    if run.dataset.name == "fashion_scenes":
        h, w = fashion_size(params)
    else:
        scale = params.get("scale", COCO_SCALE)
        w, h = (scale, scale) if isinstance(scale, int) else tuple(scale)
    return (-(-int(h) // DET_PAD) * DET_PAD, -(-int(w) // DET_PAD) * DET_PAD)


def _probe(task: str, config: str, overrides: dict, size: tuple[int, int]) -> dict:
    """Build the model without weights on the meta device (CPU where meta is not supported) and run
    one forward in tensor mode, recording every module's output shape (the first tensor of a tuple
    output, as runners.taps does), per call. ``complete`` is False when the forward stopped early
    (e.g. an op without a meta kernel, such as NMS in a two-stage detector's RPN): the modules
    before that point are still recorded."""
    import warnings

    import torch

    from runners.build import build_model, load_config

    cfg_overrides = {**({"model.data_preprocessor.size": list(size)} if task == "seg" else {}), **overrides}
    shapes: dict[str, list[list[int]]] = {}
    complete = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_config(config, cfg_overrides)
        for device in ("meta", "cpu"):
            shapes.clear()
            try:
                with torch.device(device):
                    model = build_model(cfg, task, init=False)
            except Exception:
                continue
            model.eval()

            def hook(name):
                def record(module, args, output):
                    if isinstance(output, (tuple, list)):  # name[i] and name[*] (kdbench.locations)
                        tensors = [o for o in output if torch.is_tensor(o)]
                        if len(tensors) == len(output):
                            for index, item in enumerate(output):
                                shapes.setdefault(f"{name}[{index}]", []).append(list(item.shape))
                                shapes.setdefault(f"{name}[*]", []).append(list(item.shape))
                        output = output[0] if output else None
                    if torch.is_tensor(output):
                        shapes.setdefault(name, []).append(list(output.shape))
                return record

            handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
            inputs = torch.zeros(1, 3, *size, device=device)
            samples = None
            if task == "det":
                from mmdet.structures import DetDataSample

                sample = DetDataSample()
                sample.set_metainfo({"img_shape": size, "ori_shape": size, "pad_shape": size,
                                     "batch_input_shape": size, "scale_factor": (1.0, 1.0)})
                samples = [sample]
            try:
                with torch.no_grad():
                    model(inputs, samples, mode="tensor")
                complete = True
            except Exception:
                complete = False
            for handle in handles:
                handle.remove()
            names = [name for name, _ in model.named_modules() if name]
            write_cache(_cache_dir() / f"{_key(task, config, overrides)}.json", names)
            if shapes:
                break
    return {"complete": complete, "shapes": shapes}


def output_shapes(task: str, config: str, overrides: dict, size: tuple[int, int]) -> dict:
    """``{"complete": bool, "shapes": {module: [shape per call]}}`` for one model at one input size."""
    key = hashlib.sha256(json.dumps([SHAPES_VERSION, _key(task, config, overrides), list(size)]).encode())
    key = key.hexdigest()[:20]
    if key in _SHAPES:
        return _SHAPES[key]
    cache = cache_root() / "shapes" / f"{key}.json"
    cached = store.read_json(cache)
    if not (isinstance(cached, dict) and isinstance(cached.get("shapes"), dict)):
        cached = _probe(task, config, overrides, size)
        write_cache(cache, cached)
    _SHAPES[key] = cached
    return cached


def state_shapes(task: str, config: str, overrides: dict) -> dict[str, list[int]]:
    """Every state-dict entry of the model (parameters and buffers) and its shape, from the model
    built without weights on the meta device (CPU where meta is not supported); cached like the
    other facts. What ``student.init_from_teacher`` compares: a part loads strictly."""
    key = _key(task, config, overrides)
    cache = cache_root() / "state" / f"{key}.json"
    cached = store.read_json(cache)
    if isinstance(cached, dict):
        return cached
    import warnings

    import torch

    from runners.build import build_model, load_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_config(config, overrides)
        for device in ("meta", "cpu"):
            try:
                with torch.device(device):
                    model = build_model(cfg, task, init=False)
                break
            except Exception:
                if device == "cpu":
                    raise
    found = {name: list(value.shape) for name, value in model.state_dict().items()}
    write_cache(cache, found)
    return found
