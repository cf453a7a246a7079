"""FGD (Yang et al., CVPR 2022; yzd-v/FGD's ``FeatureLoss``): checked against the plain formulation of
benchmarks/references.py (masks drawn box by box, the maps multiplied by the square roots of the
attention and the masks, as the authors write it) on the module's own weights, its masks on small
worked examples, and its trainable parts (the authors' parameter names, a state dict that builds
them, their initialisation)."""

import copy

import pytest
import torch

from benchmarks.references import reference_fgd
from kdbench import losses
from kdbench.errors import UserError
from kdbench.losses.fgd import box_masks

SETTINGS = {"temp": 0.5, "alpha_fgd": 1e-3, "beta_fgd": 5e-4, "gamma_fgd": 5e-4, "lambda_fgd": 5e-6}
AUTHORS_KEYS = [f"{layer}.{p}" for layer in ("conv_mask_s", "conv_mask_t") for p in ("weight", "bias")] + [
    f"channel_add_conv_{side}.{index}.{p}" for side in "st" for index in (0, 1, 3) for p in ("weight", "bias")]


def _inputs(cs=6, ct=8, n=3, h=9, w=11, seed=0):
    """Maps, and boxes on images of other sizes than the map's: one box to the image's edges, an
    image without boxes, overlapping boxes."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, cs, h, w, generator=g, dtype=torch.float64) * 2
    t = torch.randn(n, ct, h, w, generator=g, dtype=torch.float64) * 2
    shapes = [(70, 90), (64, 64), (50, 81)][:n]
    boxes = []
    for i, (ih, iw) in enumerate(shapes):
        count = (4, 0, 6)[i % 3]
        corners = torch.rand(count, 2, 2, generator=g, dtype=torch.float64).sort(dim=1).values.reshape(count, 4)
        image_boxes = corners * torch.tensor([iw, ih, iw, ih], dtype=torch.float64)
        if count:
            image_boxes[0] = torch.tensor([0.0, 0.0, iw, ih])
        boxes.append(image_boxes)
    return s, t, boxes, shapes


def _built(cs=6, ct=8, seed=0, **params):
    """An fgd loss with every layer at random non-zero weights (the last convolutions start at zero)."""
    loss = losses.build("fgd", **{**SETTINGS, **params})
    loss.build_connectors(cs, ct, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in loss.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.3)
    return loss


@pytest.mark.parametrize("cs", [6, 8])
def test_fgd_matches_the_authors_formulation_in_value_and_every_gradient(cs):
    """Guarantee: `fgd` equals FGD's `FeatureLoss` as its authors write it (yzd-v/FGD
    mmdet/distillation/losses/fgd.py: masks drawn box by box, maps times the square roots of the teacher's
    attention and of the masks) on the same weights and boxes, in value and in the gradients of the student's
    map and of every layer, with and without the `align` layer, to 1e-12 in float64."""
    s, t, boxes, shapes = _inputs(cs=cs)
    loss = _built(cs=cs, loss_weight=2.0)
    layers = {name: copy.deepcopy(part) for name, part in loss.named_children()}
    s_ref = s.clone().requires_grad_(True)
    expected = reference_fgd(layers, s_ref, t, boxes, shapes, {**SETTINGS, "loss_weight": 2.0})
    expected_grads = torch.autograd.grad(expected, [s_ref, *(p for part in layers.values() for p in part.parameters())])
    s.requires_grad_(True)
    value = loss(s, t, boxes=boxes, image_shapes=shapes)
    grads = torch.autograd.grad(value, [s, *loss.parameters()])
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    assert len(grads) == len(expected_grads) == 1 + len(list(loss.parameters()))
    for ours, reference in zip(grads, expected_grads):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-15)


def test_fgd_masks_weigh_each_box_by_its_size_on_the_map_and_normalise_the_background():
    """A box scaled from the image to the map, its ends rounded outwards, to 3 x 3 map positions weighs 1/9
    at each; where two boxes overlap the larger weight wins; the background is the rest, summing to 1; an
    image without boxes is all background."""
    boxes = [torch.tensor([[20.0, 10.0, 39.0, 29.0], [0.0, 0.0, 10.0, 10.0]]), torch.zeros(0, 4)]
    fg, bg = box_masks(boxes, [(40, 80), (40, 80)], 4, 8, torch.float64, "cpu")
    # box 1: columns floor(20/80*8)=2 .. ceil(39/80*8)=4, rows 1 .. 3: 3 x 3 -> 1/9; box 2: rows 0..1, columns 0..1
    expected = torch.zeros(4, 8, dtype=torch.float64)
    expected[1:4, 2:5] = 1 / 9
    expected[0:2, 0:2] = 1 / 4
    torch.testing.assert_close(fg[0], expected)
    assert bg[0].sum().item() == pytest.approx(1.0) and (bg[0][expected > 0] == 0).all()
    assert (fg[1] == 0).all() and torch.allclose(bg[1], torch.full((4, 8), 1 / 32, dtype=torch.float64))


def test_fgd_loads_a_state_dict_with_the_authors_parameter_names_and_builds_its_layers_from_it():
    """A state dict keyed as the authors' `FeatureLoss` (align, conv_mask_s/t, channel_add_conv_s/t with the
    Sequential's indices 0, 1, 3) builds a fresh loss's layers for its channel counts and loads exactly."""
    source = _built(cs=6, ct=8)
    state = source.state_dict()
    assert sorted(state) == sorted(AUTHORS_KEYS + ["align.weight", "align.bias"])
    fresh = losses.build("fgd", **SETTINGS)
    fresh.load_state_dict(state)
    assert fresh.align.in_channels == 6 and fresh.conv_mask_s.in_channels == 8
    s, t, boxes, shapes = _inputs()
    assert fresh(s, t, boxes=boxes, image_shapes=shapes).item() == source(s, t, boxes=boxes, image_shapes=shapes).item()
    same = losses.build("fgd")
    same.load_state_dict({k: v for k, v in _built(cs=8, ct=8).state_dict().items()})
    assert same.align is None and sorted(same.state_dict()) == sorted(AUTHORS_KEYS)


def test_fgd_starts_its_layers_as_the_authors_and_sends_no_gradient_to_the_teacher():
    """Built at the first call: the GcBlocks' last convolutions zero and the context masks' biases zero (the
    authors' reset_parameters), so the relation term starts as the plain squared difference; the teacher's
    map gets no gradient, the student's does."""
    torch.manual_seed(0)
    s, t, boxes, shapes = _inputs(cs=8)
    t.requires_grad_(True)
    s.requires_grad_(True)
    loss = losses.build("fgd")
    value = loss(s, t, boxes=boxes, image_shapes=shapes)
    for side in "st":
        block = getattr(loss, f"channel_add_conv_{side}")
        assert (block[3].weight == 0).all() and (block[3].bias == 0).all()
        assert (getattr(loss, f"conv_mask_{side}").bias == 0).all()
    grad_s, grad_t = torch.autograd.grad(value, [s, t], allow_unused=True)
    assert grad_t is None and grad_s.abs().sum() > 0


def test_fgd_declares_the_authors_defaults_and_needs_boxes():
    assert losses.parameters("fgd") == {"temp": 0.5, "alpha_fgd": 0.001, "beta_fgd": 0.0005, "gamma_fgd": 0.001,
                                        "lambda_fgd": 0.000005, "loss_weight": 1.0}
    declared = losses.declaration("fgd")
    assert declared.needs_boxes and not declared.needs_labels and not declared.needs_adapter
    assert losses.get("fgd").needs_boxes is True and losses.get("pkd").needs_boxes is False
    with pytest.raises(UserError, match="temp"):
        losses.check_params("fgd", {"temp": 0})


def test_fgd_called_without_boxes_says_what_it_needs():
    s, t, _, _ = _inputs()
    with pytest.raises(ValueError, match="boxes"):
        losses.build("fgd")(s, t)


def test_fgd_takes_the_authors_call_boxes_and_image_metas_as_well():
    """Called as the authors' `FeatureLoss` is, `loss(preds_S, preds_T, gt_bboxes, img_metas)` with mmdet's
    `img_shape` (h, w, 3), it gives the same value as with `boxes=` and `image_shapes=`."""
    s, t, boxes, shapes = _inputs(cs=8)
    loss = _built(cs=8)
    metas = [{"img_shape": (h, w, 3)} for h, w in shapes]
    assert loss(s, t, boxes, metas).item() == loss(s, t, boxes=boxes, image_shapes=shapes).item()
