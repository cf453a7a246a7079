"""CIRKD's two losses (kdbench/losses/cirkd_pair.py, cirkd_memory.py) against their formulas: the
mini-batch term against a NumPy double loop over pairs and rows, the memory terms against a plain
autograd formulation (benchmarks/references.py) with the same projector, queues and random draws,
the queue update against its rule worked out by hand, and the queues' round trip through a state
dict (a resumed run continues from the same memory, bit for bit)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks.references import reference_cirkd_memory, reference_cirkd_pair
from kdbench import losses
from kdbench.errors import UserError


def _maps(shape_S=(3, 5, 4, 6), shape_T=(3, 7, 4, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(*shape_S, generator=g, dtype=torch.float64).requires_grad_()
    t = torch.randn(*shape_T, generator=g, dtype=torch.float64)
    return s, t


def _numpy_pair_kl(s: np.ndarray, t: np.ndarray, tau: float) -> float:
    """1/B^2 sum_{i,j} 1/HW sum_r KL(softmax(T_i T_j^T / tau)[r] || softmax(S_i S_j^T / tau)[r])."""
    def rows(x):
        x = x.reshape(x.shape[0], x.shape[1], -1)
        return np.transpose(x / np.linalg.norm(x, axis=1, keepdims=True), (0, 2, 1))

    def log_softmax(a):
        a = a - a.max(axis=1, keepdims=True)
        return a - np.log(np.exp(a).sum(axis=1, keepdims=True))

    s, t = rows(s), rows(t)
    b, positions = s.shape[:2]
    total = 0.0
    for i in range(b):
        for j in range(b):
            log_p_s, log_p_t = log_softmax(s[i] @ s[j].T / tau), log_softmax(t[i] @ t[j].T / tau)
            total += (np.exp(log_p_t) * (log_p_t - log_p_s)).sum() / positions
    return total / (b * b)


def test_cirkd_pair_is_the_mean_over_every_ordered_pair_of_the_row_kl_of_the_similarity_maps():
    """Guarantee: `cirkd_pair` equals CIRKD's mini-batch pixel-to-pixel term (the mean over every ordered pair of
    images of the KL between the row softmaxes of the teacher's and the student's similarity maps), against a
    NumPy double loop in value and a plain autograd formulation in gradient."""
    s, t = _maps()
    loss = losses.build("cirkd_pair", tau=0.1, loss_weight=2.0)
    value = loss(s, t)
    assert float(value) == pytest.approx(2.0 * _numpy_pair_kl(s.detach().numpy(), t.numpy(), 0.1), rel=1e-12)
    value.backward()
    ours = s.grad.clone()
    s.grad = None
    reference_cirkd_pair(s, t, 0.1, False, 2.0).backward()
    assert torch.allclose(ours, s.grad, rtol=0, atol=1e-12 * float(s.grad.abs().max()))


def test_cirkd_pair_with_pooling_averages_2x2_windows_first_odd_sizes_included():
    s, t = _maps((2, 4, 5, 7), (2, 4, 5, 7))
    value = losses.build("cirkd_pair", pooling=True)(s, t)
    pooled = [F.avg_pool2d(x.detach(), 2, 2, ceil_mode=True).numpy() for x in (s, t)]
    assert float(value) == pytest.approx(_numpy_pair_kl(*pooled, 0.1), rel=1e-12)


def test_cirkd_pair_gradient_passes_gradcheck_and_a_second_backward_gives_the_same_gradient():
    """Guarantee: `cirkd_pair`'s gradient, worked out in blocks of rows in the forward, passes gradcheck (float64),
    and a second backward gives the same gradient."""
    s, t = _maps((2, 3, 2, 3), (2, 4, 2, 3))
    loss = losses.build("cirkd_pair", tau=0.5)
    assert torch.autograd.gradcheck(lambda x: loss(x, t), (s,))
    value = loss(s, t)
    (first,) = torch.autograd.grad(value, s, retain_graph=True)
    value.backward()
    assert torch.equal(first, s.grad)


def test_cirkd_pair_is_zero_for_maps_equal_up_to_a_positive_scale_at_each_position():
    s, _ = _maps()
    scale = torch.rand(3, 1, 4, 6, dtype=torch.float64) + 0.5
    assert float(losses.build("cirkd_pair")(s, s.detach() * scale)) == pytest.approx(0.0, abs=1e-12)


def test_cirkd_pair_working_memory_is_a_few_similarity_blocks_and_the_maps_and_pooling_shrinks_it():
    declared = losses.check_params("cirkd_pair", {})
    small = declared.working_bytes((8, 128, 32, 32), (8, 512, 32, 32), 8)  # one block: the whole 1024^2 matrix
    assert small == 4 * (5 * 1024 ** 2 + 8 * 1024 * (2 * 128 + 512))
    large = declared.working_bytes((8, 128, 256, 256), (8, 512, 256, 256), 8)  # 65536 positions: blocks of 256 rows
    assert large == 4 * (5 * 256 * 65536 + 8 * 65536 * (2 * 128 + 512))
    pooled = losses.check_params("cirkd_pair", {"pooling": True}).working_bytes((8, 128, 256, 256),
                                                                                (8, 512, 256, 256), 8)
    assert pooled < large / 2


# -- the memory terms ---------------------------------------------------------------------------
SMALL = {"num_classes": 3, "pixel_memory_size": 40, "region_memory_size": 6, "pixel_contrast_size": 10,
         "region_contrast_size": 4}


def _labels(n=3, h=8, w=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n, h, w), generator=g)
    labels[0, :2] = 255
    return labels


def _memory_loss(**params):
    torch.manual_seed(0)
    loss = losses.build("cirkd_memory", **{**SMALL, **params}).double()
    s, t = _maps((3, 5, 4, 6), (3, 7, 4, 6))
    loss.build_connectors(s, t)
    return loss, s, t


def _copies(loss) -> dict:
    layers = {"project_head": __import__("copy").deepcopy(loss.project_head)}
    layers.update({name: buffer.clone() for name, buffer in loss.named_buffers() if "." not in name})
    return layers


def test_cirkd_memory_equals_its_plain_formulation_with_the_same_projector_queues_and_draws():
    """Guarantee: `cirkd_memory` equals a plain autograd formulation of CIRKD's memory-based pixel-to-pixel and
    pixel-to-region terms with the same projector, queues and random draws, in value, gradient and queues, over
    steps that fill and wrap the queues."""
    loss, s, t = _memory_loss(lambda_memory_pixel=0.3, lambda_memory_region=0.7, contrast_kd_temperature=2.0)
    layers, labels = _copies(loss), _labels()
    settings = {**losses.parameters("cirkd_memory"), **SMALL, "lambda_memory_pixel": 0.3,
                "lambda_memory_region": 0.7, "contrast_kd_temperature": 2.0}
    for step in range(3):  # the queues fill up and wrap around between the calls
        torch.manual_seed(10 + step)
        ours = loss(s, t, labels)
        ours.backward()
        grad, s.grad = s.grad.clone(), None
        torch.manual_seed(10 + step)
        reference = reference_cirkd_memory(layers, s, t, labels, settings)
        reference.backward()
        assert float(ours) == pytest.approx(float(reference), rel=1e-12)
        assert torch.allclose(grad, s.grad, rtol=0, atol=1e-11 * float(s.grad.abs().max()))
        s.grad = None
    for name in ("pixel_queue_ptr", "segment_queue_ptr"):
        assert torch.equal(getattr(loss, name), layers[name]), name
    for name in ("teacher_pixel_queue", "teacher_segment_queue"):  # region means: summed, not averaged, here
        assert torch.allclose(getattr(loss, name), layers[name], rtol=0, atol=1e-14), name


def test_cirkd_memory_enqueues_each_images_class_mean_and_up_to_16_of_its_pixels():
    loss, s, t = _memory_loss(pixel_memory_size=100)
    labels = torch.zeros(3, 4, 6, dtype=torch.long)
    labels[:, :, 3:] = 1
    labels[1, :, :3] = 255  # image 1 has class 1 only
    loss(s, t, labels)
    teacher = F.normalize(t, dim=1)
    first = teacher[0, :, :, :3].reshape(7, -1).mean(dim=1)
    assert torch.allclose(loss.teacher_segment_queue[0, 0], F.normalize(first, dim=0))
    assert loss.segment_queue_ptr.tolist() == [2, 3, 0]  # class 0 in images 0 and 2, class 1 in all three
    assert loss.pixel_queue_ptr.tolist() == [24, 36, 0]  # 12 pixels of each class per image, all taken
    assert torch.allclose(loss.teacher_pixel_queue[1, :36].norm(dim=1), torch.ones(36, dtype=torch.float64))


def test_cirkd_memory_queues_and_pointers_round_trip_through_a_state_dict_and_continue_bit_identically():
    """Guarantee: `cirkd_memory`'s queues and their pointers are in its state dict (so in the checkpoint), and a
    module loaded from it continues bit-identically."""
    loss, s, t = _memory_loss()
    labels = _labels()
    for step in range(2):
        torch.manual_seed(step)
        loss(s, t, labels)
    state = {k: v.clone() for k, v in loss.state_dict().items()}
    assert {"teacher_pixel_queue", "pixel_queue_ptr", "teacher_segment_queue", "segment_queue_ptr"} <= set(state)
    torch.manual_seed(99)  # the resumed module starts from other random queues, then loads the saved ones
    resumed = losses.build("cirkd_memory", **SMALL).double()
    resumed.build_connectors(s, t)
    resumed.load_state_dict(state)
    for step in range(2, 4):
        torch.manual_seed(step)
        a = loss(s, t, labels)
        torch.manual_seed(step)
        b = resumed(s, t, labels)
        assert torch.equal(a, b)
    assert all(torch.equal(x, y) for x, y in zip(loss.state_dict().values(), resumed.state_dict().values()))


def test_cirkd_memory_leaves_its_queues_alone_outside_training_and_gives_zero_without_labelled_pixels():
    loss, s, t = _memory_loss()
    before = {k: v.clone() for k, v in loss.named_buffers()}
    loss.eval()(s, t, _labels())
    assert all(torch.equal(v, before[k]) for k, v in loss.named_buffers())
    value = loss.train()(s, t, torch.full((3, 8, 12), 255))
    value.backward()
    assert float(value) == 0.0 and torch.count_nonzero(s.grad) == 0


def test_cirkd_memory_refuses_a_label_beyond_num_classes_and_an_unset_num_classes():
    loss, s, t = _memory_loss()
    with pytest.raises(UserError, match=r"label 5 is outside 0\.\.2.*num_classes"):
        loss(s, t, torch.full((3, 4, 6), 5))
    with pytest.raises(UserError, match="num_classes is not set"):
        losses.build("cirkd_memory")(s, t, _labels())


def test_cirkd_memory_defaults_are_train_cirkds():
    defaults = losses.parameters("cirkd_memory")
    assert (defaults["pixel_memory_size"], defaults["region_memory_size"]) == (20000, 2000)
    assert (defaults["contrast_temperature"], defaults["contrast_kd_temperature"]) == (0.1, 1.0)
    assert (defaults["lambda_memory_pixel"], defaults["lambda_memory_region"]) == (0.1, 0.1)
    loss, s, t = _memory_loss(pixel_contrast_size=None, region_contrast_size=None, num_classes=19)
    torch.manual_seed(0)
    draws = []
    original = loss._entries
    loss._entries = lambda queue, contrast: draws.append(contrast) or original(queue, contrast)
    loss(s, t, _labels())
    assert draws == [4096 // 19 + 1, 1024 // 19 + 1]


@pytest.mark.parametrize("params,message", [
    ({"temperature": 0.1}, r"has no parameter 'temperature'; valid: .*contrast_temperature"),
    ({"pixel_memory_size": 8}, "pixel_memory_size must be >= 16"),
    ({"contrast_temperature": 0}, "contrast_temperature must be a finite number > 0"),
])
def test_cirkd_memory_refuses_bad_parameters_by_name(params, message):
    with pytest.raises(UserError, match=message):
        losses.build("cirkd_memory", **params)


def test_the_preflight_refuses_a_cirkd_pair_location_whose_loss_needs_more_than_the_runs_memory(tmp_path):
    """Guarantee: The preflight refuses, in one line at plan, a `cirkd_pair` location whose loss needs more than
    `resources.mem_gb`; pooled, the same location plans; nothing is written either way.

    The tiny student's first stage at a 4096 x 4096 input: 1024 x 1024 positions, about 2.3 GB for the
    loss at batch 8, against resources.mem_gb 1; pooled 2x2 it fits. Nothing is written either way."""
    from tests.launch_helpers import dump_yaml, run_cli

    study = {"name": "big", "base": {
        "task": "seg", "teacher": {"config": "tiny_seg_teacher", "checkpoint": "tests/bad_inputs/files/good.ckpt"},
        "student": {"config": "tiny_seg_student"}, "dataset": {"name": "fashion_scenes", "params": {"size": 4096}},
        "schedule": {"batch_size": 8}},
        "methods": {"pair": {"method": "cirkd_pair", "student_location": "backbone.layer1"}},
        "resources": {"gpus": 0, "cpus": 1, "mem_gb": 1, "time_min": 30}}
    path = tmp_path / "big.yaml"
    path.write_text(dump_yaml(study))
    code, _, err = run_cli("plan", str(path), "--results", str(tmp_path / "results"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "methods.pair.student_location: cirkd_pair on backbone.layer1 (1024x1024 positions at input " \
           "4096x4096) needs about 2.3 GB for its loss alone, more than resources.mem_gb 1" in err
    study["methods"]["pair"]["params"] = {"pooling": True}
    path.write_text(dump_yaml(study))
    code, _, err = run_cli("plan", str(path), "--results", str(tmp_path / "results"))
    assert code == 0, err
    assert not (tmp_path / "results").exists()
