"""Checks of runs that need the models, the data or the teacher's weights, done before anything is
submitted or written (``kdbench plan``, ``launch`` and ``run`` call them):

- files: a teacher checkpoint path exists and is a PyTorch checkpoint (its header, read cheaply:
  a zip archive with its end record, or a pickle; nothing is loaded), a ``{run: DIR}`` teacher
  from outside the study is complete, a dataset root holds what mmseg/mmdet will read
  (runners.data.layout: its folders listed, COCO's annotation files scanned; cached);
  offline (``KDBENCH_OFFLINE``, a SLURM job), every weight file the run would download is in
  the cache (runners.weights);
- locations: every distilled location exists in its model;
- shapes: a probe forward of both models on a dummy batch at the run's input size, on PyTorch's
  ``meta`` device (shapes only, no compute, no weights), finds channel mismatches without an
  adapter and size mismatches without ``resize``;
- heads: a term of a loss that needs the detection heads names heads that can serve it
  (runners.head_check).

Module names and output shapes come from ``runners.model_facts`` (computed once per distinct
config, overrides and input size, cached on disk), so planning a study again is fast and imports
neither mmseg nor mmdet. Every failure is a one-line UserError naming the file, the key path and
the fix.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdbench import locations, losses
from kdbench.errors import Problems, UserError
from kdbench.expand import Study
from kdbench.spec import RunSpec, TeacherRun
from runners.config_files import resolve_config
from runners.data import layout
from runners.head_check import check_heads
from runners.model_facts import input_size, module_names, output_shapes
from runners.teacher_run import teacher_run_checkpoint
from runners.weights import WeightFile, offline, require_cached, run_weights


# -- one interface for studies and run files --------------------------------------------------
@dataclass
class Site:
    """A run to check and how to name its keys in an error (``file: key.path``)."""

    run: RunSpec
    term_key: Callable[[int, str], str]     # (term index, key) -> "file: methods.x.adapter"
    field_key: Callable[[str], str]         # "teacher.checkpoint" -> "file: base.teacher.checkpoint"
    own_teacher: bool = False               # its {run: DIR} teacher is trained by the same study
    data_hint: str = ""                     # appended to a dataset-root error
    mem_gb: float | None = None             # the memory a run of the study asks for (resources.mem_gb)


def check_sites(sites: list[Site], models: bool = True, files: bool = True, needs: list[str] | None = None) -> None:
    """Files first (cheap), then locations, then shapes; every problem found is reported at once
    (each once), except that the models are not probed for shapes when a file or a location is
    wrong (the probe would fail on the same cause). With ``needs`` (``kdbench plan``), what is
    missing rather than wrong (a dataset not there or not prepared, a teacher checkpoint file not
    there, a weight file not in the cache where runs may not download) is added to it, once each,
    instead: a plan works on a machine without the data."""
    problems = Problems()
    if files:
        seen: set[str] = set()
        for site in sites:
            signature = _files_signature(site)
            if signature not in seen:
                seen.add(signature)
                _check_files(site, problems, needs)
    if models:
        # Runs that differ only in what the models do not see (a temperature, a weight, a seed) are
        # checked once: a 10k-run grid costs as much as its distinct model pairs and locations.
        first: dict[str, Site] = {}
        for site in sites:
            first.setdefault(_model_signature(site.run), site)
        distinct = list(first.values())
        for site in distinct:
            _check_locations(site, problems)
        if not problems:
            for site in distinct:
                problems.get(_check_shapes, site)
                problems.get(check_heads, site)
                problems.get(_check_init_from_teacher, site)
        if not problems:
            for site in {_memory_signature(site): site for site in sites if site.mem_gb is not None}.values():
                problems.get(_check_working_memory, site)
    problems.raise_any()


def _files_signature(site: Site) -> str:
    """What the file checks of a run depend on (configs, teacher checkpoint, dataset)."""
    run = site.run
    # repr, not sorted JSON: fast, and two runs with equal values never get different checks (at
    # worst equal values written in another key order are checked twice).
    return repr([run.role, bool(run.distill), run.student, run.teacher, run.dataset, site.own_teacher])


def _model_signature(run: RunSpec) -> str:
    """What the location and shape checks of a run depend on."""
    terms = [[t.method, t.student_location, t.teacher_location, t.adapter is None, t.resize,
              t.params if getattr(losses.declaration(t.method), "needs_heads", False) else None] for t in run.distill]
    return repr([run.task, run.student, run.teacher, run.dataset, run.schedule.crop, terms])


LAUNCH_HINT = " (kdbench plan lists everything a launch of this study needs)"


def study_sites(study: Study, hint: str = LAUNCH_HINT) -> list[Site]:
    return [Site(p.run, _study_term_key(study, p), _study_field_key(study, p), bool(p.depends_on), hint,
                 study.resources.mem_gb) for p in study.runs]


def check_study(study: Study, models: bool = True, files: bool = True, needs: list[str] | None = None) -> None:
    """The preflight of ``kdbench plan`` and ``launch``: nothing is submitted or written before it.
    ``needs``: plan's list of what a launch would still need (check_sites)."""
    sites = study_sites(study) if needs is None else study_sites(study, hint="")
    check_sites(sites, models=models, files=files, needs=needs)


