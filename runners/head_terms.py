"""The trainer's side of losses that declare ``needs_heads``: what their terms tap, and the one
``HeadInputs`` (kdbench.losses.head_inputs) each such loss is called with.

A head term's location is the detection head itself (``bbox_head``). Its inputs are the
detector's features (``extract_feat``: the neck's levels, or the backbone's where there is no
neck), tapped on both models like any location; the teacher's forward stops there when nothing
else needs its head. The student's head output of the step is caught by a forward hook on the
head (mmdet's loss calls the head as a module); where it was not (the build's probe, which runs
the model in ``tensor`` mode), the head is run on the tapped features.
"""

from __future__ import annotations

from torch import nn

from kdbench import losses
from kdbench.errors import UserError
from kdbench.losses.head_inputs import HeadInputs
from kdbench.spec import Term
from runners.taps import find_module


def needs_heads(term: Term) -> bool:
    return bool(getattr(losses.declaration(term.method), "needs_heads", False))


def feature_location(model: nn.Module) -> str:
    """Where a detector's head inputs are tapped: every level of its neck (or backbone)."""
    return "neck[*]" if getattr(model, "with_neck", hasattr(model, "neck")) else "backbone[*]"


class HeadTerms:
    """The heads of the head terms of a run, and the hooks that catch the student head's output."""

    def __init__(self, student: nn.Module, teacher: nn.Module, terms: tuple[Term, ...]):
        self.terms = [term for term in terms if needs_heads(term)]
        self.student_features, self.teacher_features = feature_location(student), feature_location(teacher)
        self.heads: dict[str, tuple[nn.Module, nn.Module]] = {}
        self.outputs: dict[str, tuple] = {}
        for term in self.terms:
            if len(term.student_location) != 1 or len(term.teacher_location) != 1:
                raise UserError(f"distill term {term.name!r}: a head loss ({term.method}) takes one location "
                                "per model, its detection head (e.g. bbox_head)")
            s_path, t_path = term.student_location[0], term.teacher_location[0]
            student_head = find_module(student, s_path, "student")
            self.heads[term.name] = (student_head, find_module(teacher, t_path, "teacher"))
            if s_path not in self.outputs:
                self.outputs[s_path] = ()
                student_head.register_forward_hook(self._catch(s_path))

    def _catch(self, path: str):
        def hook(module, args, output):
            self.outputs[path] = tuple(output)
        return hook

    def feature_paths(self, role: str) -> list[str]:
        """The locations the run's taps must add for the head terms (none without one)."""
        return [self.student_features if role == "student" else self.teacher_features] if self.terms else []

    def clear(self) -> None:
        """Forget the student heads' outputs (call before each student forward)."""
        self.outputs = {path: () for path in self.outputs}

    def inputs(self, term: Term, student_taps, teacher_taps, data_samples, mark=None) -> HeadInputs:
        """The ``HeadInputs`` of ``term`` for this step, from the taps of both forwards; ``mark``
        (the step clock's backward mark), where given, is applied to each student tensor."""
        student_head, teacher_head = self.heads[term.name]
        student_feats = tuple(student_taps.outputs[self.student_features])
        outputs = self.outputs[term.student_location[0]] or tuple(student_head(student_feats))
        if mark is not None:
            student_feats = tuple(mark(f) if f.requires_grad else f for f in student_feats)
            outputs = tuple([mark(t) if t.requires_grad else t for t in group] if isinstance(group, (list, tuple))
                            else group for group in outputs)
        return HeadInputs(student_head=student_head, teacher_head=teacher_head, student_feats=student_feats,
                          teacher_feats=tuple(teacher_taps.outputs[self.teacher_features]),
                          student_outputs=outputs, data_samples=list(data_samples))
