"""Execute one run: build models and data, train and evaluate on mmengine's Runner, and write
the run's result files (see kdbench/store.py). A rerun of a directory resumes from its last
checkpoint; a complete directory is left as it is.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
import traceback
from pathlib import Path

from kdbench import store
from kdbench.errors import UserError
from kdbench.ids import run_id

OWN_CHECKPOINT_SCHEME = "kdbench-own://"


def world() -> tuple[int, int]:
    """(rank, world size) of this process: several only for multi-GPU SLURM jobs, one task per GPU
    (kdbench.slurm sets KDBENCH_LAUNCHER=slurm there, and mmengine initialises the process group)."""
    if os.environ.get("KDBENCH_LAUNCHER") == "slurm":
        return int(os.environ.get("SLURM_PROCID", 0)), int(os.environ.get("SLURM_NTASKS", 1))
    return 0, 1


def _init_cpu_ranks() -> None:
    """The process group of a multi-task SLURM job on CPUs (gloo), from SLURM's variables:
    mmengine's slurm launcher would call torch.cuda.set_device first. Single node (kdbench.slurm
    asks for one), so the rendezvous is on this host, at the MASTER_PORT the job was given."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    rank, size = world()
    os.environ.update(MASTER_ADDR=os.environ.get("MASTER_ADDR", "127.0.0.1"),
                      MASTER_PORT=os.environ.get("MASTER_PORT", "29500"), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=os.environ.get("SLURM_LOCALID", str(rank)))
    dist.init_process_group("gloo", rank=rank, world_size=size)


def default_out(run: dict) -> Path:
    return Path("results") / "runs" / f"{run['name']}-{run_id(run)}"


def _environment(device: str) -> dict:
    import mmcv
    import mmdet
    import mmengine
    import mmseg
    import torch

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "mmcv": mmcv.__version__,
        "mmengine": mmengine.__version__,
        "mmseg": mmseg.__version__,
        "mmdet": mmdet.__version__,
        "git_sha": sha,
        "device": device,
        "device_name": (torch.cuda.get_device_name(0) if device == "cuda"
                        else platform.processor() or platform.machine()),
        "hostname": platform.node(),
        "threads": torch.get_num_threads(),
    }


def _register_own_checkpoint_loader(run_dir: Path) -> None:
    """The run's own resume checkpoints hold mmengine's message hub, which only unpickles with
    weights_only=False. They were written by this run into its own directory, so they are
    loaded that way, through a scheme that accepts nothing outside that directory."""
    import torch
    from mmengine.runner.checkpoint import CheckpointLoader

    root = run_dir.resolve()

    @CheckpointLoader.register_scheme(prefixes=OWN_CHECKPOINT_SCHEME, force=True)
    def load_own(filename, map_location=None, logger=None):
        path = Path(filename[len(OWN_CHECKPOINT_SCHEME):]).resolve()
        if root not in path.parents:
            raise UserError(f"refusing to resume from {path}: not inside {root}")
        return torch.load(path, map_location=map_location, weights_only=False)


def _latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "last_checkpoint"
    if pointer.is_file():
        path = Path(pointer.read_text().strip())
        if path.is_file():
            return path
    return None


