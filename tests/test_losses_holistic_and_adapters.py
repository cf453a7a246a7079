"""Tests of holistic distillation (HO: its critic, its optimiser, its state) and of the channel
adapters and size alignment the baselines use."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdbench import losses
from kdbench.errors import UserError
from kdbench.losses.adapters import ChannelAdapter, align
from tests.loss_fixtures import _build, _maps

# ----------------------------------------------------------------------------- holistic (HO)


def test_holistic_forward_is_minus_the_weighted_mean_critic_score_on_softmaxed_maps():
    loss = _build("ho", in_channels=4)
    s, t = _maps()
    with torch.no_grad():
        expected = -0.001 * loss.discriminator(torch.softmax(s, dim=1)).mean().item()
    assert loss(s, t).item() == pytest.approx(expected, rel=1e-5)


def test_holistic_forward_gives_the_student_gradient_but_the_critic_none():
    loss = _build("ho")
    s, t = _maps()
    s.requires_grad_(True)
    loss(s, t).backward()
    assert s.grad.abs().sum() > 0
    assert all(p.grad is None and p.requires_grad for p in loss.discriminator.parameters())


def test_holistic_discriminator_step_follows_the_wgan_gp_formula_and_moves_the_critic():
    loss = _build("ho", in_channels=4)
    s, t = _maps()
    critic = copy.deepcopy(loss.discriminator).double()
    before = [p.detach().clone() for p in loss.discriminator.parameters()]
    x_s, x_t = torch.softmax(s.double(), 1), torch.softmax(t.double(), 1)
    torch.manual_seed(123)
    alpha = torch.rand(2, 1, 1, 1).double()
    mixed = (alpha * x_t + (1 - alpha) * x_s).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed)
    gp = float(((grad.flatten(1).norm(dim=1) - 1) ** 2).mean())
    with torch.no_grad():
        wasserstein = float(critic(x_s).mean() - critic(x_t).mean())
    torch.manual_seed(123)
    out = loss.discriminator_step(s, t)
    assert out["gp"] == pytest.approx(gp, rel=1e-4)
    assert out["loss_d"] == pytest.approx(0.1 * (wasserstein + 10.0 * gp), rel=1e-4)
    after = list(loss.discriminator.parameters())
    assert all(a.grad is not None for a in after)
    assert any(not torch.equal(b, a.detach()) for b, a in zip(before, after))


def test_holistic_critic_is_left_out_of_what_a_student_optimizer_gets():
    loss = _build("ho")
    student = nn.Conv2d(3, 4, 1)
    loss(student(torch.randn(2, 3, 6, 6)), torch.randn(2, 4, 6, 6))  # materialise lazy layers
    trainer_params = list(student.parameters()) + list(loss.student_parameters())
    critic_ids = {id(p) for p in loss.discriminator.parameters()}
    assert loss.student_parameters() == []
    assert not critic_ids & {id(p) for p in trainer_params}
    optimised = {id(p) for group in loss.optimizer_d.param_groups for p in group["params"]}
    assert optimised == critic_ids
    assert loss.optimizer_d.defaults["lr"] == 4e-4
    assert loss.optimizer_d.defaults["betas"] == (0.9, 0.99)


def test_holistic_critic_optimizer_state_is_saved_and_restored_with_the_module():
    """Guarantee: A resumed run continues everything it trains: adapters with their optimizer state, HO's critic with
    its Adam state (it travels in the checkpoint; its step count goes on from the checkpoint's).

    A resumed run continues the critic's Adam moments (they travel in the state_dict)."""
    torch.manual_seed(0)
    loss = _build("ho")  # lazy critic: channels inferred at the first call
    s, t = _maps()
    for _ in range(3):
        loss.discriminator_step(s, t)
    state = loss.state_dict()
    resumed = _build("ho")
    resumed(s, t)  # the run's probe pass materialises the lazy layers before the checkpoint loads
    resumed.load_state_dict(state)
    saved, loaded = loss.optimizer_d.state_dict(), resumed.optimizer_d.state_dict()
    assert saved["state"] and saved["state"].keys() == loaded["state"].keys()
    for key, entry in saved["state"].items():
        assert float(entry["step"]) == 3.0 == float(loaded["state"][key]["step"])
        assert torch.equal(entry["exp_avg"], loaded["state"][key]["exp_avg"])
    torch.manual_seed(1)
    a = loss.discriminator_step(s, t)
    torch.manual_seed(1)
    assert resumed.discriminator_step(s, t) == a  # the same next update, moments included


@pytest.mark.parametrize("preprocess", ["batchnorm", "none"])
def test_holistic_other_critic_inputs_infer_channels_and_train(preprocess):
    loss = _build("ho", preprocess=preprocess)
    s, t = _maps((2, 5, 8, 8))
    with torch.no_grad():  # the critic step must work inside an outer no_grad too
        out = loss.discriminator_step(s, t)
    first_conv = next(m for m in loss.discriminator if isinstance(m, nn.Conv2d))
    assert math.isfinite(out["loss_d"]) and first_conv.in_channels == 5
    assert torch.isfinite(loss(s, t))


# ----------------------------------------------------------------------------- adapters


def test_channel_adapter_maps_student_channels_to_teacher_channels():
    adapter = ChannelAdapter(3, 5, norm=True, act=True)
    out = adapter(torch.randn(2, 3, 4, 4))
    assert out.shape == (2, 5, 4, 4) and (out >= 0).all()
    assert [type(m) for m in adapter] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert adapter[0].bias is None
    assert ChannelAdapter(3, 5)[0].bias is not None and len(ChannelAdapter(3, 5)) == 1


@pytest.mark.parametrize("channels", [(0, 4), (4, -1)])
def test_channel_adapter_rejects_non_positive_channels(channels):
    with pytest.raises(UserError):
        ChannelAdapter(*channels)


def test_channel_adapter_trains_with_fitnets_towards_the_teacher():
    torch.manual_seed(0)
    adapter, fitnets = ChannelAdapter(3, 4), losses.build("fitnets", loss_weight=1.0)
    s, t = torch.randn(2, 3, 5, 5), torch.randn(2, 4, 5, 5)
    optimizer = torch.optim.SGD(adapter.parameters(), lr=0.1)
    first = fitnets(adapter(s), t).item()
    for _ in range(30):
        optimizer.zero_grad()
        fitnets(adapter(s), t).backward()
        optimizer.step()
    assert fitnets(adapter(s), t).item() < 0.9 * first


def test_align_returns_the_student_unchanged_when_sizes_match():
    s, t = _maps()
    assert align(s, t) is s


def test_align_resizes_bilinearly_when_asked():
    s = torch.tensor([[[[0.0, 4.0]]]])
    out = align(s, torch.zeros(1, 1, 1, 4), resize=True)
    # align_corners=False: output x maps to input (x + 0.5) / 2 - 0.5, clamped at the borders.
    assert out.flatten().tolist() == pytest.approx([0.0, 1.0, 3.0, 4.0])


def test_align_rejects_a_size_mismatch_without_resize_and_names_the_place():
    with pytest.raises(UserError, match=r"^neck: .*resize: true"):
        align(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 6, 6), where="neck")


def test_align_rejects_a_channel_mismatch_even_with_resize():
    with pytest.raises(UserError, match="adapter"):
        align(torch.zeros(1, 2, 3, 3), torch.zeros(1, 4, 6, 6), resize=True)


def test_resized_student_works_with_every_same_shape_loss():
    s, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 6, 6)
    for name in ["pi", "fitnets", "local"]:
        assert torch.isfinite(losses.build(name)(align(s, t, resize=True), t))
    assert F.interpolate(s, size=(6, 6), mode="bilinear").shape == align(s, t, True).shape
