"""Tests of the spatial / pixel baselines (pi, at, fitnets, local, pa, ifvd, ho) and adapters.

Every expected value is computed independently (explicit loops in NumPy), never by calling the
code under test a second way.
"""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdbench import losses
from kdbench.errors import UserError
from kdbench.losses.adapters import ChannelAdapter, align

METHODS = ["pi", "at", "fitnets", "local", "pa", "ifvd", "ho"]
SMOOTH = ["pi", "at", "local", "pa", "ifvd"]  # non-trivial math, checked with gradcheck
SMALL = {"ho": {"width": 8}}  # a narrow critic keeps the HO tests fast


def _build(name: str, **params):
    torch.manual_seed(0)  # HO's critic is randomly initialised
    return losses.build(name, **{**SMALL.get(name, {}), **params})


def _maps(shape=(2, 4, 6, 6), dtype=torch.float32, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype) * scale
    t = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype) * scale
    return s, t


def _labels(n=2, h=12, w=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n, h, w), generator=g)
    labels[0, :4, :] = 255
    labels[1, :, :2] = 7  # a sparse, non-contiguous class id
    return labels


def _call(loss, s, t, labels=None):
    if loss.needs_labels:
        return loss(s, t, _labels(s.shape[0], 2 * s.shape[2], 2 * s.shape[3]) if labels is None
                    else labels)
    return loss(s, t)


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


# ----------------------------------------------------------------------------- hand-computed cases


def _np(x):
    return x.detach().double().numpy()


def _softmax_np(z, axis):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_pixel_wise_kd_matches_a_hand_computed_kl(tau):
    s, t = _maps((2, 3, 2, 3))
    zs, zt = _np(s), _np(t)
    total = 0.0
    for n, i, j in itertools.product(range(2), range(2), range(3)):
        p_s, p_t = _softmax_np(zs[n, :, i, j] / tau, 0), _softmax_np(zt[n, :, i, j] / tau, 0)
        total += float(np.sum(p_t * np.log(p_t / p_s)))
    expected = 10.0 * tau**2 * total / (2 * 2 * 3)
    assert losses.build("pi", tau=tau)(s, t).item() == pytest.approx(expected, rel=1e-5)


def test_attention_transfer_matches_a_hand_computed_case_with_different_channel_counts():
    s, _ = _maps((2, 3, 3, 4), seed=2)
    _, t = _maps((2, 5, 3, 4), seed=3)
    total = 0.0
    for n in range(2):
        a_s = (_np(s)[n] ** 2).mean(axis=0).ravel()
        a_t = (_np(t)[n] ** 2).mean(axis=0).ravel()
        a_s, a_t = a_s / np.linalg.norm(a_s), a_t / np.linalg.norm(a_t)
        total += float(((a_s - a_t) ** 2).sum())
    expected = 1e4 * total / (2 * 12)
    assert losses.build("at")(s, t).item() == pytest.approx(expected, rel=1e-5)


def test_attention_transfer_rejects_different_spatial_sizes():
    with pytest.raises(UserError, match="resize"):
        losses.build("at")(torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 5))


def test_fitnets_is_the_weighted_mean_squared_error():
    s, t = _maps((2, 3, 2, 2))
    expected = 10.0 * float(((_np(s) - _np(t)) ** 2).sum()) / 24
    assert losses.build("fitnets")(s, t).item() == pytest.approx(expected, rel=1e-6)


def test_fitnets_rejects_a_channel_mismatch_and_points_to_an_adapter():
    with pytest.raises(UserError, match="adapter"):
        losses.build("fitnets")(torch.randn(1, 2, 4, 4), torch.randn(1, 3, 4, 4))


def _local_map_np(x):
    n_, c_, h, w = x.shape
    out = np.zeros_like(x)
    for n, c, i, j in itertools.product(range(n_), range(c_), range(h), range(w)):
        for dy, dx in itertools.product((-1, 0, 1), repeat=2):
            if (dy, dx) != (0, 0):  # replicate padding = clamp the neighbour's index
                ii, jj = min(max(i + dy, 0), h - 1), min(max(j + dx, 0), w - 1)
                out[n, c, i, j] += abs(x[n, c, ii, jj] - x[n, c, i, j])
    return out