def _optim_config(schedule: dict) -> tuple[dict, list]:
    if schedule["optimizer"] == "sgd":
        optimizer = {"type": "SGD", "lr": schedule["lr"], "momentum": schedule["momentum"],
                     "weight_decay": schedule["weight_decay"]}
    else:
        optimizer = {"type": "AdamW", "lr": schedule["lr"], "weight_decay": schedule["weight_decay"]}
    iters, warmup = max(schedule["iterations"], 1), schedule["warmup_iters"]
    schedulers = []
    if warmup:
        schedulers.append({"type": "LinearLR", "start_factor": 0.001, "by_epoch": False, "begin": 0, "end": warmup})
    if schedule["lr_schedule"] == "poly":
        schedulers.append({"type": "PolyLR", "eta_min": schedule["min_lr"], "power": 0.9, "begin": warmup,
                           "end": iters, "by_epoch": False})
    elif schedule["lr_schedule"] == "step":  # x0.1 at 2/3 and 11/12 of training (the 1x schedule's 8/12, 11/12)
        schedulers.append({"type": "MultiStepLR", "milestones": [iters * 2 // 3, iters * 11 // 12],
                           "gamma": 0.1, "by_epoch": False, "begin": 0, "end": iters})
    return {"type": "OptimWrapper", "optimizer": optimizer, "clip_grad": None}, schedulers


def _device(run: dict) -> str:
    import torch

    if run["device"] == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda requested but no GPU is visible")
    return "cuda" if run["device"] in ("auto", "cuda") and torch.cuda.is_available() else "cpu"


def _teacher_checkpoint(teacher: dict) -> tuple[str, bool]:
    ckpt = teacher["checkpoint"]
    if isinstance(ckpt, dict):
        from runners.teacher_run import teacher_run_checkpoint

        # Written by kdbench itself as a plain state dict: safe with weights_only=True.
        return teacher_run_checkpoint(ckpt["run"], "teacher.checkpoint"), False
    return ckpt, teacher["trusted"]


def input_size_overrides(run: dict) -> dict:
    """mmseg stacks a training batch at a fixed size: the size the data pipeline crops to."""
    from runners.datasets import training_size

    return {"model.data_preprocessor.size": training_size(run)} if run["task"] == "seg" else {}


def _load(run: dict, role: str, init: bool = True):
    from runners.build import build_model, load_config

    spec = run[role]
    cfg = load_config(spec["config"], {**input_size_overrides(run), **spec["overrides"]}, f"{role}.config")
    return build_model(cfg, run["task"], init=init)


def _check_same_preprocessing(student, teacher) -> None:
    import torch

    s, t = student.data_preprocessor, teacher.data_preprocessor
    for attr in ("mean", "std"):
        a, b = getattr(s, attr, None), getattr(t, attr, None)
        if a is not None and b is not None and not torch.equal(a, b):
            raise UserError(f"teacher and student configs normalise images differently ({attr}: "
                            f"{a.flatten().tolist()} vs {b.flatten().tolist()}); the teacher sees the student's inputs")


def execute(run: dict, out_dir: str | Path) -> dict:
    """Run ``run`` into ``out_dir``; return the final record (or raise after writing error.json)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if world()[0] != 0:  # other ranks of a multi-GPU run train; rank 0 alone writes results
        return _train_and_evaluate(run, out)
    recorded = store.read_json(out / store.SPEC)
    if recorded is not None and run_id(recorded) != run_id(run):
        raise UserError(f"{out}: this directory holds results of a different run (id "
                        f"{run_id(recorded)}, not {run_id(run)}); choose another --out")
    if store.run_state(out) == "complete":
        return store.read_json(out / store.FINAL)
    store.write_json_atomic(out / store.SPEC, {**run, "run_id": run_id(run)})
    if (out / store.ERROR).exists():  # a retry: the old error stays beside, renamed
        os.replace(out / store.ERROR, out / f"error.previous.{int(time.time())}.json")
    try:
        return _train_and_evaluate(run, out)
    except UserError as error:
        # Found by the run's own preflight (a location not in the model, a missing checkpoint):
        # recorded, so the store shows a failed run rather than one that started and vanished.
        _record_error(out, {"status": "failed", "error": str(error), "user_error": True})
        raise
    except BaseException as error:
        from runners.distill import DivergedError
        from runners.job import preempted

        if preempted():
            raise  # SLURM is requeueing this job: it resumes from its last checkpoint
        if isinstance(error, DivergedError):
            record = {"status": "diverged", "step": getattr(error, "step", None), "key": error.key,
                      "value": str(error.value), "message": f"{error.key} became {error.value}"}
        elif isinstance(error, KeyboardInterrupt):
            raise
        else:
            record = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                      "traceback": traceback.format_exc()}
        _record_error(out, record)
        raise


def record_preflight_failure(run: dict, out: str | Path, error: UserError) -> None:
    """A preflight error of ``kdbench run`` in a directory a launch made for this run (it holds
    its run.json): recorded as a failed run, so status shows it and a relaunch does not retry it
    blindly. Anywhere else nothing is written."""
    out = Path(out)
    recorded = store.read_json(out / store.SPEC)
    if not (out / "run.json").is_file() or (isinstance(recorded, dict) and recorded.get("run_id") != run_id(run)):
        return
    try:
        if recorded is None:
            store.write_json_atomic(out / store.SPEC, {**run, "run_id": run_id(run)})
    except OSError:
        return
    _record_error(out, {"status": "failed", "error": str(error), "user_error": True})


def _record_error(out: Path, record: dict) -> None:
    """Write error.json if the disk lets us: a full disk or a read-only file system must not hide
    the error that stopped the run (often that same disk) behind a second one."""
    try:
        store.write_json_atomic(out / store.ERROR, record)
    except OSError:
        pass


def _train_and_evaluate(run: dict, out: Path) -> dict:
    from mmengine.runner import Runner, set_random_seed

    from runners import metrics  # noqa: F401  (registers KDIoUMetric / KDCocoMetric)
    from runners.build import register_scope
    from runners.datasets import dataset_configs
    from runners.distill import DivergedError
    from runners.hooks import CostHook, MetricsHook

    device = _device(run)
    rank, size = world()
    launcher = os.environ.get("KDBENCH_LAUNCHER", "none")
    cpu_ranks = launcher == "slurm" and device == "cpu"  # several tasks on CPUs: the local test cluster
    if cpu_ranks:
        _init_cpu_ranks()
    if rank == 0:
        store.write_json_atomic(out / store.ENV, _environment(device))
    if run["schedule"]["batch_size"] % size:
        raise UserError(f"schedule.batch_size {run['schedule']['batch_size']} is not divisible by the "
                        f"{size} GPUs of this job (the batch size is global: images per iteration)")
    scope = register_scope(run["task"])
    data = dataset_configs(run)
    data["train_dataloader"]["batch_size"] //= size  # per process
    schedule = run["schedule"]
    set_random_seed(run["seed"])
    student = _load(run, "student") if run["role"] == "student" else None

    def probe():
        """One preprocessed training image, to check locations and shapes before training."""
        loader = Runner.build_dataloader({**data["train_dataloader"], "batch_size": 1, "num_workers": 0},
                                         seed=run["seed"])
        processed = student.data_preprocessor(next(iter(loader)), training=False)
        return processed["inputs"], processed["data_samples"]

    model = _build_with_student(run, student, probe)
    model.to(device)

    train = schedule["iterations"] > 0
    optim_wrapper, schedulers = _optim_config(schedule)
    own = model.frozen_in_student_optimizer()
    if own:  # lr and decay x0: the student's optimizer never moves e.g. HO's discriminator
        optim_wrapper["paramwise_cfg"] = {"custom_keys": {k: {"lr_mult": 0.0, "decay_mult": 0.0} for k in own}}
    metrics_hook, cost_hook = MetricsHook(out / store.METRICS), CostHook()
    latest = _latest_checkpoint(out)
    if latest is not None:
        _register_own_checkpoint_loader(out)
    kwargs = {}
    if train:
        kwargs.update(
            train_dataloader=data["train_dataloader"],
            train_cfg={"type": "IterBasedTrainLoop", "max_iters": schedule["iterations"],
                       "val_interval": schedule["val_interval"] or schedule["iterations"]},
            optim_wrapper=optim_wrapper,
            param_scheduler=schedulers or None,
            resume=latest is not None,
            load_from=f"{OWN_CHECKPOINT_SCHEME}{latest}" if latest is not None else None,
        )
    runner = Runner(
        model=model,
        work_dir=str(out),
        val_dataloader=data["val_dataloader"],
        val_cfg={"type": "ValLoop"},
        val_evaluator=data["val_evaluator"],
        default_hooks={
            "timer": {"type": "IterTimerHook"},
            "logger": {"type": "LoggerHook", "interval": max(1, min(10, schedule["iterations"])),
                       "log_metric_by_epoch": False},
            "param_scheduler": {"type": "ParamSchedulerHook"},
            "checkpoint": {"type": "CheckpointHook", "by_epoch": False,
                           "interval": schedule["checkpoint_interval"], "max_keep_ckpts": 1,
                           "save_last": True},
            "sampler_seed": {"type": "DistSamplerSeedHook"},
        },
        custom_hooks=[metrics_hook, cost_hook],
        randomness={"seed": run["seed"]},
        default_scope=scope,
        launcher=launcher,
        # GPUs: NCCL through mmengine's launcher; CPU-only multi-task jobs joined gloo above
        env_cfg={"cudnn_benchmark": False, "dist_cfg": {"backend": "nccl"}},
        # DDP of a CPU module takes no device ids (mmengine's default names the local GPU)
        cfg=({"model_wrapper_cfg": {"type": "MMDistributedDataParallel", "device_ids": None,
                                    "broadcast_buffers": False}} if cpu_ranks else None),
        log_processor={"by_epoch": False},
        experiment_name=f"{run['name']}",
        **kwargs,
    )
    started = time.time()
    try:
        if train:
            runner.train()
            if metrics_hook.last is None or metrics_hook.last["iter"] != schedule["iterations"]:
                runner.val()  # a resume after the last checkpoint but before its evaluation
        else:
            runner.val()
    except DivergedError as error:
        error.step = cost_hook.current_iter + 1
        raise
    trained = getattr(model, "module", model).student
    if rank != 0:
        return {"status": "complete", "rank": rank}
    _save_atomic(trained.state_dict(), out / "model_final.pth")
    final_metrics = {k: v for k, v in (metrics_hook.last or {}).items() if k != "iter"}
    record = {
        "status": "complete",
        "run_id": run_id(run),
        "name": run["name"],
        "role": run["role"],
        "task": run["task"],
        "iterations": schedule["iterations"],
        "metrics": final_metrics,
        "cost": {**cost_hook.summary(), "wall_seconds_this_attempt": time.time() - started},
        "checkpoint": "model_final.pth",
        "resumed_from": str(latest.name) if latest is not None else None,
    }
    if not final_metrics or not all(store.is_finite_number(v) for v in final_metrics.values()):
        raise DivergedError("val metrics", final_metrics)
    store.write_json_atomic(out / store.FINAL, record)
    return record


def _save_atomic(state: dict, path: Path) -> None:
    """torch.save, written atomically: a full disk never leaves a truncated weights file."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    store.write_bytes_atomic(path, buffer.getvalue())


def _build_with_student(run: dict, student, probe):
    """The model the Runner trains: the teacher alone for a teacher run, else a DistillModel around
    the already built student (so the probe can use its preprocessor)."""
    from runners.build import load_weights
    from runners.distill import DistillModel

    teacher = None
    if run["role"] == "teacher" or run["distill"]:
        # A teacher with a checkpoint is not initialised first: every weight is overwritten, and its
        # config's ImageNet init (a download on clusters) would be wasted.
        teacher = _load(run, "teacher", init=run["teacher"]["checkpoint"] is None)
        if run["teacher"]["checkpoint"] is not None:  # always set for distillation (validated)
            load_weights(teacher, *_teacher_checkpoint(run["teacher"]), where="teacher.checkpoint")
    if run["role"] == "teacher":
        return DistillModel(teacher, None, [], probe=None)
    if teacher is not None:
        _check_same_preprocessing(student, teacher)
    return DistillModel(student, teacher, run["distill"], probe=probe)
