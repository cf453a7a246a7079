"""The GPU acceptance check: one command that says whether a machine runs the suite's real work,
and writes what it measured as one JSON (``tools/gpu_check.sh --out FILE``).

Three parts, each on the check's device (CUDA by default; ``--device cpu`` for a machine without):

- ``losses``: the loss suite (benchmarks/losses.py): every KD loss against its reference, value
  and gradient agreement, time and memory ratios; on CUDA the CWD rows also give the fraction of
  the memory-bandwidth bound they reach.
- ``training``: the paper's PSPNet-R101 -> R18 CWD run (studies/paper_table2_cityscapes.yaml,
  ``cwd_logits``) for 200 iterations at its 512x512 crop and batch 8 on a generated
  Cityscapes-format tree (runners.data.cityscapes_format), once per precision (fp32 and bf16),
  through ``runners.run.run_one`` as every run: seconds per iteration, peak memory, the KD terms'
  and the teacher's share of a step, and whether every logged loss is finite.
- ``gfl_step``: a GFL R101 -> R50 CWD step (studies/mmrazor_cwd_coco_gfl.yaml) on a generated
  batch at the COCO 1x input size, beside a student step and a teacher forward.

On CUDA each figure of peak memory is its part's own (the allocator's peak, reset before it); on a
CPU it is the process's peak resident set so far (it cannot be reset), so a later part's includes
an earlier one's.

Weights are random (the teacher's saved to a file the run loads, the student's backbone not
fetched): timing and finiteness do not depend on them, and nothing is downloaded. ``--quick``
runs at reduced sizes, and the loss part for CWD only (under 2 minutes on 2 CPU cores;
tests/test_gpu_check.py; the whole loss suite on a CPU is ``kdbench bench --suite losses``).
``passed`` is true when every loss agrees, every training run completes with finite losses and
the GFL step's losses are finite; the figures are reported, not judged.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.gfl_step import gfl_step_row
from benchmarks.step import run_of

PRECISIONS = ("fp32", "bf16")
# Full: the paper's protocol (crop 512, batch 8) and COCO 1x's input (1333x800, padded to /32, two
# images per GPU). Quick: the same code at sizes two CPU cores get through in seconds.
SIZES = {
    "full": {"loss_methods": None, "loss_scale": 1.0, "repeats": 5, "iterations": 200, "crop": (512, 512), "batch": 8,
             "image": (256, 512), "data_scale": (2048, 1024), "num_train": 16, "num_val": 2, "workers": 8,
             "gfl_input": (800, 1344), "gfl_batch": 2, "gfl_repeats": 5},
    "quick": {"loss_methods": ("cwd",), "loss_scale": 0.25, "repeats": 1, "iterations": 3, "crop": (64, 64),
              "batch": 2, "image": (64, 128), "data_scale": (128, 64), "num_train": 4, "num_val": 1, "workers": 0,
              "gfl_input": (64, 64), "gfl_batch": 1, "gfl_repeats": 1},
}
SEG_STUDY, SEG_RUN = "studies/paper_table2_cityscapes.yaml", "cwd_logits_s0"
NO_DOWNLOAD = {"model.pretrained": None}  # the student's ImageNet backbone: random instead


# -- losses -----------------------------------------------------------------------------------
def loss_rows(device: str, sizes: dict) -> list[dict]:
    from benchmarks import losses

    return losses.run(scale=sizes["loss_scale"], repeats=sizes["repeats"], methods=sizes["loss_methods"],
                      devices=(device,))


# -- training ---------------------------------------------------------------------------------
def _random_teacher(run, path: Path) -> str:
    """The teacher's random weights as a checkpoint file (what a run loads, strictly)."""
    import torch

    from runners.build import build_model, load_config

    cfg = load_config(run.teacher.config, dict(run.teacher.overrides), "teacher.config")
    torch.save(build_model(cfg, "seg", init=False).state_dict(), path)
    return str(path)


def _training_run(device: str, precision: str, sizes: dict, data: Path, teacher: str, threads: int) -> dict:
    """The paper's CWD run, resized to the check: the run dict ``run_one`` executes."""
    run = run_of(SEG_STUDY, SEG_RUN).to_dict()
    iterations = sizes["iterations"]
    run.update(
        name=f"gpu_check_{precision}", device=device, threads=threads,
        dataset={"name": "cityscapes", "root": str(data), "params": {"scale": list(sizes["data_scale"])}},
        teacher={**run["teacher"], "checkpoint": teacher},
        student={**run["student"], "overrides": {**run["student"]["overrides"], **NO_DOWNLOAD}},
        schedule={**run["schedule"], "iterations": iterations, "batch_size": sizes["batch"],
                  "crop": list(sizes["crop"]), "val_interval": None, "checkpoint_interval": iterations,
                  "num_workers": sizes["workers"], "precision": precision})
    return run


