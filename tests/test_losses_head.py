"""The head losses, LD and CrossKD, on tiny GFL detectors and a real batch: LD equals the term mmdet's
own LDHead adds (value and gradient), CrossKD vanishes for a student equal to its teacher, matches
finite differences, and trains only what the authors' code trains; a plugin declares a head loss the
same way; both train a tiny GFL student against the tiny GFL teacher."""

import json

import pytest
import torch

from kdbench import losses
from kdbench.losses.crosskd import aligned
from tests.head_fixtures import FOUR_CONVS, WIDE_HEAD, det_batch, gfl, head_inputs
from tests.run_fixtures import TINY_DATA, execute


@pytest.fixture(scope="module")
def batch():
    return det_batch(2)


def _gradients(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor | None]:
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
    return dict(zip([name for name, _ in named], grads))


def test_ld_equals_the_ld_term_of_mmdets_ld_head_value_and_gradient(batch):
    """Guarantee: `ld` equals the `loss_ld` that mmdet's own `LDHead` (configs/ld: KL at T = 10, weight 0.25, on the
    positive positions weighted by the student's best class score) computes from the same tiny GFL student and
    teacher on a real batch, in value and in its gradient with respect to every student parameter."""
    from mmdet.models.utils import unpack_gt_instances
    from mmdet.registry import MODELS

    from runners.build import load_config

    inputs, samples = batch
    student = gfl("tiny_det_student").train()
    teacher = gfl("tiny_det_teacher", seed=1).eval().requires_grad_(False)
    config = load_config("tiny_det_student").model
    ld_head = MODELS.build({**config.bbox_head, "type": "LDHead", "train_cfg": config.train_cfg,
                            "loss_ld": {"type": "KnowledgeDistillationKLDivLoss", "loss_weight": 0.25, "T": 10}})
    ld_head.load_state_dict(student.bbox_head.state_dict(), strict=False)
    student.bbox_head = ld_head  # an LDHead is a GFLHead with the LD term added to its losses
    heads = head_inputs(student, teacher, inputs, samples)
    gts, ignored, metas = unpack_gt_instances(samples)
    with torch.no_grad():
        soft = teacher.bbox_head(heads.teacher_feats)[1]
    theirs = sum(ld_head.loss_by_feat(*heads.student_outputs, gts, metas, soft, ignored)["loss_ld"])
    ours = losses.build("ld")(heads)
    assert ours.item() > 0 and ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    mine, reference = _gradients(student, ours), _gradients(student, theirs)
    assert any(g is not None and g.abs().sum() > 0 for g in mine.values())
    for name, param in student.named_parameters():
        zero = torch.zeros_like(param)
        ours_g, theirs_g = mine.get(name), reference.get(name)
        torch.testing.assert_close(zero if ours_g is None else ours_g, zero if theirs_g is None else theirs_g,
                                   rtol=1e-5, atol=1e-9, msg=name)


def test_crosskd_of_a_student_that_is_its_teacher_is_zero(batch):
    """The cross-head predictions of a student with the teacher's weights are the teacher's own:
    both KD terms vanish (to float32 rounding)."""
    inputs, samples = batch
    teacher = gfl("tiny_det_teacher", FOUR_CONVS, seed=1).eval().requires_grad_(False)
    student = gfl("tiny_det_teacher", FOUR_CONVS, seed=2).eval()
    student.load_state_dict(teacher.state_dict())
    loss = losses.build("crosskd")(head_inputs(student, teacher, inputs, samples))
    assert abs(loss.item()) < 1e-5


