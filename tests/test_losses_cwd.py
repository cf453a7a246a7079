"""Channel-wise distillation: equal to MMRazor's formulation, stable, lean, and well-behaved."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdbench import losses
from kdbench.errors import UserError
from kdbench.losses.cwd import ChannelWiseDivergence


def mmrazor_cwd(preds_S, preds_T, tau, loss_weight):
    """MMRazor's ChannelWiseDivergence math, written out in plain autograd
    (docs/background.md#mmrazors-cwd)."""
    n, c, h, w = preds_S.shape
    rows_S = preds_S.reshape(-1, h * w) / tau
    rows_T = preds_T.detach().reshape(-1, h * w) / tau
    p_T = F.softmax(rows_T, dim=1)
    kl = torch.sum(p_T * F.log_softmax(rows_T, dim=1) - p_T * F.log_softmax(rows_S, dim=1))
    return loss_weight * kl * tau**2 / (n * c)


def ours_and_mmrazor(shape, dtype, tau, loss_weight):
    """(our value, MMRazor's value, our gradient, MMRazor's gradient) on one random input."""
    preds_S = (torch.randn(shape, dtype=dtype) * 3).requires_grad_()
    preds_T = torch.randn(shape, dtype=dtype) * 3
    reference_S = preds_S.detach().clone().requires_grad_()
    ours = ChannelWiseDivergence(tau=tau, loss_weight=loss_weight)(preds_S, preds_T)
    reference = mmrazor_cwd(reference_S, preds_T, tau, loss_weight)
    ours.backward()
    reference.backward()
    return ours, reference, preds_S.grad, reference_S.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1, 2, 3), (2, 3, 5, 7), (4, 19, 16, 32), (2, 8, 1, 9)])
@pytest.mark.parametrize("tau", [0.5, 1.0, 4.0, 10.0])
def test_cwd_matches_mmrazor_value_and_gradient(shape, tau, dtype):
    ours, reference, grad, reference_grad = ours_and_mmrazor(shape, dtype, tau, 5.0)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-7)
    # Gradients: 1e-5 relative to the gradient's scale (single elements of p_S - p_T near zero
    # carry float32 cancellation noise in both formulations).
    scale = reference_grad.abs().max().item()
    torch.testing.assert_close(grad, reference_grad, rtol=1e-5, atol=1e-5 * scale)


def test_cwd_hand_computed_two_position_case():
    # One channel, two positions: p_T = (3/4, 1/4), p_S = (1/2, 1/2).
    preds_T = torch.tensor([math.log(3.0), 0.0]).view(1, 1, 1, 2)
    preds_S = torch.zeros(1, 1, 1, 2)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    value = losses.build("cwd", tau=1.0, loss_weight=2.0)(preds_S, preds_T)
    assert value.item() == pytest.approx(2.0 * expected, rel=1e-6)


def test_cwd_is_positive_and_zero_only_when_distributions_match():
    preds_S, preds_T = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    cwd = ChannelWiseDivergence(tau=2.0)
    assert cwd(preds_S, preds_T).item() > 1e-3
    assert cwd(preds_T.clone(), preds_T).item() == pytest.approx(0.0, abs=1e-6)


def test_cwd_is_invariant_to_a_constant_shift_of_each_channel():
    preds_S, preds_T = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    shift = torch.randn(2, 4, 1, 1) * 100
    cwd = ChannelWiseDivergence(tau=4.0)
    torch.testing.assert_close(cwd(preds_S + shift, preds_T), cwd(preds_S, preds_T), rtol=1e-4, atol=1e-6)
    # ... and a student equal to the teacher up to per-channel shifts has zero loss.
    assert cwd(preds_T + shift, preds_T).item() == pytest.approx(0.0, abs=1e-5)


def test_cwd_scales_with_tau_squared():
    preds_S, preds_T = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    tau = 3.0
    at_tau = ChannelWiseDivergence(tau=tau)(preds_S * tau, preds_T * tau)
    at_one = ChannelWiseDivergence(tau=1.0)(preds_S, preds_T)
    torch.testing.assert_close(at_tau, at_one * tau**2, rtol=1e-5, atol=1e-7)


def test_cwd_loss_weight_multiplies_the_value():
    preds_S, preds_T = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    one = ChannelWiseDivergence(tau=2.0, loss_weight=1.0)(preds_S, preds_T)
    fifty = ChannelWiseDivergence(tau=2.0, loss_weight=50.0)(preds_S, preds_T)
    torch.testing.assert_close(fifty, one * 50, rtol=1e-6, atol=0)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_cwd_custom_backward_passes_float64_gradcheck(tau):
    preds_S = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    preds_T = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    cwd = ChannelWiseDivergence(tau=tau, loss_weight=0.7)
    assert torch.autograd.gradcheck(lambda s: cwd(s, preds_T), (preds_S,))