def check_run(run: RunSpec, source: str) -> None:
    """The preflight of ``kdbench run RUN.json``: nothing is written before it. The precision is
    checked here, where the run trains, not when a study is planned (on a login node without GPUs)."""
    from runners.precision import check_precision

    check_precision(run, f"{source}: schedule.precision")
    check_sites([Site(run, lambda index, key: f"{source}: distill[{index}].{key}",
                      lambda path: f"{source}: {path}")])


def study_weights(study: Study) -> dict[str, list[WeightFile]]:
    """The weight files each run of the study downloads (runners.weights), by run id; worked out once
    per distinct pair of models, each file named by the study key that gives it."""
    found: dict[str, list[WeightFile]] = {}
    by_models: dict[str, list[WeightFile]] = {}
    for planned in study.runs:
        run = planned.run
        signature = repr([run.task, run.role, bool(run.distill), run.student, run.teacher])
        if signature not in by_models:
            by_models[signature] = run_weights(run, _study_field_key(study, planned))
        found[planned.run_id] = by_models[signature]
    return found


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


def _missing(needs: list[str] | None, problems: Problems, check) -> None:
    """Run ``check``; a UserError it raises is a need when ``needs`` is given (once each), else a
    problem."""
    try:
        check()
    except UserError as error:
        if needs is None:
            problems.add(error)
        elif str(error) not in needs:
            needs.append(str(error))


def _check_files(site: Site, problems: Problems, needs: list[str] | None = None) -> None:
    run = site.run
    for role, model in (("student", run.student), ("teacher", run.teacher)):
        if model is not None:
            problems.get(resolve_config, model.config, site.field_key(f"{role}.config"))
    teacher = run.teacher
    if teacher is not None and (run.role == "teacher" or run.distill):
        ckpt = teacher.checkpoint
        where = site.field_key("teacher.checkpoint")
        if isinstance(ckpt, TeacherRun) and not site.own_teacher:
            _missing(needs, problems, lambda: _check_teacher_run(ckpt, where))
        elif isinstance(ckpt, str) and not ckpt.startswith(("http://", "https://")):
            _missing(needs, problems, lambda: _check_checkpoint_file(ckpt, where))
    if offline():  # a compute node: every weight file must already be in the cache
        _missing(needs, problems, lambda: require_cached(run_weights(run, site.field_key)))
    _missing(needs, problems, lambda: _check_dataset(site))


def _check_teacher_run(ckpt: TeacherRun, where: str) -> None:
    ckpt_path = teacher_run_checkpoint(ckpt.run, where)
    problem = checkpoint_problem(ckpt_path)
    if problem:
        raise UserError(f"{where}.run: the teacher's weights {ckpt_path!r} {problem}")


def _check_checkpoint_file(ckpt: str, where: str) -> None:
    problem = checkpoint_problem(ckpt)
    if problem:
        raise UserError(f"{where}: {ckpt!r} {problem}; give the path of a .pth file, a URL, "
                        f"or {{run: DIR}} of a complete teacher run")


