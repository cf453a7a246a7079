"""Af-DCD (kdbench/losses/afdcd.py) against its formula: the omni-contrastive term against a loop over
tokens written from the definition, the whole loss against a plain formulation
(benchmarks/references.py) with the same align, projector and mask, and the token layout, the
masks and the refusals checked one by one."""

import copy
import math

import pytest
import torch

from benchmarks.references import reference_afdcd
from kdbench import losses
from kdbench.errors import UserError
from kdbench.losses.afdcd import omni_contrastive, tokens


def _maps(shape_S=(2, 6, 8, 8), shape_T=(2, 8, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(*shape_S, generator=g, dtype=torch.float64).requires_grad_()
    t = torch.randn(*shape_T, generator=g, dtype=torch.float64)
    return s, t


def test_a_token_is_one_position_of_a_patch_and_one_channel_group_position_major():
    x = torch.arange(2 * 8 * 4 * 6, dtype=torch.float64).reshape(2, 8, 4, 6)
    out = tokens(x, (2, 3), groups=4)  # 2 x 2 patches per image, 6 positions x 4 groups per patch
    assert out.shape == (2 * 2 * 2, 6 * 4, 2)
    # image 1, patch (row 1, column 0), position (1, 2) in the patch, channel group 3: channels 6 and 7
    patch, token = 1 * 4 + 1 * 2 + 0, (1 * 3 + 2) * 4 + 3
    assert out[patch, token].tolist() == x[1, 6:8, 2 + 1, 0 + 2].tolist()


def _loop_contrast(preds, targets, tau, groups, patch):
    """sum over tokens a of -log(exp(sim_aa / tau) / (exp(sim_aa / tau) + sum_{other group b} exp(sim_ab / tau)))
    / (h w), sim = -L1 distance, token by token."""
    b, c, h, w = preds.shape
    ph, pw = patch
    total = 0.0
    for n in range(b):
        for y0 in range(0, h, ph):
            for x0 in range(0, w, pw):
                keys = [(y, x, g) for y in range(y0, y0 + ph) for x in range(x0, x0 + pw) for g in range(groups)]

                def vec(z, key, n=n):
                    y, x, g = key
                    return z[n, g * (c // groups):(g + 1) * (c // groups), y, x]

                for a in keys:
                    sims = {k: -float((vec(preds, a) - vec(targets, k)).abs().sum()) / tau for k in keys}
                    terms = [sims[a]] + [sims[k] for k in keys if k[2] != a[2]]
                    total += math.log(sum(math.exp(v) for v in terms)) - sims[a]
    return total / (h * w)


def test_the_omni_contrastive_term_equals_its_definition_token_by_token():
    """Guarantee: Af-DCD's omni-contrastive term equals its definition, computed token by token over channel groups
    x patch positions."""
    preds, targets = _maps((2, 8, 4, 4), (2, 8, 4, 4))
    ours = omni_contrastive(preds.detach(), targets, tau=0.5, groups=4, pool=0, patch=(2, 2))
    assert float(ours) == pytest.approx(_loop_contrast(preds.detach(), targets, 0.5, 4, (2, 2)), rel=1e-12)


def _built(**params):
    torch.manual_seed(0)
    loss = losses.build("afdcd", **params)
    s, t = _maps()
    loss.build_connectors(s, t)
    return loss, s, t


@pytest.mark.parametrize("params", [{}, {"enhance_projector": True, "pool_size": 2, "patch_size": [2, 2], "M_ocd": 4},
                                    {"rand_mask": False, "mask_ratio": 0.5, "pool_size": 0, "patch_size": [4, 2]}])
def test_afdcd_equals_its_plain_formulation_with_the_same_parts_and_mask(params):
    """Guarantee: `afdcd` equals a plain formulation of Af-DCD (masked feature reconstruction through a projector
    plus the omni-contrastive term) with the same `align`, projector and mask, in value and gradient."""
    params = {"M_ocd": 2, "pool_size": 2, "patch_size": [2, 2], "loss_weight": 3.0, "lambda_fd": 0.01,
              "lambda_ctr": 0.2, **params}
    loss, s, t = _built(**params)
    loss.double()
    layers = {"align": copy.deepcopy(loss.align), "projetor": copy.deepcopy(loss.projetor)}
    settings = {**losses.parameters("afdcd"), **params, "patch_size": tuple(params["patch_size"])}
    torch.manual_seed(5)
    ours = loss(s, t)
    ours.backward()
    grad, s.grad = s.grad.clone(), None
    torch.manual_seed(5)
    if not params.get("rand_mask", True):
        layers["projetor"] = _centre_masked(layers["projetor"], s.shape[2:])
        settings["mask_ratio"] = 0.0
    reference = reference_afdcd(layers, s, t, settings)
    reference.backward()
    assert float(ours) == pytest.approx(float(reference), rel=1e-12)
    assert torch.allclose(grad, s.grad, rtol=0, atol=1e-11 * float(s.grad.abs().max()))


def _centre_masked(projector, size):
    """The projector applied to the map with the centre block [H/3, 2H/3) x [W/3, 2W/3) zeroed."""
    h, w = size

    def masked(x):
        keep = torch.ones_like(x)
        keep[:, :, h // 3:2 * h // 3, w // 3:2 * w // 3] = 0
        return projector(x * keep)

    return masked


def test_afdcd_random_mask_zeroes_about_mask_ratio_of_the_positions_and_is_the_same_for_the_same_seed():
    loss, _, _ = _built()
    torch.manual_seed(3)
    first = loss.mask(4, 32, 32, torch.device("cpu"), torch.float32)
    torch.manual_seed(3)
    assert torch.equal(first, loss.mask(4, 32, 32, torch.device("cpu"), torch.float32))
    assert first.shape == (4, 1, 32, 32) and 0.70 < 1 - float(first.mean()) < 0.80


def test_afdcd_aligns_only_differing_channels_and_keeps_the_authors_parameter_names():
    loss, _, _ = _built()
    assert set(loss.state_dict()) == {"align.weight", "align.bias", "projetor.0.weight", "projetor.0.bias",
                                      "projetor.2.weight", "projetor.2.bias"}
    same = losses.build("afdcd", M_ocd=2, pool_size=2, patch_size=[2, 2])
    x = torch.randn(2, 8, 8, 8)
    same(x, x)
    assert isinstance(same.align, torch.nn.Identity)


def test_afdcd_defaults_are_the_authors_and_bad_values_are_refused_by_name():
    defaults = losses.parameters("afdcd")
    assert defaults == {"lambda_fd": 2e-6, "lambda_ctr": 0.005, "tau_ocd": 0.07, "M_ocd": 16, "pool_size": 4,
                        "patch_size": (4, 4), "mask_ratio": 0.75, "rand_mask": True, "enhance_projector": False,
                        "loss_weight": 1.0}
    for params, message in [({"mask_ratio": 1.0}, r"mask_ratio must be in \[0, 1\)"),
                            ({"patch_size": [4]}, "patch_size must be two positive integers"),
                            ({"tau": 0.07}, "has no parameter 'tau'; valid: .*tau_ocd")]:
        with pytest.raises(UserError, match=message):
            losses.build("afdcd", **params)


def test_afdcd_refuses_a_map_that_does_not_divide_into_patches_and_groups_naming_the_fix():
    loss = losses.build("afdcd")  # pool 4, 4x4 patches: a map of 16 x 16 positions at least
    s, t = _maps((2, 16, 8, 8), (2, 16, 8, 8))
    with pytest.raises(UserError, match=r"does not divide into 4x4 patches and 16 channel groups; set pool_size"):
        loss(s, t)