def test_local_similarity_matches_a_hand_computed_replicate_padded_case():
    s, t = _maps((2, 2, 4, 3))
    expected = float(((_local_map_np(_np(s)) - _local_map_np(_np(t))) ** 2).mean())
    assert losses.build("local")(s, t).item() == pytest.approx(expected, rel=1e-5)


def test_local_similarity_ignores_a_constant_offset_of_the_student():
    s, t = _maps()
    loss = losses.build("local")
    assert loss(s + 5.0, t).item() == pytest.approx(loss(s, t).item(), rel=1e-5)


def _affinity_np(f, k):
    n_, c_, h, w = f.shape
    hp, wp = math.ceil(h / k), math.ceil(w / k)
    pooled = np.empty((n_, c_, hp, wp))
    for i, j in itertools.product(range(hp), range(wp)):
        pooled[:, :, i, j] = f[:, :, i * k : (i + 1) * k, j * k : (j + 1) * k].max(axis=(2, 3))
    v = pooled.reshape(n_, c_, -1)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    return np.einsum("nci,ncj->nij", v, v)


@pytest.mark.parametrize("pool_scale, kernel", [(0.5, 2), (1.0, 1), (0.25, 4)])
def test_pair_wise_matches_a_hand_computed_case_with_ceil_pooling(pool_scale, kernel):
    s, _ = _maps((2, 3, 5, 7), seed=4)
    _, t = _maps((2, 6, 5, 7), seed=5)  # channel counts may differ
    a_s, a_t = _affinity_np(_np(s), kernel), _affinity_np(_np(t), kernel)
    hw = a_s.shape[1]
    expected = float(((a_t - a_s) ** 2).sum()) / hw**2 / 2
    got = losses.build("pa", pool_scale=pool_scale)(s, t).item()
    assert got == pytest.approx(expected, rel=1e-5)


def _ifvd_np(fs, ft, labels, ignore=255):
    labels = labels[:, ::2, ::2]  # nearest resize by 1/2 picks source index 2*i

    def cosines(f):
        out = {}
        for n in range(f.shape[0]):
            for k in set(labels[n].ravel().tolist()) - {ignore}:
                mask = labels[n] == k
                proto = f[n][:, mask].mean(axis=1)
                for i, j in zip(*np.nonzero(mask)):
                    v = f[n, :, i, j]
                    out[(n, i, j)] = v @ proto / (np.linalg.norm(v) * np.linalg.norm(proto))
        return out

    c_s, c_t = cosines(fs), cosines(ft)
    return float(np.mean([(c_s[key] - c_t[key]) ** 2 for key in c_s]))


def test_ifvd_matches_a_hand_computed_case_with_ignored_pixels_and_resized_labels():
    s, _ = _maps((2, 3, 6, 5), seed=6)
    _, t = _maps((2, 5, 6, 5), seed=7)  # channel counts may differ
    labels = _labels(2, 12, 10)
    expected = 200.0 * _ifvd_np(_np(s), _np(t), labels.numpy())
    assert losses.build("ifvd")(s, t, labels).item() == pytest.approx(expected, rel=1e-5)


def test_ifvd_ignores_features_at_pixels_labelled_ignore_index():
    s, t = _maps()
    labels = _labels(2, 6, 6)
    loss = losses.build("ifvd")
    s2 = s.clone()
    s2[0, :, :2, :] += 100.0  # rows 0-3 of sample 0 are labelled 255
    assert loss(s2, t, labels).item() == pytest.approx(loss(s, t, labels).item(), rel=1e-6)


def test_ifvd_is_zero_and_differentiable_when_every_pixel_is_ignored():
    s, t = _maps()
    s.requires_grad_(True)
    value = losses.build("ifvd")(s, t, torch.full((2, 6, 6), 255))
    value.backward()
    assert value.item() == 0.0 and s.grad is not None


@pytest.mark.parametrize("labels", [torch.zeros(2, 6, 6), torch.full((2, 6, 6), -1)])
def test_ifvd_rejects_float_or_negative_labels(labels):
    s, t = _maps()
    with pytest.raises(UserError):
        losses.build("ifvd")(s, t, labels)


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
    """A resumed run continues the critic's Adam moments (they travel in the state_dict)."""
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
