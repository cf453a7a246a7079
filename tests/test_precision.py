"""schedule.precision: fp32 | bf16 | fp16 (runners/precision.py). On this CPU: bf16 trains under
mmengine's CPU autocast with the KD terms in fp32; fp16 is refused before anything runs."""

import json
import os
import subprocess
import sys

import pytest
import torch
from mmengine.hooks import Hook

from kdbench.errors import UserError
from kdbench.ids import run_id
from kdbench.spec import parse_run
from tests.run_fixtures import ROOT, cwd_terms, seg_run, teacher_of


def test_precision_enters_the_run_id_only_when_it_is_not_fp32():
    """Guarantee: `schedule.precision` is in a run's id only when not fp32; a bf16 run on a CPU autocasts its models
    and keeps its KD terms in fp32; fp16 on a CPU exits 2 with one line before anything is written."""
    plain = parse_run(seg_run())
    explicit = parse_run(seg_run(schedule={"iterations": 4, "batch_size": 2, "checkpoint_interval": 2,
                                           "precision": "fp32"}))
    bf16 = parse_run(seg_run(schedule={"iterations": 4, "batch_size": 2, "checkpoint_interval": 2,
                                       "precision": "bf16"}))
    assert "precision" not in plain.to_dict()["schedule"]
    assert run_id(explicit) == run_id(plain)
    assert bf16.to_dict()["schedule"]["precision"] == "bf16"
    assert run_id(bf16) != run_id(plain)


def test_an_unknown_precision_is_one_line_naming_the_key_and_the_valid_values():
    with pytest.raises(UserError) as error:
        parse_run(seg_run(schedule={"precision": "fp8"}), "run.json")
    assert "run.json" in str(error.value) and "schedule.precision" in str(error.value)
    assert "bf16" in str(error.value) and "\n" not in str(error.value)


def test_fp16_on_a_cpu_exits_2_with_one_line_before_anything_is_written(tmp_path):
    """Guarantee: Fp16 on a cpu exits 2 with one line before anything is written."""
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps(seg_run(device="cpu", schedule={"precision": "fp16"})))
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "kdbench.cli", "run", str(run_file), "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "schedule.precision" in lines[0] and "fp16 needs a GPU" in lines[0]
    assert not out.exists()


class _Dtypes(Hook):
    """Records, on the first training step, the dtype of the student's logits and of each KD
    term's loss, and the optimizer wrapper the Runner built."""

    def __init__(self):
        self.seen: dict[str, torch.dtype] = {}
        self.wrapper = None

    def before_train(self, runner):
        model = getattr(runner.model, "module", runner.model)
        self.wrapper = type(runner.optim_wrapper).__name__
        model.student.decode_head.conv_seg.register_forward_hook(self._record("logits"))
        for name, loss in model.kd_losses.items():
            loss.register_forward_hook(self._record(name))

    def _record(self, name):
        def hook(module, inputs, output):  # returns None: the output is left as it is
            self.seen.setdefault(name, output.dtype)
        return hook


@pytest.mark.slow
@pytest.mark.parametrize("precision, logits", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_a_cpu_run_autocasts_its_models_to_its_precision_and_keeps_the_kd_terms_in_fp32(
        seg_teacher, tmp_path, precision, logits):
    """Guarantee: A cpu run autocasts its models to its precision and keeps the kd terms in fp32."""
    from runners.train import train_and_evaluate

    run = parse_run(seg_run(teacher=teacher_of(seg_teacher), distill=cwd_terms(), device="cpu",
                            schedule={"iterations": 3, "batch_size": 2, "checkpoint_interval": 3,
                                      "precision": precision}))
    hook = _Dtypes()
    record = train_and_evaluate(run, tmp_path, hooks=(hook,))
    assert record["status"] == "complete"
    assert hook.seen["logits"] == logits
    assert hook.seen["cwd_logits"] == torch.float32 and hook.seen["cwd_feature"] == torch.float32
    assert hook.wrapper == ("CpuAutocastOptimWrapper" if precision == "bf16" else "OptimWrapper")
    assert json.loads((tmp_path / "env.json").read_text())["precision"] == precision
    assert record["recipe"]["precision"] == precision
