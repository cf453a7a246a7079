"""FBKD (Zhang & Ma, ICLR 2021) at MMRazor's defaults: its four terms, checked against values
worked out by hand from the formulas in kdbench/losses/fbkd.py's docstring."""

import math

import pytest
import torch

from kdbench import losses
from kdbench.errors import UserError
from kdbench.losses.fbkd import non_local, non_local_forward, spatial_attention


def _identity_adapters(loss, channels: int) -> None:
    """Student adapters that pass the map through, and a student non-local block equal to the teacher's."""
    adapt = loss.student_adapt
    with torch.no_grad():
        for name in ("feature", "relation"):
            adapt[name].weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1))
            adapt[name].bias.zero_()
        adapt["channel"].weight.copy_(torch.eye(channels))
        adapt["channel"].bias.zero_()
        adapt["spatial"].weight.zero_()
        adapt["spatial"].weight[0, 0, 1, 1] = 1.0
        adapt["spatial"].bias.zero_()
    adapt["non_local"].load_state_dict(loss.teacher_non_local.state_dict())


def test_fbkd_is_zero_when_the_adapted_student_equals_the_teacher():
    """Guarantee: Fbkd is zero when the adapted student equals the teacher."""
    torch.manual_seed(0)
    loss = losses.build("fbkd")
    x = torch.randn(2, 8, 6, 6)
    loss(x, x)  # builds the adapters
    _identity_adapters(loss, 8)
    assert loss.eval()(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_fbkd_terms_match_their_formulas_with_identity_adapters():
    """Guarantee: FBKD's four terms equal their formulas (zero when the adapted student equals the teacher), it adapts
    a narrower student, and a detector distilled with it trains its connectors with the student; Table 6
    regenerates the FBKD row beside CWD.

    Identity adapters leave four plain distances: sqrt(sum(d^2 M)) * 7e-5 + ||mean_hw d|| * 4e-3
    + ||mean_c d|| * 4e-3 + ||NL(T) - NL(S)|| * 7e-5, with d = T - S."""
    torch.manual_seed(1)
    loss = losses.build("fbkd", loss_weight=2.0)
    s, t = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    loss(s, t)
    _identity_adapters(loss, 8)
    loss.eval()
    d = t - s
    mask = (spatial_attention(t, 0.5) + spatial_attention(s, 0.5)) / 2
    expected = (7e-5 * math.sqrt(float((d ** 2 * mask).sum())) + 4e-3 * float(d.mean(dim=(2, 3)).norm())
                + 4e-3 * float(d.mean(dim=1).norm())
                + 7e-5 * float((loss.teacher_non_local(t) - loss.teacher_non_local(s)).norm()))
    assert loss(s, t).item() == pytest.approx(2.0 * expected, rel=1e-5)


def test_the_spatial_attention_averages_one_over_the_positions_and_prefers_strong_ones():
    x = torch.zeros(1, 2, 3, 3)
    x[0, :, 1, 1] = 5.0
    mask = spatial_attention(x, 0.5)
    assert float(mask.mean()) == pytest.approx(1.0) and float(mask[0, 0, 1, 1]) == float(mask.max())


def test_fbkd_adapts_a_student_with_fewer_channels_and_trains_its_adapters_and_the_student_map():
    torch.manual_seed(2)
    loss = losses.build("fbkd", sub_sample=True, reduction=4, maxpool_stride=2)
    s = torch.randn(2, 16, 16, 16, requires_grad=True)
    value = loss(s, torch.randn(2, 32, 16, 16))
    value.backward()
    assert value.item() > 0 and float(s.grad.abs().sum()) > 0
    assert all(p.grad is not None for p in loss.student_adapt["feature"].parameters())
    assert loss.student_adapt["feature"].weight.shape == (32, 16, 1, 1)


def test_fbkd_parameters_are_checked_and_need_no_adapter():
    assert losses.declaration("fbkd").needs_adapter is False
    assert losses.parameters("fbkd")["mask_weight"] == 7e-5 and losses.parameters("fbkd")["channel_t"] == 0.5
    with pytest.raises(UserError, match="spatial_t must be a finite number > 0"):
        losses.check_params("fbkd", {"spatial_t": 0.0})
    with pytest.raises(UserError, match="sub_sample must be true or false"):
        losses.check_params("fbkd", {"sub_sample": "yes"})


@pytest.mark.parametrize("sub_sample", [False, True])
def test_the_non_local_blocks_product_taken_keys_first_equals_mmcvs_block_in_value_and_every_gradient(sub_sample):
    """FBKD multiplies values by keys before queries (no (HW x HW) map); with a trained (non-zero)
    output BN, value and the gradients in the input and in every weight equal mmcv's own forward."""
    torch.manual_seed(2)
    block = non_local(8, 2, sub_sample, 2).double().train()
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.normal_()  # the output BN's weight starts at zero: make every path carry gradient
    x = torch.randn(2, 8, 12, 10, dtype=torch.float64)
    results = []
    for forward in (block, lambda inp: non_local_forward(block, inp)):
        inp = x.clone().requires_grad_()
        out = forward(inp)
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum(),
                                    [inp, *block.parameters()])
        results.append((out.detach(), grads))
    (ours, ours_grads), (theirs, their_grads) = results[1], results[0]
    assert float((ours - theirs).abs().max()) < 1e-10 * float(theirs.abs().max())
    assert len(ours_grads) == len(their_grads) > 8
    for mine, reference in zip(ours_grads, their_grads):
        assert float((mine - reference).abs().max()) <= 1e-10 * max(float(reference.abs().max()), 1e-30)