def test_cwd_sends_no_gradient_to_the_teacher():
    preds_S = torch.randn(2, 3, 4, 4, requires_grad=True)
    preds_T = torch.randn(2, 3, 4, 4, requires_grad=True)
    ChannelWiseDivergence()(preds_S, preds_T).backward()
    assert preds_S.grad is not None and preds_S.grad.abs().sum() > 0
    assert preds_T.grad is None


def test_cwd_leaves_its_inputs_unchanged():
    preds_S, preds_T = torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 3, 4, 4)
    before_S, before_T = preds_S.detach().clone(), preds_T.clone()
    ChannelWiseDivergence(tau=4.0)(preds_S, preds_T).backward()
    assert torch.equal(preds_S.detach(), before_S) and torch.equal(preds_T, before_T)


def test_cwd_stays_finite_and_exact_for_logits_of_magnitude_1e4():
    preds_S = (torch.randn(2, 4, 8, 8) * 1e4).requires_grad_()
    preds_T = torch.randn(2, 4, 8, 8) * 1e4
    value = ChannelWiseDivergence(tau=1.0)(preds_S, preds_T)
    value.backward()
    exact = mmrazor_cwd(preds_S.detach().double(), preds_T.double(), 1.0, 1.0)
    assert torch.isfinite(value) and torch.isfinite(preds_S.grad).all()
    assert value.item() == pytest.approx(exact.item(), rel=1e-5)


def test_cwd_runs_under_bf16_autocast_and_returns_bf16_gradients():
    preds_S = torch.randn(2, 4, 8, 8).bfloat16().requires_grad_()
    preds_T = torch.randn(2, 4, 8, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = ChannelWiseDivergence(tau=2.0)(preds_S, preds_T)
    value.backward()
    reference = mmrazor_cwd(preds_S.detach().float(), preds_T.float(), 2.0, 1.0)
    assert torch.isfinite(value) and preds_S.grad.dtype == torch.bfloat16
    assert value.item() == pytest.approx(reference.item(), rel=1e-4)


def test_cwd_rejects_different_shapes_naming_both():
    with pytest.raises(UserError, match=r"\(2, 3, 4, 4\).*\(2, 5, 4, 4\).*adapter"):
        ChannelWiseDivergence()(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4))


@pytest.mark.parametrize("tau", [0, -1.0, float("nan"), float("inf"), "4"])
def test_cwd_rejects_a_temperature_that_is_not_a_positive_number(tau):
    with pytest.raises(UserError, match="tau"):
        losses.build("cwd", tau=tau)


def test_build_rejects_unknown_methods_and_parameters_with_the_valid_ones():
    with pytest.raises(UserError, match=r"unknown distillation method 'cdw'.*did you mean cwd.*valid:"):
        losses.build("cdw")
    with pytest.raises(UserError, match=r"no parameter 'temperature'; valid: tau, loss_weight"):
        losses.build("cwd", temperature=4)


@pytest.fixture
def blocked_kernel(monkeypatch):
    """The blocked torch formulation, even where the compiled CPU kernel is built."""
    from kdbench.losses import _native

    monkeypatch.setenv("KDBENCH_CWD_KERNEL", "blocked")
    _native.cwd_cpu.cache_clear()
    yield
    _native.cwd_cpu.cache_clear()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_cwd_matches_mmrazor_when_the_rows_are_worked_in_several_blocks_with_a_partial_last_one(
        monkeypatch, blocked_kernel, tau, dtype):
    from kdbench.losses import cwd as cwd_module

    monkeypatch.setattr(cwd_module, "_CPU_BLOCK", 3 * 40)  # 3 rows of 40 positions per block; 14 rows
    ours, reference, grad, reference_grad = ours_and_mmrazor((2, 7, 5, 8), dtype, tau, 3.0)
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-8)
    scale = reference_grad.abs().max().item()
    torch.testing.assert_close(grad, reference_grad, rtol=1e-5, atol=1e-6 * scale)


def test_cwd_backward_twice_with_retain_graph_gives_the_same_gradient_twice(blocked_kernel):
    preds_S, preds_T = torch.randn(2, 3, 4, 5, requires_grad=True), torch.randn(2, 3, 4, 5)
    value = ChannelWiseDivergence(tau=2.0, loss_weight=5.0)(preds_S, preds_T)
    value.backward(retain_graph=True)
    first = preds_S.grad.clone()
    value.backward()
    assert first.abs().sum() > 0
    torch.testing.assert_close(preds_S.grad, 2 * first, rtol=1e-6, atol=0)


