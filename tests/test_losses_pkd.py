"""PKD (Cao et al., NeurIPS 2022; MMRazor's PKDLoss): checked against a reference written from the
formula in kdbench/losses/pkd.py's docstring (NumPy, float64), finite differences, and its
properties (invariance to a per-channel affine change of the student, resizing)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdbench import losses
from kdbench.errors import UserError
from kdbench.losses.params import CHANNEL_WISE


def _maps(shape_S=(2, 3, 5, 4), shape_T=None, seed=0, offset=0.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(shape_S, generator=g, dtype=torch.float64) * 2 + offset
    t = torch.randn(shape_T or shape_S, generator=g, dtype=torch.float64) * 3 - offset
    return s.to(dtype), t.to(dtype)


def numpy_pkd(s: np.ndarray, t: np.ndarray) -> float:
    """sum over channels and values of (z_S - z_T)^2 / (2 N C H W), z standardised per channel over
    (N, H, W) with the unbiased std + 1e-6."""
    total = 0.0
    for c in range(s.shape[1]):
        a, b = s[:, c].ravel(), t[:, c].ravel()
        za = (a - a.mean()) / (a.std(ddof=1) + 1e-6)
        zb = (b - b.mean()) / (b.std(ddof=1) + 1e-6)
        total += ((za - zb) ** 2).sum()
    return total / (2 * s.size)


@pytest.mark.parametrize("offset", [0.0, 50.0])
@pytest.mark.parametrize("loss_weight", [1.0, 10.0])
def test_pkd_matches_the_formula_worked_out_with_numpy(offset, loss_weight):
    """Guarantee: `pkd` equals PKD's formula (MMRazor's `PKDLoss`: each channel standardised over the batch's
    positions, half the mean squared difference), worked out with NumPy in float64, to 1e-12 relative, at any
    `loss_weight` and on maps with a large offset."""
    s, t = _maps(offset=offset)
    value = losses.build("pkd", loss_weight=loss_weight)(s, t)
    assert value.item() == pytest.approx(loss_weight * numpy_pkd(s.numpy(), t.numpy()), rel=1e-12)


def test_pkd_is_about_one_minus_the_mean_pearson_correlation_of_the_channels():
    s, t = _maps((4, 5, 8, 8), seed=3)
    m = 4 * 8 * 8
    r = [np.corrcoef(s[:, c].ravel().numpy(), t[:, c].ravel().numpy())[0, 1] for c in range(5)]
    expected = (m - 1) / m * (1 - np.mean(r))  # sum z^2 = M - 1 per channel for the unbiased std
    assert losses.build("pkd")(s, t).item() == pytest.approx(expected, rel=1e-5)


def test_pkd_gradient_matches_finite_differences_in_float64():
    """Guarantee: `pkd`'s gradient matches finite differences (gradcheck, float64)."""
    s, t = _maps((2, 3, 4, 3), seed=1)
    s.requires_grad_(True)
    loss = losses.build("pkd", loss_weight=3.0)
    assert torch.autograd.gradcheck(lambda x: loss(x, t), (s,))


def test_pkd_ignores_a_positive_scale_and_a_shift_of_each_student_channel_and_sends_no_gradient_to_the_teacher():
    s, t = _maps((2, 4, 6, 6), seed=2)
    s.requires_grad_(True)
    t.requires_grad_(True)
    scale = torch.tensor([0.5, 2.0, 7.0, 1.0], dtype=torch.float64).reshape(1, 4, 1, 1)
    shift = torch.tensor([3.0, -1.0, 0.0, 100.0], dtype=torch.float64).reshape(1, 4, 1, 1)
    loss = losses.build("pkd")
    base = loss(s, t)
    base.backward()
    assert loss(s * scale + shift, t).item() == pytest.approx(base.item(), rel=1e-6)
    assert t.grad is None and s.grad.abs().sum() > 0
    assert loss(s, s.detach().clone()).item() == pytest.approx(0.0, abs=1e-20)


def test_pkd_resizes_the_student_to_the_teacher_or_the_teacher_to_the_student():
    s, t = _maps((2, 3, 4, 5), (2, 3, 8, 10), seed=4)
    up = F.interpolate(s, (8, 10), mode="bilinear")
    down = F.interpolate(t, (4, 5), mode="bilinear")
    assert losses.build("pkd")(s, t).item() == pytest.approx(numpy_pkd(up.numpy(), t.numpy()), rel=1e-12)
    assert losses.build("pkd", resize_stu=False)(s, t).item() == pytest.approx(
        numpy_pkd(s.numpy(), down.numpy()), rel=1e-12)


def test_pkd_of_a_sequence_of_maps_is_the_sum_of_their_losses():
    (s1, t1), (s2, t2) = _maps((2, 3, 8, 8), seed=5), _maps((2, 3, 4, 4), seed=6)
    loss = losses.build("pkd", loss_weight=2.0)
    assert loss([s1, s2], [t1, t2]).item() == pytest.approx(loss(s1, t1).item() + loss(s2, t2).item(), rel=1e-12)


def test_pkd_in_float32_on_a_large_offset_map_agrees_with_float64():
    s, t = _maps((4, 16, 32, 32), seed=7, offset=1000.0)
    s.requires_grad_(True)
    exact = losses.build("pkd")(s, t)
    exact.backward()
    s32 = s.detach().float().requires_grad_(True)
    single = losses.build("pkd")(s32, t.float())
    single.backward()
    assert single.dtype == torch.float32
    assert single.item() == pytest.approx(exact.item(), rel=1e-4)
    assert float((s32.grad.double() - s.grad).abs().max() / s.grad.abs().max()) < 1e-4


def test_pkd_under_bf16_autocast_computes_in_float32_and_returns_the_inputs_dtype():
    s, t = _maps(dtype=torch.bfloat16)
    s.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = losses.build("pkd")(s, t)
    value.backward()
    assert value.dtype == torch.float32 and s.grad.dtype == torch.bfloat16 and torch.isfinite(s.grad).all()


def test_pkd_rejects_a_channel_mismatch_and_points_to_an_adapter():
    s, t = _maps((2, 3, 4, 4), (2, 5, 4, 4))
    with pytest.raises(UserError, match="add an adapter"):
        losses.build("pkd")(s, t)


def test_pkd_declares_mmrazors_defaults_and_distils_channel_wise():
    assert losses.parameters("pkd") == {"resize_stu": True, "loss_weight": 1.0}
    assert losses.declaration("pkd")().distils() == CHANNEL_WISE
    assert losses.declaration("pkd").needs_adapter is True
    with pytest.raises(UserError, match="resize_stu must be true or false"):
        losses.build("pkd", resize_stu="yes")
    with pytest.raises(UserError, match="no parameter 'resize'; valid: resize_stu, loss_weight"):
        losses.build("pkd", resize=True)
