"""MGD (Yang et al., ECCV 2022; MMRazor's MGDConnector + MGDLoss): checked against the formula in
kdbench/losses/mgd.py's docstring written with functional convolutions on the module's own weights
and the same mask, and its trainable parts (MMRazor's parameter names, a state dict that builds
them, gradients that reach them)."""

import pytest
import torch
import torch.nn.functional as F

from kdbench import losses
from kdbench.errors import UserError
from kdbench.losses.mgd import random_mask
from kdbench.losses.params import SPATIAL


def _maps(cs=3, ct=4, shape=(2, 5, 6), seed=0):
    n, h, w = shape
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, cs, h, w, generator=g, dtype=torch.float64)
    t = torch.randn(n, ct, h, w, generator=g, dtype=torch.float64)
    return s, t


def _built(cs=3, ct=4, seed=0, **params):
    torch.manual_seed(seed)
    loss = losses.build("mgd", **params)
    loss.build_connectors(cs, ct, dtype=torch.float64)
    return loss


def formula(loss, s, t, mask, alpha, loss_weight=1.0):
    """alpha * sum (conv3x3(relu(conv3x3(align(S) * M))) - T)^2 / N, from the module's weights."""
    x = F.conv2d(s, loss.align.weight, loss.align.bias) if loss.align is not None else s
    g0, g2 = loss.generation[0], loss.generation[2]
    generated = F.conv2d(F.relu(F.conv2d(x * mask, g0.weight, g0.bias, padding=1)), g2.weight, g2.bias, padding=1)
    return loss_weight * alpha * ((generated - t) ** 2).sum() / s.shape[0]


@pytest.mark.parametrize("mask_on_channel", [False, True])
@pytest.mark.parametrize("cs", [3, 4])
def test_mgd_matches_the_formula_with_the_same_weights_and_mask(mask_on_channel, cs):
    """Guarantee: `mgd` equals MGD's formula (MMRazor's `MGDConnector` + `MGDLoss`) written with functional
    convolutions on the same weights and the same mask, in value and in the gradients of the student and of every
    layer, positions or whole channels masked, with and without an `align` layer."""
    s, t = _maps(cs=cs)
    loss = _built(cs=cs, alpha_mgd=0.5, lambda_mgd=0.4, mask_on_channel=mask_on_channel, loss_weight=3.0)
    shape = (2, 4, 1, 1) if mask_on_channel else (2, 1, 5, 6)
    torch.manual_seed(7)
    mask = random_mask(shape, 0.4).double()
    s_ref = s.clone().requires_grad_(True)
    expected = formula(loss, s_ref, t, mask, 0.5, 3.0)
    expected_grads = torch.autograd.grad(expected, [s_ref, *loss.parameters()])
    s.requires_grad_(True)
    torch.manual_seed(7)
    value = loss(s, t)
    grads = torch.autograd.grad(value, [s, *loss.parameters()])
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    for ours, reference in zip(grads, expected_grads):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-14)


def test_mgd_gradient_matches_finite_differences_in_float64():
    """Guarantee: `mgd`'s gradient matches finite differences (gradcheck, float64)."""
    s, t = _maps(cs=2, ct=3, shape=(2, 3, 3))
    loss = _built(cs=2, ct=3, alpha_mgd=1.0)
    s.requires_grad_(True)

    def seeded(x):
        torch.manual_seed(3)  # the same mask at every evaluation
        return loss(x, t)

    assert torch.autograd.gradcheck(seeded, (s,))


def test_the_mask_zeroes_the_asked_share_of_positions_or_whole_channels():
    torch.manual_seed(0)
    positions = random_mask((8, 1, 64, 64), 0.65)
    assert positions.shape == (8, 1, 64, 64) and set(positions.unique().tolist()) == {0.0, 1.0}
    assert 1 - positions.mean().item() == pytest.approx(0.65, abs=0.01)
    assert random_mask((4, 1, 8, 8), 0.0).eq(1).all()
    loss = _built(cs=4, ct=4, lambda_mgd=0.5, mask_on_channel=True)
    s, t = _maps(cs=4, shape=(2, 6, 6))
    seen = []
    loss.generation[0].register_forward_hook(lambda module, args, out: seen.append(args[0]))
    loss(s, t)
    zeroed = seen[0].eq(0).all(dim=(2, 3))  # (N, C): whole channels
    assert zeroed.any() and bool((seen[0].eq(0).any(dim=(2, 3)) == zeroed).all())