def _logged_losses(out: Path) -> list[float]:
    """Every loss value mmengine logged during training (vis_data/scalars.json, one JSON a line)."""
    values = []
    for path in out.glob("*/vis_data/scalars.json"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            values += [float(v) for k, v in record.items() if k.startswith("loss") or k.endswith("loss")]
    return values


def training_row(device: str, precision: str, sizes: dict, work: Path, teacher: str, threads: int) -> dict:
    from kdbench.spec import parse_run
    from runners.run import run_one

    out = work / f"run_{precision}"
    data = work / "cityscapes"
    spec = parse_run(_training_run(device, precision, sizes, data, teacher, threads))
    if device == "cuda":  # each run's own peak (the cost hook reads the allocator's peak)
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    row = {"part": "training", "precision": precision, "device": device, "iterations": sizes["iterations"],
           "crop": list(sizes["crop"]), "batch": sizes["batch"], "teacher": spec.teacher.config,
           "student": spec.student.config, "terms": [t.name for t in spec.distill]}
    try:
        record = run_one(spec, out)
    except Exception as error:  # a failure is a row (timm's style), and the check fails
        error_file = out / "error.json"
        detail = json.loads(error_file.read_text()) if error_file.is_file() else {"error": str(error)}
        return {**row, "status": detail.get("status", "failed"), "error": detail.get("message") or
                detail.get("error") or f"{type(error).__name__}: {error}", "losses_finite": False}
    losses = _logged_losses(out)
    return {**row, "status": record["status"], "wall_seconds": time.perf_counter() - started, **record["cost"],
            "logged_losses": len(losses), "losses_finite": bool(losses) and all(map(math.isfinite, losses)),
            "metrics": record["metrics"]}


def training_rows(device: str, sizes: dict, work: Path, threads: int) -> list[dict]:
    from runners.data.cityscapes_format import make_cityscapes

    make_cityscapes(work / "cityscapes", num_train=sizes["num_train"], num_val=sizes["num_val"],
                    size=sizes["image"])
    teacher = _random_teacher(run_of(SEG_STUDY, SEG_RUN), work / "teacher_random.pth")
    return [training_row(device, precision, sizes, work, teacher, threads) for precision in PRECISIONS]


# -- the check ----------------------------------------------------------------------------------
def verdict(losses: list[dict], training: list[dict], gfl: dict) -> list[str]:
    """What failed, one line each (empty: the machine passed)."""
    problems = [f"losses: {r['method']} on {r['input']} ({r['device']}) does not agree with its reference"
                for r in losses if not r["agrees"]]
    problems += [f"training {r['precision']}: {r['status']}" + (f": {r['error']}" if r.get("error") else "")
                 for r in training if r["status"] != "complete"]
    problems += [f"training {r['precision']}: a logged loss is not finite" for r in training
                 if r["status"] == "complete" and not r["losses_finite"]]
    if not gfl["losses_finite"]:
        problems.append(f"gfl_step: a loss is not finite: {gfl['losses']}")
    return problems


def summary(losses: list[dict], training: list[dict], gfl: dict) -> dict:
    """The headline figures: CWD's share of the bandwidth bound (CUDA), each precision's s/iter,
    peak memory and KD share, bf16's speed-up over fp32, the GFL step's overhead."""
    by_precision = {r["precision"]: r for r in training if r["status"] == "complete"}
    fp32, bf16 = by_precision.get("fp32"), by_precision.get("bf16")
    return {
        "cwd_bandwidth_fraction": {r["input"]: r["bandwidth_fraction"] for r in losses
                                   if r["registry_name"] == "cwd" and "bandwidth_fraction" in r},
        "training": {p: {k: r.get(k) for k in ("seconds_per_iter", "peak_memory_mb", "kd_share", "teacher_share")}
                     for p, r in by_precision.items()},
        "bf16_speedup": fp32["seconds_per_iter"] / bf16["seconds_per_iter"] if fp32 and bf16 else None,
        "gfl_step": {k: gfl[k] for k in ("kd_s", "overhead", "kd_share", "peak_memory_mb")},
    }


def check(device: str, quick: bool, work: Path, threads: int, progress=print) -> dict:
    from benchmarks.machine import machine

    sizes = SIZES["quick" if quick else "full"]
    started = time.perf_counter()
    progress(f"gpu_check: losses on {device}: {', '.join(sizes['loss_methods'] or ['every method'])}")
    losses = loss_rows(device, sizes)
    progress(f"gpu_check: PSPNet-R101 -> R18 CWD, {sizes['iterations']} iterations, {' and '.join(PRECISIONS)} "
             f"({time.perf_counter() - started:.0f} s so far)")
    training = training_rows(device, sizes, work, threads)
    progress(f"gpu_check: GFL R101 -> R50 CWD step ({time.perf_counter() - started:.0f} s so far)")
    gfl = gfl_step_row(device, sizes)
    problems = verdict(losses, training, gfl)
    return {"check": "gpu_check", "device": device, "quick": quick, "sizes": sizes, "machine": machine(),
            "passed": not problems, "problems": problems, "summary": summary(losses, training, gfl),
            "wall_seconds": time.perf_counter() - started, "losses": losses, "training": training, "gfl_step": gfl}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/gpu_check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the JSON file to write (its directory must exist)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="default: cuda")
    parser.add_argument("--quick", action="store_true", help="reduced sizes (a CPU gets through in minutes)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    import torch

    out = Path(args.out)
    if not out.resolve().parent.is_dir():
        print(f"gpu_check: error: --out: {out}: its directory does not exist", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: error: --device cuda: no GPU is visible (use --device cpu --quick here)", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        print(f"gpu_check: error: --threads: must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    threads = args.threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="kdbench-gpu-check-") as work:
        result = check(args.device, args.quick, Path(work), threads,
                       progress=lambda line: print(line, file=sys.stderr, flush=True))
    from kdbench.store import write_json_atomic

    write_json_atomic(out, result)
    print(json.dumps({"passed": result["passed"], "problems": result["problems"], **result["summary"]}, indent=1))
    print(f"gpu_check: wrote {out} in {result['wall_seconds']:.0f} s")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
