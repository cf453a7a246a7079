"""The normalisation x divergence ablation family (the official code's reductions:
docs/background.md#the-normalisation-x-divergence-ablation)."""

import pytest
import torch

from kdbench import losses
from kdbench.errors import UserError
from kdbench.losses.params import DIVERGENCES, NORMS

CELLS = [(norm, divergence) for norm in NORMS for divergence in DIVERGENCES]


def reference(preds_S, preds_T, norm, divergence, tau):
    """The official reductions, written with explicit loops over samples, for small inputs."""
    n, c, h, w = preds_S.shape
    tau = tau if divergence == "kl" else 1.0
    total = 0.0
    for i in range(n):
        s, t = preds_S[i].double(), preds_T[i].double()
        if norm == "channel":
            groups = [(s[k].flatten(), t[k].flatten()) for k in range(c)]
        elif norm == "spatial":
            groups = [(s[:, y, x], t[:, y, x]) for y in range(h) for x in range(w)]
        elif norm == "channel_mean":
            groups = [(s.mean(dim=(1, 2)), t.mean(dim=(1, 2)))]
        else:
            groups = [(s.flatten(), t.flatten())]
        for gs, gt in groups:
            if divergence == "kl":
                ps, pt = torch.softmax(gs / tau, 0), torch.softmax(gt / tau, 0)
                total += float((pt * (pt.log() - ps.log())).sum())
            else:
                if norm in ("channel", "spatial"):
                    gs, gt = torch.softmax(gs, 0), torch.softmax(gt, 0)
                total += float(((gs - gt) ** 2).sum())
    denominator = n * c if norm in ("channel", "channel_mean") else n * h * w
    return total * tau**2 / denominator


@pytest.mark.parametrize("norm,divergence", CELLS)
def test_every_cell_matches_the_official_reduction(norm, divergence):
    preds_S, preds_T = torch.randn(2, 3, 4, 5) * 2, torch.randn(2, 3, 4, 5) * 2
    value = losses.build("norm_divergence", norm=norm, divergence=divergence, tau=2.0, loss_weight=3.0)(
        preds_S, preds_T
    )
    assert value.item() == pytest.approx(3.0 * reference(preds_S, preds_T, norm, divergence, 2.0), rel=1e-5)


@pytest.mark.parametrize("norm,divergence", CELLS)
def test_every_cell_is_zero_when_student_equals_teacher(norm, divergence):
    preds_T = torch.randn(2, 3, 4, 5)
    value = losses.build("norm_divergence", norm=norm, divergence=divergence)(preds_T.clone(), preds_T)
    assert value.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("norm,divergence", CELLS)
def test_every_cell_stays_finite_for_large_inputs_and_sends_no_gradient_to_the_teacher(norm, divergence):
    preds_S = (torch.randn(2, 3, 4, 5) * 1e4).requires_grad_()
    preds_T = (torch.randn(2, 3, 4, 5) * 1e4).requires_grad_()
    value = losses.build("norm_divergence", norm=norm, divergence=divergence, tau=4.0)(preds_S, preds_T)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(preds_S.grad).all()
    assert preds_T.grad is None


def test_the_none_cell_uses_every_sample_not_only_the_first():
    preds_T = torch.randn(2, 3, 4, 5)
    preds_S = preds_T.clone()
    preds_S[1] += torch.randn(3, 4, 5)  # only the second sample differs
    for divergence in DIVERGENCES:
        value = losses.build("norm_divergence", norm="none", divergence=divergence)(preds_S, preds_T)
        assert value.item() > 1e-4


def test_channel_kl_is_exactly_cwd():
    preds_S, preds_T = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    cell = losses.build("norm_divergence", norm="channel", divergence="kl", tau=4.0, loss_weight=3.0)
    cwd = losses.build("cwd", tau=4.0, loss_weight=3.0)
    torch.testing.assert_close(cell(preds_S, preds_T), cwd(preds_S, preds_T))


def test_mse_ignores_the_temperature_as_the_official_code_does():
    preds_S, preds_T = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    at_one = losses.build("norm_divergence", norm="spatial", divergence="mse", tau=1.0)(preds_S, preds_T)
    at_four = losses.build("norm_divergence", norm="spatial", divergence="mse", tau=4.0)(preds_S, preds_T)
    torch.testing.assert_close(at_one, at_four)


@pytest.mark.parametrize("norm,divergence", [("Channel", "kl"), ("channel", "l2"), ("pixel", "mse")])
def test_unknown_norm_or_divergence_is_rejected_with_the_valid_choices(norm, divergence):
    with pytest.raises(UserError, match="valid: "):
        losses.build("norm_divergence", norm=norm, divergence=divergence)


@pytest.mark.parametrize("norm,divergence", [("spatial", "kl"), ("channel_mean", "kl"), ("none", "mse")])
def test_float64_gradcheck_of_each_family(norm, divergence):
    preds_S = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    preds_T = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    loss = losses.build("norm_divergence", norm=norm, divergence=divergence, tau=2.0)
    assert torch.autograd.gradcheck(lambda s: loss(s, preds_T), (preds_S,))
