"""Checks of runs that need the models, the data or the teacher's weights, done before anything is
submitted or written (``kdbench plan``, ``launch`` and ``run`` call them):

- files: a teacher checkpoint path exists and is a PyTorch checkpoint (its header, read cheaply:
  a zip archive with its end record, or a pickle; nothing is loaded), a ``{run: DIR}`` teacher
  from outside the study is complete, a dataset root is a directory;
- locations: every distilled location exists in its model;
- shapes: a probe forward of both models on a dummy batch at the run's input size, on PyTorch's
  ``meta`` device (shapes only, no compute, no weights), finds channel mismatches without an
  adapter and size mismatches without ``resize``.

Module names and output shapes are computed once per distinct config, overrides (and input
size) and cached on disk (``$KDBENCH_CACHE`` or ``~/.cache/kdbench``), so planning a study again
is fast and imports neither mmseg nor mmdet. Every failure is a one-line UserError naming the
file, the key path and the fix.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from kdbench import store
from kdbench.configs import resolve_config
from kdbench.errors import UserError

CACHE_VERSION = 1
SHAPES_VERSION = 1
DET_PAD = 32                      # mmdet's data preprocessors pad to a multiple of 32
COCO_SCALE = (1333, 800)          # runners/datasets.py: (w, h) of the resize when params name none


def _cache_root() -> Path:
    return Path(os.environ.get("KDBENCH_CACHE") or Path.home() / ".cache" / "kdbench")


def _cache_dir() -> Path:
    return _cache_root() / "modules"


def _write_cache(path: Path, data) -> None:
    """Best effort: a cache that cannot be written (read-only home, full disk) is just not kept."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        store.write_json_atomic(path, data)
    except OSError:
        pass


_KEYS: dict[str, str] = {}
_NAMES: dict[str, list[str]] = {}


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
    _write_cache(cache, names)
    return names


# -- output shapes ----------------------------------------------------------------------------
def input_size(run: dict) -> tuple[int, int]:
    """(h, w) of the images a run's model sees: seg, the training crop (runners.datasets); det,
    the fashion scenes' size or the COCO resize scale, padded to a multiple of 32."""
    from runners.datasets import training_size

    if run["task"] == "seg":
        return tuple(training_size(run))
    params = run["dataset"]["params"]
    if run["dataset"]["name"] == "fashion_scenes":
        size = params.get("size", 64)
        h, w = (size, size) if isinstance(size, int) else tuple(size)
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
                    if isinstance(output, (tuple, list)):
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
            _write_cache(_cache_dir() / f"{_key(task, config, overrides)}.json", names)
            if shapes:
                break
    return {"complete": complete, "shapes": shapes}


_SHAPES: dict[str, dict] = {}


def output_shapes(task: str, config: str, overrides: dict, size: tuple[int, int]) -> dict:
    """``{"complete": bool, "shapes": {module: [shape per call]}}`` for one model at one input size."""
    key = hashlib.sha256(json.dumps([SHAPES_VERSION, _key(task, config, overrides), list(size)]).encode())
    key = key.hexdigest()[:20]
    if key in _SHAPES:
        return _SHAPES[key]
    cache = _cache_root() / "shapes" / f"{key}.json"
    cached = store.read_json(cache)
    if not (isinstance(cached, dict) and isinstance(cached.get("shapes"), dict)):
        cached = _probe(task, config, overrides, size)
        _write_cache(cache, cached)
    _SHAPES[key] = cached
    return cached


# -- one interface for studies and run files --------------------------------------------------
@dataclass
class Site:
    """A run to check and how to name its keys in an error (``file: key.path``)."""

    run: dict
    term_key: Callable[[int, str], str]     # (term index, key) -> "file: methods.x.adapter"
    field_key: Callable[[str], str]         # "teacher.checkpoint" -> "file: base.teacher.checkpoint"
    own_teacher: bool = False               # its {run: DIR} teacher is trained by the same study
    data_hint: str = ""                     # appended to a dataset-root error


def check_sites(sites: list[Site], models: bool = True, files: bool = True) -> None:
    """Files first (cheap), then locations, then shapes; the first problem raises."""
    with store.gc_paused():
        _check_sites(sites, models, files)


def _check_sites(sites: list[Site], models: bool, files: bool) -> None:
    if files:
        seen: set[str] = set()
        for site in sites:
            signature = _files_signature(site)
            if signature not in seen:
                seen.add(signature)
                _check_files(site)
    if models:
        # Runs that differ only in what the models do not see (a temperature, a weight, a seed) are
        # checked once: a 10k-run grid costs as much as its distinct model pairs and locations.
        first: dict[str, Site] = {}
        for site in sites:
            first.setdefault(_model_signature(site.run), site)
        distinct = list(first.values())
        for site in distinct:
            _check_locations(site)
        for site in distinct:
            _check_shapes(site)