def test_crosskd_aligns_the_students_channels_to_the_teachers_mean_and_std():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 4, 5, generator=g) * 4 + 2, torch.randn(2, 3, 4, 5, generator=g) * 0.5 - 1
    out = aligned(s, t)
    std, mean = torch.std_mean(out, dim=(0, 2, 3))
    t_std, t_mean = torch.std_mean(t, dim=(0, 2, 3))
    torch.testing.assert_close(mean, t_mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(std, t_std, atol=1e-5, rtol=1e-5)


def test_crosskd_trains_the_students_convs_up_to_the_reused_index_and_never_its_own_predictors(batch):
    """Guarantee: `crosskd`'s gradient reaches the student's first `reused_teacher_head_idx` stacked convs of
    each branch and its FPN, never its later convs nor its own predictors (`gfl_cls`, `gfl_reg`): the student's
    head features are run through the frozen teacher head, as in jbwang1997/CrossKD."""
    inputs, samples = batch
    student = gfl("tiny_det_student", {**WIDE_HEAD, **FOUR_CONVS}).train()
    teacher = gfl("tiny_det_teacher", FOUR_CONVS, seed=1).eval().requires_grad_(False)
    grads = _gradients(student, losses.build("crosskd", reused_teacher_head_idx=3)(
        head_inputs(student, teacher, inputs, samples)))

    def reached(prefix: str) -> bool:
        return any(g is not None and g.abs().sum() > 0 for name, g in grads.items() if name.startswith(prefix))

    assert all(reached(f"bbox_head.{branch}_convs.{i}.") for branch in ("cls", "reg") for i in range(3))
    assert reached("neck.") and reached("backbone.")
    assert not any(reached(f"bbox_head.{part}") for part in ("cls_convs.3.", "reg_convs.3.", "gfl_cls.", "gfl_reg.",
                                                             "scales."))
    assert not any(p.grad is not None for p in teacher.parameters())


def test_crosskd_gradient_matches_a_finite_difference_in_float64(batch):
    """The derivative along a random direction of the student's FPN features equals the central
    difference of the loss (float64)."""
    inputs, samples = batch
    student = gfl("tiny_det_student", WIDE_HEAD).double().train()
    teacher = gfl("tiny_det_teacher", seed=1).double().eval().requires_grad_(False)
    heads = head_inputs(student, teacher, inputs.double(), samples)
    loss = losses.build("crosskd", reused_teacher_head_idx=1, reg_weight=4.0)
    feats = [f.detach().requires_grad_(True) for f in heads.student_feats]
    g = torch.Generator().manual_seed(0)
    direction = [torch.randn(f.shape, generator=g, dtype=torch.float64) for f in feats]

    def value(shift: float) -> torch.Tensor:
        moved = tuple(f + shift * d for f, d in zip(feats, direction))
        return loss(heads.__class__(**{**heads.__dict__, "student_feats": moved}))

    analytic = sum((grad * d).sum() for grad, d in zip(torch.autograd.grad(value(0.0), feats), direction))
    h = 1e-7  # the teacher's later ReLUs have kinks near the point: a small step stays on one side
    numeric = (value(h) - value(-h)) / (2 * h)
    assert analytic.item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-10)


def test_a_plugin_loss_declares_that_it_needs_the_heads_as_the_built_ins_do():
    """A loss registered by its class alone carries ``needs_heads``, ``head_parts`` and ``head_kind`` into
    its declaration (what the trainer and the preflight read)."""
    from torch import nn

    from kdbench.losses import registry

    @registry.register("test_head_plugin_probe")
    class HeadProbe(nn.Module):
        needs_heads = True
        needs_adapter = False
        head_parts = ("integral",)
        head_kind = "a distribution head"

        def __init__(self, loss_weight: float = 1.0):
            super().__init__()
            self.loss_weight = loss_weight

        def forward(self, heads):
            return heads.student_outputs[1][0].sum() * 0 * self.loss_weight

    try:
        declared = losses.declaration("test_head_plugin_probe")
        assert declared.needs_heads and declared.head_parts == ("integral",) and HeadProbe.needs_heads
        assert declared.head_kind == "a distribution head"
        assert not losses.declaration("cwd").needs_heads and losses.declaration("ld").needs_heads
    finally:
        for table in (registry._CLASSES, registry._DECLARED, registry._ORIGIN):
            table.pop("test_head_plugin_probe", None)


