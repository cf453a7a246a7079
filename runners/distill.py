"""The distillation model: a trainable student, a frozen teacher, and KD terms between them.

The teacher runs in eval mode without autograd, in ``tensor`` mode (no teacher losses, unlike
MMRazor 1.x), and only as far as its tapped outputs need. Outputs are tapped by dotted module
path; paths and shapes are checked when the model is built, by one probe forward of both
models, so a typo or a channel mismatch fails before training. Adapters train with the student.
The training loss is the student's task losses plus one ``loss_kd_<term>`` per term. A term whose
loss declares ``needs_heads`` (LD, CrossKD) is called with the two detection heads and their inputs
instead of two maps (runners.head_terms).
"""

from __future__ import annotations

import contextlib
import math
import time

import torch
from mmengine.model import BaseModel
from torch import nn

from kdbench import losses
from kdbench.errors import UserError
from kdbench.losses.adapters import ChannelAdapter, align
from kdbench.spec import Term
from runners.head_terms import HeadTerms, needs_heads
from runners.taps import Taps


class DivergedError(RuntimeError):
    """A loss became NaN or Inf: the run stops and is recorded as diverged."""

    def __init__(self, key: str, value: float):
        super().__init__(f"{key} is {value}")
        self.key, self.value = key, value


class KDInactiveError(RuntimeError):
    """A distill term did nothing over the run's first training steps: the run stops as
    ``kd_inactive`` (never averaged), naming the term and why, instead of training a student
    baseline under a distillation cell's name."""

    def __init__(self, term: str, reason: str):
        super().__init__(f"distill term {term!r} is inactive: {reason}")
        self.term, self.reason = term, reason


KD_WATCH_STEPS = 5  # the first training steps of an attempt on which each term's effect is checked


class TermWatch:
    """Whether each distill term acts on the student over the first ``steps`` training steps: its
    loss is finite at every one of them, not exactly zero at all of them, and its gradient with
    respect to the student's tapped outputs is non-zero at one of them at least. The gradient is
    taken with ``torch.autograd.grad`` (the KD part of the graph only, kept for the real backward),
    on these steps alone."""

    def __init__(self, terms: tuple[Term, ...], steps: int = KD_WATCH_STEPS):
        self.terms = {term.name: term for term in terms}
        self.steps = steps
        self.left = steps if terms else 0
        self.nonzero: set[str] = set()
        self.reached: set[str] = set()

    def observe(self, kd: dict, student_outputs: dict[str, list[torch.Tensor]], clock: StepClock) -> None:
        """One training step: ``kd`` the terms' losses, ``student_outputs`` term name -> its tapped
        maps; ``clock``'s stamps are paused while the gradients are taken (they are not the step's)."""
        if self.left <= 0:
            return
        self.left -= 1
        for name in self.terms:
            loss = kd[f"loss_kd_{name}"]
            value = float(loss.detach()) if torch.is_tensor(loss) else float(loss)
            if not math.isfinite(value):
                raise KDInactiveError(name, f"its loss is {value} at training step "
                                            f"{self.steps - self.left} of this attempt")
            if value != 0.0:
                self.nonzero.add(name)
            if name not in self.reached and torch.is_tensor(loss) and loss.requires_grad:
                maps = [s for s in student_outputs[name] if s.requires_grad]
                with clock.paused():
                    grads = torch.autograd.grad(loss, maps, retain_graph=True, allow_unused=True) if maps else []
                if any(g is not None and bool(g.detach().abs().sum() > 0) for g in grads):
                    self.reached.add(name)
        if self.left == 0:
            self._verdict()

    def _verdict(self) -> None:
        for name, term in self.terms.items():
            if name not in self.nonzero:
                why = " (its weight is 0)" if term.weight == 0 else ""
                raise KDInactiveError(name, f"its loss is exactly 0 at each of the first {self.steps} training "
                                            f"steps{why}")
            if name not in self.reached:
                raise KDInactiveError(name, f"its gradient never reaches the student's "
                                            f"{', '.join(term.student_location)} over the first {self.steps} "
                                            f"training steps (a frozen or detached student output?)")


