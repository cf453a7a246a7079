"""A run's training precision (``schedule.precision``): fp32, or autocast to bf16 or fp16.

On CUDA both go through mmengine's ``AmpOptimWrapper`` (autocast around the model's loss, a
dynamic loss scale; fp16 needs it, bf16 is unharmed by it). On a CPU mmengine's autocast supports
bf16 only, and its ``AmpOptimWrapper`` refuses to start without a GPU, so a CPU bf16 run uses
``CpuAutocastOptimWrapper``: the same autocast, without a loss scale (bf16 has fp32's exponent
range). fp16 on a CPU, or bf16 on a GPU without bf16 support, is refused before anything runs.

Only the training step is autocast (the student's and the teacher's forward); evaluation runs in
fp32, as mmengine's ValLoop does by default. The KD terms compute in fp32 under autocast (each loss
module turns autocast off and casts its inputs: kdbench.losses), so a term's value and gradient do
not depend on the precision of the maps it compares beyond their rounding.
"""

from __future__ import annotations

from contextlib import contextmanager

from kdbench.errors import UserError
from kdbench.spec import RunSpec

AUTOCAST_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def resolved_device(run: RunSpec) -> str:
    """The device a run trains on here (as runners.train does): CUDA when asked for or on ``auto``
    with a GPU visible, else the CPU."""
    import torch

    return "cuda" if run.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"


def precision_problem(precision: str, device: str) -> str | None:
    """Why ``precision`` cannot train on ``device`` here, or None."""
    if precision == "fp32":
        return None
    if device == "cpu":
        return None if precision == "bf16" else (
            f"{precision} needs a GPU: on a CPU, mmengine's autocast supports bf16 only (use bf16 or fp32)")
    import torch

    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        return f"bf16 is not supported by this GPU ({torch.cuda.get_device_name(0)}); use fp16 or fp32"
    return None


def check_precision(run: RunSpec, where: str) -> None:
    """A one-line UserError (exit 2) when the run's precision cannot train on this machine."""
    if run.schedule.precision == "fp32":
        return  # without importing torch: a launch's checks stay fast
    problem = precision_problem(run.schedule.precision, resolved_device(run))
    if problem:
        raise UserError(f"{where}: {problem}")


def optim_wrapper_type(precision: str, device: str) -> dict:
    """The optimizer wrapper's type and arguments for a precision on a device (merged over the
    wrapper config of runners.train.optim_config)."""
    if precision == "fp32":
        return {"type": "OptimWrapper"}
    if device == "cpu":
        _register_cpu_wrapper()
        return {"type": "CpuAutocastOptimWrapper", "dtype": AUTOCAST_DTYPES[precision]}
    return {"type": "AmpOptimWrapper", "dtype": AUTOCAST_DTYPES[precision], "loss_scale": "dynamic"}


def _register_cpu_wrapper() -> None:
    import torch
    from mmengine.optim import OptimWrapper
    from mmengine.registry import OPTIM_WRAPPERS
    from mmengine.runner.amp import autocast

    if "CpuAutocastOptimWrapper" in OPTIM_WRAPPERS.module_dict:
        return

    @OPTIM_WRAPPERS.register_module()
    class CpuAutocastOptimWrapper(OptimWrapper):
        """mmengine's OptimWrapper with mmengine's CPU autocast around the loss (bf16: no loss scale)."""

        def __init__(self, dtype: str = "bfloat16", **kwargs):
            super().__init__(**kwargs)
            self.cast_dtype = getattr(torch, dtype)

        @contextmanager
        def optim_context(self, model):
            with super().optim_context(model), autocast(device_type="cpu", dtype=self.cast_dtype):
                yield