def _tiny_gfl_run(tmp_path, distill: list[dict], student: dict, **more) -> dict:
    """A tiny GFL student distilled for 4 iterations from the tiny GFL teacher (its untrained
    weights saved as a checkpoint): the final record."""
    from runners.build import build_model, load_config

    checkpoint = tmp_path / "teacher.pth"
    torch.save(build_model(load_config("tiny_det_teacher"), "det", init=False).state_dict(), checkpoint)
    run = {"task": "det", "student": student, "dataset": TINY_DATA,
           "teacher": {"config": "tiny_det_teacher", "checkpoint": str(checkpoint)}, "distill": distill,
           "schedule": {"iterations": 4, "batch_size": 2, "checkpoint_interval": 4}, "seed": 0, **more}
    return execute(run, tmp_path / "run")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ld", "crosskd"])
def test_ld_and_crosskd_train_a_tiny_gfl_student_against_the_tiny_gfl_teacher(method, tmp_path):
    """Guarantee: `ld` and `crosskd` (with `pkd` on the neck beside it, as CrossKD + PKD) each train the tiny GFL
    student against the tiny GFL teacher: the run completes (no `kd_inactive`: each term is non-zero and its
    gradient reaches the student) and logs the term at every step."""
    from kdbench import store

    terms = [{"name": method, "method": method, "student_location": "bbox_head"}]
    student = {"config": "tiny_det_student"}
    if method == "crosskd":  # the tiny heads have 2 stacked convs; the student's head as wide as the teacher's
        terms[0]["params"] = {"reused_teacher_head_idx": 1}
        terms.append({"name": "pkd_neck", "method": "pkd", "weight": 6.0, "student_location": "neck[*]",
                      "adapter": True})
        student["overrides"] = dict(WIDE_HEAD)
    final = _tiny_gfl_run(tmp_path, terms, student)
    assert final["status"] == "complete", store.read_json(tmp_path / "run" / "error.json")
    logged = [json.loads(line) for line in next((tmp_path / "run").glob("*/vis_data/scalars.json")).read_text()
              .splitlines()]
    steps = [entry for entry in logged if "loss" in entry]
    assert steps and all(f"loss_kd_{term['name']}" in entry for entry in steps for term in terms)


PLUGIN = '''
import torch
from torch import nn

from kdbench.losses import register
from kdbench.losses.head_inputs import HeadInputs


@register("head_score_mse")
class HeadScoreMSE(nn.Module):
    """The squared difference of the heads' class probabilities on every level."""

    needs_heads = True
    needs_adapter = False
    head_parts = ("gfl_cls",)
    head_kind = "a head with a gfl_cls predictor"

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, heads: HeadInputs) -> torch.Tensor:
        with torch.no_grad():
            teacher = heads.teacher_head(heads.teacher_feats)[0]
        student = heads.student_outputs[0]
        return sum(((s.sigmoid() - t.sigmoid()) ** 2).mean() for s, t in zip(student, teacher)) * self.loss_weight
'''


@pytest.mark.slow
def test_a_plugins_head_loss_is_given_the_heads_and_trains_the_student(tmp_path):
    """Guarantee: A plugin's loss that declares `needs_heads` is called with the same `HeadInputs` as `ld` and
    `crosskd` (both heads, their inputs, the student head's outputs, the data samples) and trains a tiny GFL
    student: the run completes without `kd_inactive` and logs the term."""
    from kdbench import store

    plugin = tmp_path / "head_plugin.py"
    plugin.write_text(PLUGIN)
    term = {"name": "score", "method": "head_score_mse", "weight": 10.0, "student_location": "bbox_head"}
    try:
        final = _tiny_gfl_run(tmp_path, [term], {"config": "tiny_det_student"}, plugins=[str(plugin)])
    finally:
        from kdbench.losses import registry

        for table in (registry._CLASSES, registry._DECLARED, registry._ORIGIN):
            table.pop("head_score_mse", None)
    assert final["status"] == "complete", store.read_json(tmp_path / "run" / "error.json")
    logged = (tmp_path / "run").glob("*/vis_data/scalars.json")
    assert all("loss_kd_score" in json.loads(line) for line in next(logged).read_text().splitlines()
               if "loss" in json.loads(line))