def check_finite(loss_dict: dict) -> None:
    """Raise DivergedError naming the first loss that is NaN or Inf. One host sync per device and
    step: the per-key values are read only when the sum of all of them is not finite."""
    items = [(key, v) for key, value in loss_dict.items()
             for v in (value if isinstance(value, (list, tuple)) else [value])]
    sums: dict = {}  # per device: a loss dict may mix devices (e.g. a value logged from the CPU)
    for _, v in items:
        if torch.is_tensor(v):
            sums[v.device] = sums.get(v.device, 0.0) + v.detach().float().sum()
    numbers = [float(v) for _, v in items if not torch.is_tensor(v)] + [float(total) for total in sums.values()]
    if all(map(math.isfinite, numbers)):
        return
    for key, v in items:
        number = float(v.detach().sum()) if torch.is_tensor(v) else float(v)
        if not math.isfinite(number):
            raise DivergedError(key, number)


class DistillModel(BaseModel):
    """Student + frozen teacher + KD terms, for mmengine's Runner.

    Args:
        student: an mmseg/mmdet model (with its data preprocessor).
        teacher: the teacher model, weights already loaded; None for a student baseline.
        terms: the run's distill terms (kdbench.spec.Term).
        probe: a function returning ``(inputs, data_samples)`` of one small batch, used once to
            check locations and shapes and to size the adapters.
        watch_steps: the first training steps on which each term must act (TermWatch).
        teacher_mode: ``eval`` (the whole teacher in eval mode while the student trains, as the
            paper's code does) or ``bn_eval`` (only its batch-norm layers: its dropout stays
            active, as MMRazor's distiller leaves it).
        teacher_forward: ``full`` (the teacher's forward, stopped once its tapped outputs are
            captured) or ``neck`` (only ``extract_feat``: backbone and neck, as MMRazor's
            FpnTeacherDistill runs it).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None, terms: tuple[Term, ...], probe,
                 watch_steps: int = KD_WATCH_STEPS, teacher_mode: str = "eval", teacher_forward: str = "full"):
        super().__init__(data_preprocessor=student.data_preprocessor)
        self.student = student
        self.terms = terms
        self.kd_losses = nn.ModuleDict()
        self.adapters = nn.ModuleDict()
        self.clock = StepClock()  # the step's teacher forward and KD terms (read by the cost hook)
        self.teacher_mode = teacher_mode
        self.teacher_forward = teacher_forward
        self.watch = TermWatch(terms, watch_steps)
        if not terms:
            self.teacher = None
            return
        if teacher is None:
            raise UserError("distill terms need a teacher")
        self.teacher = teacher.eval().requires_grad_(False)
        self._register_state_dict_hook(_drop_teacher_weights)
        for term in terms:
            self.kd_losses[term.name] = losses.build(term.method, **term.params, loss_weight=term.weight)
            if getattr(self.kd_losses[term.name], "num_classes", 0) is None:  # sized by the classes (cirkd_memory)
                self.kd_losses[term.name].num_classes = _num_classes(student, term.name)
        self.heads = HeadTerms(student, teacher, terms)  # terms of losses that need the heads
        maps = [t for t in terms if not needs_heads(t)]
        self.student_taps = Taps(student, [p for t in maps for p in t.student_location]
                                 + self.heads.feature_paths("student"), "student")
        self.teacher_taps = Taps(teacher, [p for t in maps for p in t.teacher_location]
                                 + self.heads.feature_paths("teacher"), "teacher", stop_when_done=True)
        self._build_adapters(*probe())

    # -- construction -------------------------------------------------------------------------
    def _build_adapters(self, inputs, data_samples) -> None:
        was_training = self.student.training
        self.student.eval()
        with torch.no_grad():
            inputs = inputs.to(next(self.student.parameters()).device)
            with self.student_taps:
                self.student(inputs, data_samples, mode="tensor")
            with self.teacher_taps:
                self._run_teacher(inputs, data_samples)
        self.student.train(was_training)
        for term in self.terms:
            if needs_heads(term):
                continue  # called with the heads (runners.head_terms), not with two maps
            for index, (s_path, t_path) in enumerate(zip(term.student_location, term.teacher_location)):
                outs_S, outs_T = self.student_taps.outputs[s_path], self.teacher_taps.outputs[t_path]
                where = f"distill term {term.name!r} ({s_path} -> {t_path})"
                if len(outs_S) != len(outs_T):
                    raise UserError(f"{where}: the student calls it {len(outs_S)} times per forward, "
                                    f"the teacher {len(outs_T)}")
                s, t = outs_S[0], outs_T[0]
                if s.dim() != t.dim():
                    raise UserError(f"{where}: student output {tuple(s.shape)} and teacher output "
                                    f"{tuple(t.shape)} have different ranks")
                needs = s.shape[1] != t.shape[1] and losses.declaration(term.method).needs_adapter
                if needs and term.adapter is None:
                    raise UserError(f"{where}: student has {s.shape[1]} channels {tuple(s.shape)}, "
                                    f"teacher {t.shape[1]} {tuple(t.shape)}; add an adapter")
                if term.adapter is not None:
                    self.adapters[_adapter_key(term.name, index)] = ChannelAdapter(
                        s.shape[1], t.shape[1], norm=term.adapter.norm, act=term.adapter.act)
                if s.shape[2:] != t.shape[2:] and not term.resize:
                    raise UserError(f"{where}: student map {tuple(s.shape)} and teacher map "
                                    f"{tuple(t.shape)} differ in size; set resize: true")
        self.adapters.to(next(self.student.parameters()).device)
        # One pass of every term on the probe: lazy modules (HO's critic) get their shapes, and a
        # term that cannot run on these maps fails now rather than after the first iteration.
        was_training = self.training
        self.eval()
        with torch.no_grad():
            self._kd_losses(data_samples)
        self.train(was_training)

    def _run_teacher(self, inputs, data_samples) -> None:
        if self.teacher_forward == "neck":
            if not hasattr(self.teacher, "extract_feat"):
                raise UserError("teacher.forward: neck needs a model with backbone and neck (extract_feat); "
                                f"{type(self.teacher).__name__} has none: use forward: full")
            self.teacher.extract_feat(inputs)
        else:
            self.teacher(inputs, data_samples, mode="tensor")

    # -- modes --------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            # Frozen either way: no gradients, and BN statistics stay the teacher's.
            self.teacher.train(mode and self.teacher_mode == "bn_eval")
            for module in self.teacher.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, inputs, data_samples=None, mode: str = "tensor"):
        if mode == "loss":
            return self.loss(inputs, data_samples)
        return self.student(inputs, data_samples, mode=mode)

    def loss(self, inputs, data_samples) -> dict:
        if not self.terms:
            task_losses = self.student(inputs, data_samples, mode="loss")
            check_finite(task_losses)
            return task_losses
        self.heads.clear()
        with self.student_taps:
            task_losses = self.student(inputs, data_samples, mode="loss")
        device = inputs.device
        self.clock.stamp("teacher_start", device)
        with torch.no_grad(), self.teacher_taps:
            self._run_teacher(inputs, data_samples)
        self.clock.stamp("teacher_end", device)
        kd = self._kd_losses(data_samples, timed=True)
        self.clock.stamp("kd_forward_end", device)
        if self.training and self.watch.left > 0:  # the first steps only: no per-step cost after them
            self.watch.observe(kd, {term.name: self._watched(term) for term in self.terms}, self.clock)
        task_losses.update(kd)
        check_finite(task_losses)
        return task_losses

    def _watched(self, term: Term) -> list[torch.Tensor]:
        """The student's tapped outputs a term's gradient must reach (a head term: the head's inputs)."""
        paths = self.heads.feature_paths("student") if needs_heads(term) else term.student_location
        return [s for path in paths for s in self.student_taps.outputs[path]]

    def _kd_losses(self, data_samples, timed: bool = False) -> dict:
        """One ``loss_kd_<term>`` per term. ``timed``: mark where the terms' backward starts (at
        their losses) and ends (at the student's tapped maps) for the step clock."""
        out = {}
        timed = timed and torch.is_grad_enabled()
        for term in self.terms:
            loss_module = self.kd_losses[term.name]
            args, kwargs = self._loss_inputs(term, data_samples)
            total = 0.0
            pairs = zip(term.student_location, term.teacher_location)
            if needs_heads(term):  # called with the heads and their inputs, not with two maps
                mark = (lambda s: _BackwardMark.apply(s, self.clock, "kd_backward_end")) if timed else None
                total, pairs = loss_module(self.heads.inputs(term, self.student_taps, self.teacher_taps,
                                                             data_samples, mark)), ()
            for index, (s_path, t_path) in enumerate(pairs):
                key = _adapter_key(term.name, index)
                adapter = self.adapters[key] if key in self.adapters else None
                for s, t in zip(self.student_taps.outputs[s_path], self.teacher_taps.outputs[t_path]):
                    if timed and s.requires_grad:
                        s = _BackwardMark.apply(s, self.clock, "kd_backward_end")
                    if adapter is not None:
                        s = adapter(s)
                    if term.resize:
                        s = align(s, t, resize=True, where=term.name)
                    if self.training and getattr(loss_module, "has_own_optimizer", False):
                        # e.g. HO's discriminator: one step of its own optimizer on detached maps.
                        # Logged as <term>_critic / <term>_critic_gp: no "loss" in the key, so
                        # mmengine does not add the critic's loss to the student's logged total.
                        for key, value in loss_module.discriminator_step(s.detach(), t).items():
                            name = "critic" if key == "loss_d" else f"critic_{key}"
                            out[f"{term.name}_{name}"] = torch.tensor(value, device=s.device)
                    total = total + loss_module(s, t, *args, **kwargs)
            if timed and torch.is_tensor(total) and total.requires_grad:
                total = _BackwardMark.apply(total, self.clock, "kd_backward_start")
            out[f"loss_kd_{term.name}"] = total
        return out

    def _loss_inputs(self, term: Term, data_samples) -> tuple[tuple, dict]:
        """What a term's loss is given beyond the two maps, as its declaration asks
        (kdbench.losses.params.INPUTS): the segmentation labels as a third argument; the
        ground-truth boxes and the images' shapes as the keywords ``boxes`` and ``image_shapes``."""
        declared = losses.declaration(term.method)
        args = (_labels(data_samples),) if declared.needs_labels else ()
        kwargs = _boxes(data_samples) if getattr(declared, "needs_boxes", False) else {}
        return args, kwargs

    def frozen_in_student_optimizer(self) -> list[str]:
        """Parameter-name prefixes that the student's optimizer must leave alone (losses that
        train their own parameters with their own optimizer)."""
        return [f"kd_losses.{name}" for name, module in self.kd_losses.items()
                if getattr(module, "has_own_optimizer", False)]


class StepClock:
    """Time stamps of one training step's distillation parts: the teacher's forward, the KD terms'
    forward, and the KD terms' backward (stamped from inside autograd by ``_BackwardMark``).

    On a GPU the stamps are CUDA events, so nothing synchronises inside the step; the cost hook
    reads them after its end-of-step synchronisation. On CPU they are ``perf_counter`` values.
    The KD terms' backward runs as one stretch: autograd executes ready nodes newest first, and
    every node of the KD terms is newer than every node of the student's forward, so it starts
    at the first ``kd_backward_start`` stamp and ends at the last ``kd_backward_end`` stamp.
    """

    def __init__(self):
        self.stamps: dict[str, list] = {}
        self.paused_depth = 0

    def reset(self) -> None:
        self.stamps = {}

    @contextlib.contextmanager
    def paused(self):
        """No stamps inside: a backward that is not the step's own (TermWatch's gradient check)."""
        self.paused_depth += 1
        try:
            yield
        finally:
            self.paused_depth -= 1

    def stamp(self, name: str, device: torch.device) -> None:
        if self.paused_depth:
            return
        if device.type == "cuda":
            value = torch.cuda.Event(enable_timing=True)
            value.record()
        else:
            value = time.perf_counter()
        self.stamps.setdefault(name, []).append(value)

    def parts(self) -> dict[str, float]:
        """Seconds of ``teacher``, ``kd_forward`` and ``kd_backward`` in the step since the last
        reset (0 for a part that did not run). Call after the step has synchronised."""
        if "teacher_start" not in self.stamps:
            return {"teacher": 0.0, "kd_forward": 0.0, "kd_backward": 0.0}
        origin = self.stamps["teacher_start"][0]

        def at(value) -> float:
            return origin.elapsed_time(value) / 1000 if hasattr(value, "elapsed_time") else value - origin

        times = {name: [at(v) for v in values] for name, values in self.stamps.items()}

        def span(start: float | None, end: float | None) -> float:
            return max(0.0, end - start) if start is not None and end is not None else 0.0

        first = {name: min(values) for name, values in times.items()}
        last = {name: max(values) for name, values in times.items()}
        return {"teacher": span(first.get("teacher_start"), first.get("teacher_end")),
                "kd_forward": span(first.get("teacher_end"), first.get("kd_forward_end")),
                "kd_backward": span(first.get("kd_backward_start"), last.get("kd_backward_end"))}


class _BackwardMark(torch.autograd.Function):
    """Identity whose backward stamps the step clock."""

    @staticmethod
    def forward(ctx, x, clock, name):
        ctx.clock, ctx.name = clock, name
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.clock.stamp(ctx.name, grad.device)
        return grad, None, None


def _adapter_key(term_name: str, index: int) -> str:
    return f"{term_name}__{index}"


def _labels(data_samples) -> torch.Tensor:
    """Segmentation labels (N, H, W) from mmseg data samples (for label-aware KD such as IFVD)."""
    return torch.stack([s.gt_sem_seg.data.squeeze(0) for s in data_samples]).long()


def _boxes(data_samples) -> dict:
    """``boxes``: each image's ground-truth boxes, an (n_i, 4) tensor of x1, y1, x2, y2 in the input
    image's pixels (mmdet's ``gt_instances.bboxes``, a tensor or a box structure holding one);
    ``image_shapes``: each image's (h, w), the resized image before the batch's padding (its
    ``img_shape``)."""
    boxes = [getattr(s.gt_instances.bboxes, "tensor", s.gt_instances.bboxes) for s in data_samples]
    return {"boxes": boxes, "image_shapes": [tuple(s.metainfo["img_shape"][:2]) for s in data_samples]}


def _num_classes(student: nn.Module, term: str) -> int:
    """The class count of a segmentation student's decode head, for a term whose loss needs it."""
    head = getattr(student, "decode_head", None)
    if getattr(head, "num_classes", None) is None:
        raise UserError(f"distill term {term!r}: the student has no decode head to take num_classes from; "
                        "set params.num_classes")
    return int(head.num_classes)


def _drop_teacher_weights(module, state_dict, prefix, local_metadata):
    # Checkpoints hold the student and adapters; the teacher comes from its own checkpoint.
    for key in [k for k in state_dict if k.startswith(prefix + "teacher.")]:
        del state_dict[key]
    return state_dict
