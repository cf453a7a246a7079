"""DIST (Huang et al., NeurIPS 2022): checked against a reference written from the formula in
kdbench/losses/dist.py's docstring (NumPy, float64, one correlation at a time), finite differences,
and its properties, for both readings of the intra-class relation."""

import numpy as np
import pytest
import torch

from kdbench import losses
from kdbench.errors import UserError
from kdbench.losses.params import CHANNEL_WISE, SPATIAL


def _maps(shape=(3, 4, 5, 6), seed=0, scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    t = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    return s.to(dtype), t.to(dtype)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _r(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum()) * np.sqrt((b * b).sum()) + 1e-8))


def numpy_dist(s, t, tau=1.0, inter_w=1.0, intra_w=1.0, intra="pixels") -> float:
    y_s, y_t = _softmax(s / tau), _softmax(t / tau)
    n, c, h, w = s.shape
    inter = 1 - np.mean([_r(y_s[i, :, p, q], y_t[i, :, p, q]) for i in range(n) for p in range(h) for q in range(w)])
    if intra == "pixels":
        rs = [_r(y_s[:, k].ravel(), y_t[:, k].ravel()) for k in range(c)]
    else:
        rs = [_r(y_s[:, k, p, q], y_t[:, k, p, q]) for k in range(c) for p in range(h) for q in range(w)]
    return tau**2 * (inter_w * inter + intra_w * (1 - np.mean(rs)))


@pytest.mark.parametrize("intra", ["pixels", "batch"])
@pytest.mark.parametrize("tau, inter_w, intra_w, loss_weight", [(1.0, 1.0, 1.0, 1.0), (4.0, 2.0, 0.5, 3.0)])
def test_dist_matches_the_formula_worked_out_with_numpy(intra, tau, inter_w, intra_w, loss_weight):
    """Guarantee: `dist` equals DIST's formula (inter- and intra-class Pearson relations of the class
    probabilities), worked out with NumPy in float64 one correlation at a time, for both intra-class readings and
    other temperatures and weights."""
    s, t = _maps()
    loss = losses.build("dist", tau=tau, inter_loss_weight=inter_w, intra_loss_weight=intra_w, intra=intra,
                        loss_weight=loss_weight)
    expected = loss_weight * numpy_dist(s.numpy(), t.numpy(), tau, inter_w, intra_w, intra)
    assert loss(s, t).item() == pytest.approx(expected, rel=1e-12)


def test_the_two_intra_relations_differ():
    """Guarantee: DIST's two intra-class readings, `intra: pixels` (the authors' segmentation code) and `intra:
    batch` (MMRazor's `DISTLoss` on a map), give different values on the same maps."""
    s, t = _maps()
    pixels = losses.build("dist", inter_loss_weight=0.0)(s, t).item()
    batch = losses.build("dist", inter_loss_weight=0.0, intra="batch")(s, t).item()
    assert abs(pixels - batch) > 1e-3


@pytest.mark.parametrize("intra", ["pixels", "batch"])
def test_dist_gradient_matches_finite_differences_in_float64(intra):
    """Guarantee: `dist`'s gradient matches finite differences (gradcheck, float64) for both intra-class readings."""
    s, t = _maps((2, 3, 3, 2), seed=1)
    s.requires_grad_(True)
    loss = losses.build("dist", tau=2.0, inter_loss_weight=1.5, intra_loss_weight=0.7, intra=intra, loss_weight=2.0)
    assert torch.autograd.gradcheck(lambda x: loss(x, t), (s,))


def test_dist_ignores_a_shift_of_the_scores_at_each_position_and_sends_no_gradient_to_the_teacher():
    s, t = _maps(seed=2)
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss = losses.build("dist")
    value = loss(s, t)
    value.backward()
    shift = torch.randn(3, 1, 5, 6, dtype=torch.float64) * 10
    assert loss(s + shift, t).item() == pytest.approx(value.item(), rel=1e-10)
    assert t.grad is None and s.grad.abs().sum() > 0
    assert loss(t.detach(), t.detach()).item() == pytest.approx(0.0, abs=1e-6)


def test_intra_batch_of_a_single_image_is_one_and_gives_no_gradient():
    s, t = _maps((1, 4, 3, 3), seed=3)
    s.requires_grad_(True)
    loss = losses.build("dist", inter_loss_weight=0.0, intra="batch")
    value = loss(s, t)
    value.backward()
    assert value.item() == 1.0 and s.grad.abs().max().item() == 0.0


def test_dist_of_n_by_c_logits_is_that_of_maps_of_one_position():
    s, t = _maps((6, 10), seed=4)
    for intra in ("pixels", "batch"):
        loss = losses.build("dist", tau=2.0, intra=intra)
        assert loss(s, t).item() == loss(s[:, :, None, None], t[:, :, None, None]).item()


def test_dist_under_bf16_autocast_computes_in_float32_and_returns_the_inputs_dtype():
    s, t = _maps(dtype=torch.bfloat16)
    s.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = losses.build("dist")(s, t)
    value.backward()
    assert value.dtype == torch.float32 and s.grad.dtype == torch.bfloat16 and torch.isfinite(s.grad).all()


def test_dist_declares_the_authors_defaults_its_kind_and_rejects_another_intra():
    assert losses.parameters("dist") == {"tau": 1.0, "inter_loss_weight": 1.0, "intra_loss_weight": 1.0,
                                         "intra": "pixels", "loss_weight": 1.0}
    declared = losses.declaration("dist")
    assert declared().distils() is None
    assert declared(intra_loss_weight=0.0).distils() == SPATIAL
    assert declared(inter_loss_weight=0.0).distils() == CHANNEL_WISE
    assert declared(inter_loss_weight=0.0, intra="batch").distils() is None
    with pytest.raises(UserError, match="unknown intra 'classes'; valid: pixels, batch"):
        losses.build("dist", intra="classes")
    with pytest.raises(UserError, match="tau must be a finite number > 0"):
        losses.build("dist", tau=0.0)