def _check_dataset(site: Site) -> None:
    """The dataset's root is a directory holding what the loader reads (runners.data.layout); a
    partial split is noted once per root (the run records it, and the report marks it)."""
    dataset = site.run.dataset
    if dataset.name not in layout.LAYOUTS or dataset.root is None:
        return  # generated by kdbench on first use
    if not Path(dataset.root).is_dir():
        raise UserError(f"{site.field_key('dataset.root')}: {dataset.root!r} is not a directory; "
                        f"{dataset.name} must be there before anything runs{site.data_hint}")
    found = layout.check(dataset.name, dataset.root)
    problem = found.problem()
    if problem:
        raise UserError(f"{site.field_key('dataset.root')}: {problem}{site.data_hint}")
    if not found.complete and (dataset.name, dataset.root) not in _NOTED:
        _NOTED.add((dataset.name, dataset.root))
        print(f"kdbench: note: {dataset.name} at {dataset.root!r} holds a partial split ({found.counts()}): "
              f"results are marked not comparable with published numbers", file=sys.stderr)


_NOTED: set[tuple[str, str]] = set()  # roots whose partial split this process has noted


def _check_locations(site: Site, problems: Problems) -> None:
    """Every distilled location is in its model (a model whose config is wrong is not looked into)."""
    run = site.run
    for index, term in enumerate(run.distill):
        for role, key, model in (("student", "student_location", run.student),
                                 ("teacher", "teacher_location", run.teacher)):
            names = None
            for position, location in enumerate(getattr(term, key)):
                if names is None:   # a config that does not exist is reported once, by its key
                    found = problems.get(resolve_config, model.config, site.field_key(f"{role}.config"))
                    names = problems.get(module_names, run.task, model.config, model.overrides) if found else []
                if names and locations.module_of(location) not in names:
                    close = difflib.get_close_matches(locations.module_of(location), names, n=3, cutoff=0.5)
                    hint = f"; close matches: {', '.join(close)}" if close else ""
                    at = f"[{position}]" if len(getattr(term, key)) > 1 else ""
                    problems.add(UserError(f"{site.term_key(index, key)}{at}: {location!r} is not in the {role} "
                                           f"model ({model.config}){hint}"))


def _check_index(where: str, location: str, shapes: dict, role: str) -> None:
    """An indexed location (``neck[2]``) names an output its module returns: the probe saw the
    module return a tuple with that element."""
    module, index = locations.split(location)
    if index is None or location in shapes or module not in shapes:
        return  # plain, found, or the module was not reached by the probe (the run's own probe checks it)
    count = sum(1 for key in shapes if key.startswith(f"{module}[") and key != f"{module}[*]")
    if count == 0:
        raise UserError(f"{where}: {location!r}: the {role}'s {module} returns one tensor, not a tuple to index; "
                        f"use {module!r}")
    raise UserError(f"{where}: {location!r}: the {role}'s {module} returns {count} outputs "
                    f"(valid: {module}[0] to {module}[{count - 1}], or {module}[*])")


def _check_shapes(site: Site) -> None:
    run = site.run
    if not run.distill:
        return
    size = input_size(run)
    shapes = {role: output_shapes(run.task, model.config, model.overrides, size)
              for role, model in (("student", run.student), ("teacher", run.teacher))}
    for index, term in enumerate(run.distill):
        if getattr(losses.declaration(term.method), "needs_heads", False):
            continue  # its location is a head, called with HeadInputs: runners.head_check
        needs_adapter = losses.declaration(term.method).needs_adapter
        for role, key in (("student", "student_location"), ("teacher", "teacher_location")):
            for location in getattr(term, key):
                _check_index(site.term_key(index, key), location, shapes[role]["shapes"], role)
        for s_path, t_path in zip(term.student_location, term.teacher_location):
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
            if len(s) > 1 and s[1] != t[1] and needs_adapter and term.adapter is None:
                raise UserError(f"{site.term_key(index, 'adapter')}: {pair}: {s[1]} channels {s} vs {t[1]} {t} "
                                f"at input {size[0]}x{size[1]}; add an adapter (adapter: true for a 1x1 conv, "
                                f"or {{norm: true, act: true}})")
            if s[2:] != t[2:] and not term.resize:
                raise UserError(f"{site.term_key(index, 'resize')}: {pair}: maps {s} and {t} differ in size at "
                                f"input {size[0]}x{size[1]}; set resize: true")