def test_cwd_of_maps_with_no_positions_is_zero_with_an_empty_gradient():
    preds_S = torch.randn(2, 3, 0, 4, requires_grad=True)
    value = ChannelWiseDivergence(tau=2.0)(preds_S, torch.randn(2, 3, 0, 4))
    value.backward()
    assert value.item() == 0.0 and preds_S.grad.shape == (2, 3, 0, 4)


def test_cwd_of_maps_that_differ_by_a_large_per_channel_shift_is_zero_without_cancellation():
    preds_T = torch.randn(4, 8, 16, 16)
    shift = torch.full((4, 8, 1, 1), 1000.0)
    value = ChannelWiseDivergence(tau=4.0, loss_weight=50.0)(preds_T + shift, preds_T)
    # float32 rounding of preds_T + 1000 alone moves each value by up to 3e-5; the loss must stay
    # at that level, not at the 1000 * 1e-7 * 16 * 50 that a cancellation of the shift would leave.
    assert abs(value.item()) < 1e-4


def test_cwd_under_no_grad_keeps_no_gradient_map(monkeypatch, blocked_kernel):
    from kdbench.losses import cwd as cwd_module

    kept = []
    real_empty = torch.empty

    def recording_empty(*size, **kwargs):
        tensor = real_empty(*size, **kwargs)
        kept.append(tuple(tensor.shape))
        return tensor

    monkeypatch.setattr(cwd_module.torch, "empty", recording_empty)
    preds_S = torch.randn(2, 3, 4, 5, requires_grad=True)
    with torch.no_grad():
        value = ChannelWiseDivergence(tau=2.0)(preds_S, torch.randn(2, 3, 4, 5))
    assert value.item() > 0 and (6, 20) not in kept  # no (N*C, H*W) map was allocated
    ChannelWiseDivergence(tau=2.0)(preds_S, torch.randn(2, 3, 4, 5))
    assert (6, 20) in kept  # ... while with a graph the gradient's map is


# ----------------------------------------------------------------------------- compiled CPU kernel

native = pytest.mark.skipif(
    __import__("kdbench.losses._native", fromlist=["cwd_cpu"]).cwd_cpu() is None,
    reason="the compiled CWD kernel is not built here (python -m kdbench.losses._native build)")


@native
@pytest.mark.parametrize("shape, tau", [((2, 19, 16, 32), 4.0), ((3, 64, 9, 7), 1.0), ((1, 5, 1, 1), 2.0)])
def test_the_compiled_kernel_agrees_with_the_blocked_formulation(shape, tau, monkeypatch):
    from kdbench.losses import _native

    torch.manual_seed(0)
    preds_S, preds_T = (torch.randn(shape) * 3).requires_grad_(), torch.randn(shape) * 3
    results = []
    for kernel in ("native", "blocked"):
        monkeypatch.setenv("KDBENCH_CWD_KERNEL", kernel)
        _native.cwd_cpu.cache_clear()
        preds_S.grad = None
        value = ChannelWiseDivergence(tau=tau, loss_weight=3.0)(preds_S, preds_T)
        value.backward()
        results.append((value.detach(), preds_S.grad.clone()))
    _native.cwd_cpu.cache_clear()
    (v_native, g_native), (v_blocked, g_blocked) = results
    assert torch.allclose(v_native, v_blocked, rtol=1e-5, atol=0)
    assert float((g_native - g_blocked).abs().max()) <= 1e-5 * float(g_blocked.abs().max())


@native
def test_the_compiled_kernel_keeps_no_map_under_no_grad_and_gives_a_second_backward_the_same_bits(monkeypatch):
    from kdbench.losses import _native

    module = _native.cwd_cpu()
    calls = []
    monkeypatch.setattr(_native, "cwd_cpu", lambda: type("Spy", (), {"cwd_forward": staticmethod(
        lambda *args: calls.append(args[3]) or module.cwd_forward(*args))}))
    preds_S, preds_T = torch.randn(2, 3, 8, 8, requires_grad=True), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ChannelWiseDivergence(tau=2.0)(preds_S, preds_T)
    value = ChannelWiseDivergence(tau=2.0)(preds_S, preds_T)
    (first,) = torch.autograd.grad(value, preds_S, retain_graph=True)
    (second,) = torch.autograd.grad(value, preds_S)
    assert calls == [False, True, True] and torch.equal(first, second)


@native
def test_a_nan_reaches_the_loss_through_the_compiled_kernel():
    preds_S = torch.randn(2, 3, 8, 8)
    preds_S[1, 2, 3, 4] = float("nan")
    assert torch.isnan(ChannelWiseDivergence(tau=4.0)(preds_S, torch.randn(2, 3, 8, 8)))
