"""The preflight's check of terms whose loss declares ``needs_heads`` (LD, CrossKD, a plugin's):
each names, in each model, a detection head (a module with its own ``loss_cls``, as every mmdet
dense head has) that has the submodules the loss declares (``head_parts``: LD needs a head with
box-edge distributions, such as GFL's); a declaration may add its own rule, ``head_problem``, on the
two heads' submodules and their output shapes (CrossKD: the reused conv exists in both heads and
gives maps of equal channels). Module names and shapes come from runners.model_facts (cached), so
no model is built for it. A failure is one line naming the file, the key and what is valid.
"""

from __future__ import annotations

from kdbench import losses
from kdbench.errors import UserError
from runners.model_facts import input_size, module_names, output_shapes


def _head_parts(task: str, model, location: str, shapes: dict) -> dict[str, tuple | None]:
    """The head's submodules (names relative to it) and the first output shape of each the probe saw."""
    prefix = f"{location}."
    return {name[len(prefix):]: tuple(shapes[name][0]) if shapes.get(name) else None
            for name in module_names(task, model.config, model.overrides) if name.startswith(prefix)}


def check_heads(site) -> None:
    """Raise a UserError for the first head term whose location cannot serve its loss."""
    run = site.run
    terms = [(index, term) for index, term in enumerate(run.distill)
             if getattr(losses.declaration(term.method), "needs_heads", False)]
    if not terms:
        return
    size = input_size(run)
    models = {"student": run.student, "teacher": run.teacher}
    shapes = {role: output_shapes(run.task, model.config, model.overrides, size)["shapes"]
              for role, model in models.items()}
    for index, term in terms:
        declared = losses.declaration(term.method)
        parts = {}
        for role, key in (("student", "student_location"), ("teacher", "teacher_location")):
            location, model = getattr(term, key)[0], models[role]
            parts[role] = _head_parts(run.task, model, location, shapes[role])
            where = site.term_key(index, key)
            if "loss_cls" not in parts[role]:
                raise UserError(f"{where}: {location!r} is not a detection head of the {role} model ({model.config}); "
                                f"{term.method!r} needs the detector's head there, e.g. bbox_head")
            missing = [part for part in declared.head_parts if part not in parts[role]]
            if missing:
                raise UserError(f"{where}: {term.method!r} needs {declared.head_kind or 'another head'}; the {role}'s "
                                f"{location} ({model.config}) has no {', '.join(missing)}")
        problem = getattr(losses.check_params(term.method, term.params), "head_problem", None)
        message = problem(parts["student"], parts["teacher"]) if problem else None
        if message:
            raise UserError(f"{site.term_key(index, 'params')}: {message}")