def _files_signature(site: Site) -> str:
    """What the file checks of a run depend on (configs, teacher checkpoint, dataset)."""
    run = site.run
    # repr, not sorted JSON: fast, and two runs with equal values never get different checks (at
    # worst equal values written in another key order are checked twice).
    return repr([run["role"], bool(run.get("distill")), run.get("student"), run.get("teacher"),
                 run["dataset"], site.own_teacher])


def _model_signature(run: dict) -> str:
    """What the location and shape checks of a run depend on."""
    terms = [[t["method"], t["student_location"], t["teacher_location"], t["adapter"] is None, t["resize"]]
             for t in run.get("distill", [])]
    models = [[run[role]["config"], run[role]["overrides"]] if isinstance(run.get(role), dict) else None
              for role in ("student", "teacher")]
    return repr([run["task"], models, run["dataset"], run["schedule"].get("crop"), terms])


def study_sites(study) -> list[Site]:
    hint = " (on a machine without the data, plan with --no-data-check)"
    return [Site(p.run, _study_term_key(study, p), _study_field_key(study, p), bool(p.depends_on), hint)
            for p in study.runs]


def check_study(study, models: bool = True, files: bool = True) -> None:
    """The preflight of ``kdbench plan`` and ``launch``: nothing is submitted or written before it."""
    with store.gc_paused():  # the sites of a large grid: many small objects, no cycles
        check_sites(study_sites(study), models=models, files=files)


def check_run(run: dict, source: str) -> None:
    """The preflight of ``kdbench run RUN.json``: nothing is written before it."""
    check_sites([Site(run, lambda index, key: f"{source}: distill[{index}].{key}",
                      lambda path: f"{source}: {path}")])


def check_locations(study) -> None:
    """Raise a one-line UserError for the first distilled location that is not in its model."""
    for site in study_sites(study):
        _check_locations(site)


# -- the checks -------------------------------------------------------------------------------
_ZIP_END = b"PK\x05\x06"


def checkpoint_problem(path: str) -> str | None:
    """Why ``path`` cannot be a PyTorch checkpoint, from its first and last bytes, or None."""
    file = Path(path)
    if not file.exists():
        return "does not exist"
    if not file.is_file():
        return "is not a file"
    try:
        with open(file, "rb") as handle:
            head = handle.read(4)
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 65557))  # the zip end record and its comment, at most
            tail = handle.read()
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if head == b"PK\x03\x04":
        return None if _ZIP_END in tail else "is a truncated zip archive (no end record): copy or download it again"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return None  # torch.save's legacy format: a pickle
    if not head:
        return "is empty, not a PyTorch checkpoint"
    return f"is not a PyTorch checkpoint (neither a zip archive nor a pickle; it starts with {head!r})"


def _check_files(site: Site) -> None:
    run = site.run
    for role in ("student", "teacher"):
        if isinstance(run.get(role), dict):  # a run file's configs are checked nowhere earlier
            resolve_config(run[role]["config"], site.field_key(f"{role}.config"))
    teacher = run.get("teacher")
    if teacher and (run["role"] == "teacher" or run.get("distill")):
        ckpt = teacher.get("checkpoint")
        where = site.field_key("teacher.checkpoint")
        if isinstance(ckpt, dict) and not site.own_teacher:
            run_dir = Path(ckpt["run"])
            final = store.read_json(run_dir / store.FINAL)
            if store.run_state(run_dir) != "complete" or not isinstance(final.get("checkpoint"), str):
                raise UserError(f"{where}.run: {str(run_dir)!r} holds no complete teacher run; run it first, "
                                f"or give the checkpoint's path or URL")
            ckpt_path = str(run_dir / final["checkpoint"])
            problem = checkpoint_problem(ckpt_path)
            if problem:
                raise UserError(f"{where}.run: the teacher's weights {ckpt_path!r} {problem}")
        elif isinstance(ckpt, str) and not ckpt.startswith(("http://", "https://")):
            problem = checkpoint_problem(ckpt)
            if problem:
                raise UserError(f"{where}: {ckpt!r} {problem}; give the path of a .pth file, a URL, "
                                f"or {{run: DIR}} of a complete teacher run")
    dataset = run["dataset"]
    if dataset["name"] != "fashion_scenes" and dataset.get("root") is not None:
        if not Path(dataset["root"]).is_dir():
            raise UserError(f"{site.field_key('dataset.root')}: {dataset['root']!r} is not a directory; "
                            f"{dataset['name']} must be there before anything runs{site.data_hint}")


