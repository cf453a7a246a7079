"""Tests of the spatial / pixel baselines (pi, at, fitnets, local, pa, ifvd, ho): the registry and
its parameters, and the properties every loss shares (zero at equality, no gradient to the
teacher, linear in its weight, gradients against finite differences, large inputs, bf16)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kdbench import losses
from kdbench.errors import UserError
from tests.loss_fixtures import METHODS, SMOOTH, _build, _call, _labels, _maps

# ----------------------------------------------------------------------------- registry & params


def test_every_baseline_is_registered_with_its_label_needs():
    assert set(METHODS) <= set(losses.available())
    for name in METHODS:
        assert losses.get(name).needs_labels is (name == "ifvd")
    assert losses.get("ho").has_own_optimizer is True
    for name in METHODS:  # read by the trainer: False where student/teacher channels may differ
        assert losses.get(name).needs_adapter is (name not in ("at", "pa", "ifvd"))


@pytest.mark.parametrize("name", METHODS)
def test_registry_build_rejects_an_unknown_parameter_and_lists_the_valid_ones(name):
    with pytest.raises(UserError) as info:
        losses.build(name, temprature=2.0)
    message = str(info.value)
    assert "temprature" in message and "valid:" in message
    for valid in losses.parameters(name):
        assert valid in message


@pytest.mark.parametrize(
    "name, params",
    [
        ("pi", {"tau": 0.0}),
        ("pi", {"tau": float("nan")}),
        ("pi", {"loss_weight": -1.0}),
        ("at", {"loss_weight": "1"}),
        ("fitnets", {"loss_weight": float("inf")}),
        ("local", {"loss_weight": True}),
        ("pa", {"pool_scale": 0.0}),
        ("pa", {"pool_scale": 1.5}),
        ("ifvd", {"ignore_index": "255"}),
        ("ho", {"lr_d": 0.0}),
        ("ho", {"d_weight": -0.1}),
        ("ho", {"gp_weight": -1.0}),
        ("ho", {"in_channels": 0}),
        ("ho", {"width": None}),
        ("ho", {"preprocess": "tanh"}),
    ],
)
def test_constructors_reject_bad_values_with_a_user_error(name, params):
    with pytest.raises(UserError):
        losses.build(name, **params)


def test_defaults_are_the_published_ones():
    expected = {
        "pi": {"tau": 1.0, "loss_weight": 10.0},
        "at": {"loss_weight": 1e4},
        "fitnets": {"loss_weight": 10.0},
        "local": {"loss_weight": 1.0},
        "pa": {"pool_scale": 0.5, "loss_weight": 1.0},
        "ifvd": {"loss_weight": 200.0, "ignore_index": 255},
        "ho": {"loss_weight": 0.001, "d_weight": 0.1, "gp_weight": 10.0, "lr_d": 4e-4},
    }
    for name, defaults in expected.items():
        params = losses.parameters(name)
        assert {k: params[k] for k in defaults} == defaults


# ----------------------------------------------------------------------------- shared properties


@pytest.mark.parametrize("name", ["pi", "at", "fitnets", "local", "pa", "ifvd"])
def test_loss_is_zero_when_student_equals_teacher(name):
    s, _ = _maps()
    assert _call(_build(name), s, s.clone()).item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("name", METHODS)
def test_no_gradient_reaches_the_teacher_and_the_student_gets_one(name):
    s, t = _maps()
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss = _build(name)
    _call(loss, s, t).backward()
    if name == "ho":
        loss.discriminator_step(s, t)
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


@pytest.mark.parametrize("name", METHODS)
def test_loss_weight_scales_the_loss_linearly(name):
    s, t = _maps()
    one = _call(_build(name, loss_weight=1.0), s, t)
    three = _call(_build(name, loss_weight=3.0), s, t)
    zero = _call(_build(name, loss_weight=0.0), s, t)
    assert one.abs().item() > 0
    assert three.item() == pytest.approx(3.0 * one.item(), rel=1e-6)
    assert zero.item() == 0.0


@pytest.mark.parametrize("name", SMOOTH)
def test_float64_gradient_matches_finite_differences(name):
    s, t = _maps((2, 2, 5, 3), dtype=torch.float64)
    loss = _build(name, loss_weight=1.0)
    labels = _labels(2, 10, 6)
    s.requires_grad_(True)
    assert _call(loss, s, t, labels).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda x: _call(loss, x, t, labels), (s,))


def test_holistic_student_gradient_matches_finite_differences_in_float64():
    loss = _build("ho", in_channels=3, width=4, loss_weight=1.0).double()
    s, t = _maps((2, 3, 4, 3), dtype=torch.float64)
    s.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss(x, t), (s,), fast_mode=True)


@pytest.mark.parametrize("name", METHODS)
def test_loss_and_gradient_are_finite_for_inputs_of_magnitude_1e4(name):
    s, t = _maps(scale=1e4)
    s.requires_grad_(True)
    loss = _build(name)
    value = _call(loss, s, t)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(s.grad).all()
    if name == "ho":
        assert all(math.isfinite(v) for v in loss.discriminator_step(s, t).values())


@pytest.mark.parametrize("name", METHODS)
def test_bf16_autocast_on_cpu_computes_in_float32(name):
    torch.manual_seed(0)
    conv_s, conv_t = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
    x, _ = _maps()
    loss = _build(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s, t = conv_s(x), conv_t(x)
        value = _call(loss, s, t)
        if name == "ho":
            loss.discriminator_step(s, t)
    assert s.dtype == torch.bfloat16
    assert value.dtype == torch.float32 and torch.isfinite(value)
    reference = _call(loss, s.detach().float(), t.detach().float())
    if name != "ho":  # the critic moved in discriminator_step
        assert value.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-8)
    value.backward()
    assert torch.isfinite(conv_s.weight.grad).all() and conv_t.weight.grad is None
