"""What the spatial / pixel baseline tests (test_losses_properties.py,
test_losses_numpy_references.py, test_losses_holistic_and_adapters.py) share: the methods, a
builder, random maps and labels, and a call that passes labels to the losses that need them."""

from __future__ import annotations

import torch

from kdbench import losses

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
