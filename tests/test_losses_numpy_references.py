"""Tests of the spatial / pixel baselines against hand-computed cases.

Every expected value is computed independently (explicit loops in NumPy), never by calling the
code under test a second way.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from kdbench import losses
from kdbench.errors import UserError
from tests.loss_fixtures import _labels, _maps

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


@pytest.mark.parametrize("reduction, divisor", [("pixelmean", 2 * 3 * 4), ("batchmean", 2), ("sum", 1),
                                                ("mean", 2 * 5 * 3 * 4)])
def test_pixel_wise_kd_reductions_divide_the_summed_kl_as_the_formula_says_value_and_gradient(reduction, divisor):
    """pi's reductions: tau^2 x w x the KL summed over every position, divided by N*H*W (pixelmean), N
    (batchmean), 1 (sum) or N*C*H*W (mean); the gradient w.r.t. the student's logits is
    w x tau x (p_S - p_T) / divisor."""
    s, t = _maps((2, 5, 3, 4), seed=4)
    s, t = s.double().requires_grad_(), t.double()
    tau, weight = 2.0, 3.0
    p_s, p_t = _softmax_np(_np(s) / tau, 1), _softmax_np(_np(t) / tau, 1)
    expected = weight * tau**2 * float(np.sum(p_t * np.log(p_t / p_s))) / divisor
    loss = losses.build("pi", tau=tau, loss_weight=weight, reduction=reduction)(s, t)
    loss.backward()
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(s.grad.numpy(), weight * tau * (p_s - p_t) / divisor, rtol=1e-10, atol=1e-15)


def test_an_unknown_pi_reduction_is_refused_naming_the_valid_ones():
    with pytest.raises(UserError, match=r"unknown reduction 'none'; valid: pixelmean, batchmean, sum, mean"):
        losses.build("pi", reduction="none")


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


@pytest.mark.parametrize("size", [(5, 7), (24, 20)])  # many channels per node, and few: the C x C products
def test_pair_wise_matches_a_hand_computed_case_whichever_way_it_takes_the_affinities(size):
    s, _ = _maps((2, 3, *size), seed=6)
    _, t = _maps((2, 6, *size), seed=7)
    a_s, a_t = _affinity_np(_np(s), 2), _affinity_np(_np(t), 2)
    hw = a_s.shape[1]
    assert (4 * (3 + 6) <= hw) == (size == (24, 20))
    expected = float(((a_t - a_s) ** 2).sum()) / hw**2 / 2
    s64 = s.double().requires_grad_(True)
    assert losses.build("pa")(s64, t.double()).item() == pytest.approx(expected, rel=1e-10)
    assert torch.autograd.gradcheck(lambda x: losses.build("pa")(x, t.double()), (s64,))


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