def test_building_the_layers_at_the_first_call_shifts_no_mask_and_a_given_mask_replaces_the_draw():
    s, t = _maps()
    torch.manual_seed(11)
    mask = random_mask((2, 1, 5, 6), 0.65).double()  # what seed 11 draws first
    fresh = losses.build("mgd", alpha_mgd=1.0)
    torch.manual_seed(11)
    first = fresh(s, t)  # builds its layers, then draws its mask
    assert first.item() == pytest.approx(formula(fresh, s, t, mask, 1.0).item(), rel=1e-12)
    built = _built(alpha_mgd=1.0)
    assert built(s, t, mask).item() == pytest.approx(formula(built, s, t, mask, 1.0).item(), rel=1e-12)


def test_the_same_seed_draws_the_same_mask_and_another_seed_another():
    s, t = _maps()
    loss = _built()

    def seeded(seed):
        torch.manual_seed(seed)
        return loss(s, t).item()

    assert seeded(1) == seeded(1) and seeded(1) != seeded(2)


def test_mgd_keeps_mmrazors_parameter_names_and_a_state_dict_loaded_first_builds_the_layers():
    """Guarantee: `mgd` keeps MMRazor's parameter names (`align.*`, `generation.0.*`, `generation.2.*`; no `align`
    where channels match), and a state dict loaded before the first call builds the layers and gives the same
    loss."""
    aligned, same = _built(cs=3, ct=4), _built(cs=4, ct=4)
    assert set(aligned.state_dict()) == {"align.weight", "align.bias", "generation.0.weight", "generation.0.bias",
                                         "generation.2.weight", "generation.2.bias"}
    assert set(same.state_dict()) == {"generation.0.weight", "generation.0.bias", "generation.2.weight",
                                      "generation.2.bias"}
    fresh = losses.build("mgd")
    fresh.load_state_dict(aligned.state_dict())  # strict: every key has its layer
    s, t = _maps()
    torch.manual_seed(5)
    expected = aligned(s, t)
    torch.manual_seed(5)
    assert fresh(s, t).item() == expected.item()


def test_mgd_builds_its_layers_at_the_first_call_and_they_train_with_the_student():
    """Guarantee: `mgd` builds `align` and `generation` at its first call, and the backward reaches every one of
    their parameters and the student."""
    s, t = _maps()
    s = s.float().requires_grad_(True)
    loss = losses.build("mgd", alpha_mgd=1.0)
    assert list(loss.parameters()) == []
    loss(s, t.float()).backward()
    assert loss.align.weight.shape == (4, 3, 1, 1) and loss.generation[2].weight.shape == (4, 4, 3, 3)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())
    assert s.grad.abs().sum() > 0


def test_mgd_with_nothing_masked_is_the_generation_of_the_aligned_student():
    s, t = _maps()
    loss = _built(lambda_mgd=0.0, alpha_mgd=1.0)
    assert loss(s, t).item() == pytest.approx(formula(loss, s, t, 1.0, 1.0).item(), rel=1e-12)


def test_mgd_declares_mmrazors_defaults_and_rejects_a_mask_share_outside_0_1():
    assert losses.parameters("mgd") == {"alpha_mgd": 2e-5, "lambda_mgd": 0.65, "mask_on_channel": False,
                                        "loss_weight": 1.0}
    assert losses.declaration("mgd").needs_adapter is False
    assert losses.declaration("mgd")().distils() == SPATIAL
    for bad in (1.0, -0.1, True, "0.5"):
        with pytest.raises(UserError, match=r"lambda_mgd must be a number in \[0, 1\)"):
            losses.build("mgd", lambda_mgd=bad)
    with pytest.raises(UserError, match="alpha_mgd"):
        losses.build("mgd", alpha_mgd=-1.0)
    with pytest.raises(UserError, match="mask_on_channel must be true or false"):
        losses.build("mgd", mask_on_channel=1)


def test_mgd_rejects_maps_of_different_sizes():
    s, t = _maps()
    with pytest.raises(ValueError, match="set resize: true"):
        losses.build("mgd")(s, t[:, :, :4])


def test_mgd_under_bf16_autocast_sums_its_error_in_float32_and_trains_its_layers():
    s, t = _maps()
    s = s.float().requires_grad_(True)
    loss = losses.build("mgd", alpha_mgd=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(s, t.float())
    value.backward()
    assert value.dtype == torch.float32 and loss.generation[0].weight.dtype == torch.float32
    assert torch.isfinite(s.grad).all() and all(p.grad is not None for p in loss.parameters())
