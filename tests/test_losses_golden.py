"""Golden values: each registered loss on one seeded input, pinned so that a change to any
method's numbers is noticed.

To update after an intended change: ``KDBENCH_UPDATE_GOLDEN=1 .venv/bin/python -m pytest
tests/test_losses_golden.py`` rewrites tests/golden/losses.json; review its diff and say in the
commit message why the numbers moved.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from kdbench import losses

GOLDEN = Path(__file__).parent / "golden" / "losses.json"

# (case name, method, params): every method at its defaults, plus the paper's settings and the
# ablation cells.
# What a method needs besides its defaults to run on the golden input: the class count of CIRKD's
# queues (the labels' 4), and Af-DCD's patches and channel groups fitted to 6 channels of 8 x 8.
FITTED = {"cirkd_memory": {"num_classes": 4}, "afdcd": {"M_ocd": 3, "pool_size": 0}}
# The head losses (ld, crosskd) take two detection heads, not two maps: tests/test_losses_head.py checks
# them against mmdet's LDHead and by their properties.
CASES = [(name, name, FITTED.get(name, {})) for name in losses.available()
         if not losses.declaration(name).needs_heads] + [
    ("cwd_tau4_w3", "cwd", {"tau": 4.0, "loss_weight": 3.0}),
    ("cwd_tau4_w50", "cwd", {"tau": 4.0, "loss_weight": 50.0}),
] + [
    (f"norm_divergence_{norm}_{div}", "norm_divergence", {"norm": norm, "divergence": div, "tau": 4.0})
    for norm in ("channel", "spatial", "channel_mean", "none") for div in ("kl", "mse")
]


def value_of(method: str, params: dict) -> float:
    generator = torch.Generator().manual_seed(2021)
    preds_S = torch.randn(2, 6, 8, 8, generator=generator, dtype=torch.float64) * 2
    preds_T = torch.randn(2, 6, 8, 8, generator=generator, dtype=torch.float64) * 2
    labels = torch.randint(0, 4, (2, 16, 16), generator=generator)
    labels[:, :2] = 255
    torch.manual_seed(0)  # methods with parameters of their own (HO's critic) start the same
    loss = losses.build(method, **params).double()
    if getattr(loss, "needs_labels", False):
        return float(loss(preds_S, preds_T, labels))
    if getattr(loss, "needs_boxes", False):  # boxes on 64 x 64 images (FGD)
        boxes = [torch.tensor([[4.0, 4.0, 40.0, 30.0]], dtype=torch.float64),
                 torch.tensor([[0.0, 0.0, 64.0, 64.0], [10.0, 20.0, 30.0, 50.0]], dtype=torch.float64)]
        return float(loss(preds_S, preds_T, boxes=boxes, image_shapes=[(64, 64), (64, 64)]))
    return float(loss(preds_S, preds_T))


def test_every_registered_method_has_a_golden_value():
    if os.environ.get("KDBENCH_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps({n: value_of(m, p) for n, m, p in CASES}, indent=2, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    missing = [name for name, _, _ in CASES if name not in golden]
    assert not missing, f"no golden value for {missing}: see this file's docstring to update"


@pytest.mark.parametrize("name,method,params", CASES, ids=[c[0] for c in CASES])
def test_loss_value_matches_its_golden_value(name, method, params):
    golden = json.loads(GOLDEN.read_text())
    assert value_of(method, params) == pytest.approx(golden[name], rel=1e-7, abs=1e-12)