def _check_init_from_teacher(site: Site) -> None:
    """Each part the student starts from the teacher's weights (``student.init_from_teacher``) is
    a part of both, with the same state-dict entries and shapes: it loads strictly at the start."""
    run = site.run
    parts = getattr(run.student, "init_from_teacher", ()) if run.student is not None else ()
    if not parts or run.teacher is None:
        return
    from runners.model_facts import state_shapes

    mine = state_shapes(run.task, run.student.config, run.student.overrides)
    theirs = state_shapes(run.task, run.teacher.config, run.teacher.overrides)
    where = site.field_key("student.init_from_teacher")
    for part in parts:
        student = {k: v for k, v in mine.items() if k.startswith(f"{part}.")}
        teacher = {k: v for k, v in theirs.items() if k.startswith(f"{part}.")}
        if not student or not teacher:
            raise UserError(f"{where}: {part!r} is not a part of both the student ({run.student.config}) and the "
                            f"teacher ({run.teacher.config})")
        differ = sorted(k for k in set(student) | set(teacher) if student.get(k) != teacher.get(k))
        if differ:
            raise UserError(f"{where}: the teacher's {part} does not fit the student's: {differ[0]} is "
                            f"{teacher.get(differ[0])} in the teacher, {student.get(differ[0])} in the student "
                            f"({len(differ)} entries differ)")
def _memory_signature(site: Site) -> str:
    """What the working-memory check of a run depends on: its terms' losses and parameters, the models,
    the input and batch sizes and the memory asked for."""
    terms = [[t.method, t.params, t.student_location, t.teacher_location] for t in site.run.distill]
    return repr([_model_signature(site.run), terms, site.run.schedule.batch_size, site.mem_gb])


def _check_working_memory(site: Site) -> None:
    """A term whose loss declares its working memory (``working_bytes``; cirkd_pair's grows with the
    square of the map's positions) fits in the memory the run asks for, at its input and batch size."""
    run = site.run
    sized = [(index, term) for index, term in enumerate(run.distill)
             if hasattr(losses.declaration(term.method), "working_bytes")]
    if not sized:
        return
    size = input_size(run)
    shapes = {role: output_shapes(run.task, model.config, model.overrides, size)["shapes"]
              for role, model in (("student", run.student), ("teacher", run.teacher))}
    limit = site.mem_gb * 2**30
    for index, term in sized:
        declared = losses.check_params(term.method, {**term.params, "loss_weight": term.weight})
        for s_path, t_path in zip(term.student_location, term.teacher_location):
            s_calls, t_calls = shapes["student"].get(s_path), shapes["teacher"].get(t_path)
            if not s_calls or not t_calls or len(s_calls[0]) != 4 or len(t_calls[0]) != 4:
                continue  # not reached by the probe: the run's own probe sees it
            s_shape = (*tuple(s_calls[0])[:2], *tuple(t_calls[0])[2:])  # the loss sees the teacher's size
            need = declared.working_bytes(s_shape, tuple(t_calls[0]), run.schedule.batch_size)
            if need > limit:
                raise UserError(f"{site.term_key(index, 'student_location')}: {term.method} on {s_path} "
                                f"({s_shape[2]}x{s_shape[3]} positions at input {size[0]}x{size[1]}) needs about "
                                f"{need / 2**30:.1f} GB for its loss alone, more than resources.mem_gb "
                                f"{site.mem_gb}; distil a smaller map, set params.pooling: true or ask for more "
                                f"memory")


# -- key paths in a study ---------------------------------------------------------------------
def _study_term_key(study: Study, planned) -> Callable[[int, str], str]:
    def key(index: int, name: str) -> str:
        return f"{study.path}: {_where(study, planned, index, name)}"
    return key


def _where(study: Study, planned, index: int, key: str) -> str:
    method = planned.params.get("method")
    if method is not None:
        written_as_list = isinstance((study.spec.raw.get("methods") or {}).get(method), list)
        return f"methods.{method}[{index}].{key}" if written_as_list else f"methods.{method}.{key}"
    return f"run {planned.name}: distill[{index}].{key}"


def _get(data, path: str):
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _study_field_key(study: Study, planned) -> Callable[[str], str]:
    """Where a run field comes from: an axis that sets it, else ``base``."""
    def key(path: str) -> str:
        value = _get(planned.run.to_dict(), path)
        base = study.spec.base
        if value is not None and _get(base, path) == value:
            return f"{study.path}: base.{path}"
        for axis in (axis for group in study.spec.axes_of(planned.params.get("method")) for axis in group):
            if path == axis.path or path.startswith(axis.path + ".") or axis.path.startswith(path + "."):
                return f"{study.path}: {axis.where}"
        return f"{study.path}: base.{path}" if _get(base, path) is not None else \
            f"{study.path}: run {planned.name}: {path}"
    return key