def _check_locations(site: Site) -> None:
    run = site.run
    for index, term in enumerate(run.get("distill", [])):
        for role, key in (("student", "student_location"), ("teacher", "teacher_location")):
            spec = run[role]
            names = None
            for location in term[key]:
                names = names or module_names(run["task"], spec["config"], spec["overrides"])
                if location not in names:
                    close = difflib.get_close_matches(location, names, n=3, cutoff=0.5)
                    hint = f"; close matches: {', '.join(close)}" if close else ""
                    raise UserError(f"{site.term_key(index, key)}: {location!r} is not in the {role} model "
                                    f"({spec['config']}){hint}")


def _check_shapes(site: Site) -> None:
    run = site.run
    if not run.get("distill"):
        return
    size = input_size(run)
    shapes = {role: output_shapes(run["task"], run[role]["config"], run[role]["overrides"], size)
              for role in ("student", "teacher")}
    for index, term in enumerate(run["distill"]):
        needs_adapter = _needs_adapter(term["method"])
        for s_path, t_path in zip(term["student_location"], term["teacher_location"]):
            s_calls = shapes["student"]["shapes"].get(s_path)
            t_calls = shapes["teacher"]["shapes"].get(t_path)
            if not s_calls or not t_calls:
                continue  # not reached by this probe (e.g. after an RPN's NMS): the run's own probe checks it
            pair = f"student {s_path} -> teacher {t_path}"
            both_complete = shapes["student"]["complete"] and shapes["teacher"]["complete"]
            if both_complete and len(s_calls) != len(t_calls):
                raise UserError(f"{site.term_key(index, 'teacher_location')}: {pair}: the student calls it "
                                f"{len(s_calls)} times per forward, the teacher {len(t_calls)}")
            s, t = tuple(s_calls[0]), tuple(t_calls[0])
            if len(s) != len(t):
                raise UserError(f"{site.term_key(index, 'teacher_location')}: {pair}: outputs {s} and {t} "
                                f"have different ranks")
            if len(s) > 1 and s[1] != t[1] and needs_adapter and term["adapter"] is None:
                raise UserError(f"{site.term_key(index, 'adapter')}: {pair}: {s[1]} channels {s} vs {t[1]} {t} "
                                f"at input {size[0]}x{size[1]}; add an adapter (adapter: true for a 1x1 conv, "
                                f"or {{norm: true, act: true}})")
            if s[2:] != t[2:] and not term["resize"]:
                raise UserError(f"{site.term_key(index, 'resize')}: {pair}: maps {s} and {t} differ in size at "
                                f"input {size[0]}x{size[1]}; set resize: true")


def _needs_adapter(method: str) -> bool:
    """Whether a loss needs equal channels (``needs_adapter``, default True), cached on disk per
    version of the losses' source, so a cached preflight does not import torch."""
    digest = hashlib.sha256()
    for path in sorted((Path(__file__).resolve().parents[1] / "kdbench" / "losses").glob("*.py")):
        digest.update(path.read_bytes())
    cache = _cache_root() / "shapes" / f"needs_adapter-{digest.hexdigest()[:20]}.json"
    table = _SHAPES.get(str(cache)) or store.read_json(cache)
    if not (isinstance(table, dict) and method in table):
        from kdbench import losses

        table = {name: bool(getattr(losses.get(name), "needs_adapter", True)) for name in losses.available()}
        _write_cache(cache, table)
    _SHAPES[str(cache)] = table
    return table.get(method, True)


# -- key paths in a study ---------------------------------------------------------------------
def _study_term_key(study, planned) -> Callable[[int, str], str]:
    def key(index: int, name: str) -> str:
        return f"{study.path}: {_where(study, planned, index, name)}"
    return key


def _where(study, planned, index: int, key: str) -> str:
    method = planned.params.get("method")
    if method is not None:
        return f"methods.{method}.{key}" if not isinstance(study.spec.get("methods", {}).get(method), list) \
            else f"methods.{method}[{index}].{key}"
    return f"run {planned.name}: distill[{index}].{key}"


def _get(data, path: str):
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _axes(study) -> Iterable[tuple[str, str]]:
    """(axis path, its key path in the study) for every grid and zip axis."""
    for axis in study.spec.get("grid") or {}:
        yield str(axis), f"grid.{axis}"
    for index, block in enumerate(study.spec.get("zip") or []):
        for axis in block or {}:
            yield str(axis), f"zip[{index}].{axis}"


def _study_field_key(study, planned) -> Callable[[str], str]:
    """Where a run field comes from: an axis that sets it, else ``base``."""
    def key(path: str) -> str:
        value = _get(planned.run, path)
        base = study.spec.get("base") or {}
        if value is not None and _get(base, path) == value:
            return f"{study.path}: base.{path}"
        for axis, where in _axes(study):
            if path == axis or path.startswith(axis + ".") or axis.startswith(path + "."):
                return f"{study.path}: {where}"
        return f"{study.path}: base.{path}" if _get(base, path) is not None else \
            f"{study.path}: run {planned.name}: {path}"
    return key
