"""Train and evaluate one run on mmengine's Runner, and write its result files (kdbench.store).

``execute(run, out)`` is called by runners.run.run_one after the preflight. A rerun of a directory
resumes from its newest checkpoint that loads (a truncated or corrupt last one is skipped for the
one before it, or for a fresh start); a complete directory is left as it is. The steps: the
environment (device, process group, env.json), the data, the model (a teacher alone, or a
DistillModel around student and teacher), the Runner, training and evaluation, the final record.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdbench import store
from kdbench.errors import UserError
from kdbench.ids import run_id
from kdbench.spec import RunSpec, Schedule, Teacher, TeacherRun
from kdbench.vocab import State
from runners import attempt

OWN_CHECKPOINT_SCHEME = "kdbench-own://"
KEEP_CHECKPOINTS = 2  # the last and the one before: a corrupt last checkpoint falls back to it


def world() -> tuple[int, int]:
    """(rank, world size) of this process: several only for multi-GPU SLURM jobs, one task per GPU
    (the SLURM executor sets KDBENCH_LAUNCHER=slurm there, and mmengine initialises the process group)."""
    if os.environ.get("KDBENCH_LAUNCHER") == "slurm":
        return int(os.environ.get("SLURM_PROCID", 0)), int(os.environ.get("SLURM_NTASKS", 1))
    return 0, 1


def _init_cpu_ranks() -> None:
    """The process group of a multi-task SLURM job on CPUs (gloo), from SLURM's variables:
    mmengine's slurm launcher would call torch.cuda.set_device first. The rendezvous is at the
    MASTER_ADDR the job was given (its first node, when it has several), else on this host."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    rank, size = world()
    os.environ.update(MASTER_ADDR=os.environ.get("MASTER_ADDR", "127.0.0.1"),
                      MASTER_PORT=os.environ.get("MASTER_PORT", "29500"), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=os.environ.get("SLURM_LOCALID", str(rank)))
    dist.init_process_group("gloo", rank=rank, world_size=size)


def default_out(run: RunSpec) -> Path:
    """``results/runs/<name>-<run id>``, the name's characters other than letters, digits, '_',
    '-' and '.' replaced by '_' (a name is free text: '/' must not leave the folder)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run.name).lstrip(".") or "run"
    return Path("results") / "runs" / f"{safe}-{run_id(run)}"


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
        "python": platform.python_version(), "torch": torch.__version__, "mmcv": mmcv.__version__,
        "mmengine": mmengine.__version__, "mmseg": mmseg.__version__, "mmdet": mmdet.__version__,
        "git_sha": sha, "device": device,
        "device_name": (torch.cuda.get_device_name(0) if device == "cuda"
                        else platform.processor() or platform.machine()),
        "hostname": platform.node(),
        **cpu_numerics(),
    }


def _cpu_model() -> str | None:
    """The CPU's model name (/proc/cpuinfo; ``platform.processor()`` is empty on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle.read(1 << 20).splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


@functools.cache  # oneDNN says its ISA once per process, at the first verbose primitive
def _onednn_isa() -> str | None:
    """The instruction set oneDNN (PyTorch's CPU convolutions) dispatches to in this process, as
    oneDNN names it ("Intel AVX-512 with Intel DL Boost and bfloat16 support"): it follows the
    CPU, capped by ONEDNN_MAX_CPU_ISA. Read from oneDNN's own verbose line, printed to the
    process's stdout, which is captured here for one small convolution."""
    import tempfile

    import torch

    if not torch.backends.mkldnn.is_available():
        return None
    with tempfile.TemporaryFile() as captured:
        sys_stdout = os.dup(1)
        try:
            os.dup2(captured.fileno(), 1)
            with torch.no_grad(), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                torch.nn.functional.conv2d(torch.ones(2, 32, 32, 32), torch.ones(32, 32, 3, 3))
        finally:
            os.dup2(sys_stdout, 1)
            os.close(sys_stdout)
        captured.seek(0)
        said = captured.read(1 << 16).decode(errors="replace")
    return next((line.split(",isa:", 1)[1].strip() for line in said.splitlines() if ",isa:" in line), None)


def cpu_numerics() -> dict:
    """What decides a CPU run's floating-point results beside the spec, the threads and the
    versions: the CPU model, the instruction set PyTorch's own kernels dispatch to (ATen's CPU
    capability) and the one oneDNN's convolutions dispatch to (docs/reproducibility.md: measured,
    the oneDNN ISA alone changes a training run's weights; ATen's capability and MKL's did not)."""
    import torch

    return {"cpu_model": _cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_isa": _onednn_isa()}


# The env.json keys whose change between a run's attempts (a resume on another node) can change its numbers.
ATTEMPT_KEYS = ("hostname", "device", "device_name", "cpu_model", "cpu_capability", "onednn_isa", "torch", "threads")


def attempt_environment(out: Path, env: dict) -> dict:
    """``env`` with the run's earlier attempts (``earlier_attempts``: each one's ATTEMPT_KEYS, oldest
    first) carried over from the env.json an earlier attempt left in ``out``, so a run resumed under
    other numerics says so."""
    earlier = store.read_json(out / store.ENV, out.parent)
    if not isinstance(earlier, dict):
        return env
    history = [a for a in earlier.get("earlier_attempts") or [] if isinstance(a, dict)]
    return {**env, "earlier_attempts": [*history, {key: earlier.get(key) for key in ATTEMPT_KEYS}]}


DETERMINISTIC_CUBLAS = ":4096:8"  # the workspace cuBLAS needs for reproducible results (CUDA docs)


def configure_numerics(run: RunSpec) -> dict:
    """Every setting that changes a run's floating-point results, set from its spec, never left to
    the machine or the launcher: the CPU threads (``threads``; 1 when a run file names none),
    PyTorch's deterministic algorithms with cuDNN's deterministic mode and cuBLAS's fixed workspace
    (``schedule.deterministic``), cuDNN's autotuner off, float32 matmuls at full precision, cuDNN's
    TF32 convolutions at PyTorch's default (on). Returns them, for env.json.

    With ``deterministic``, an operation PyTorch has no deterministic kernel for (on CUDA: the
    backward of bilinear upsampling, which mmseg's heads use) warns instead of failing, and mmcv's
    own CUDA ops are outside PyTorch's control: those stay non-deterministic (docs/reproducibility.md)."""
    import torch

    threads, deterministic = run.threads or 1, run.schedule.deterministic
    torch.set_num_threads(threads)
    if deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = DETERMINISTIC_CUBLAS  # read when cuBLAS starts
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("highest")
    return {"threads": threads, "deterministic": deterministic, "cudnn_deterministic": deterministic,
            "cudnn_benchmark": False, "cudnn_allow_tf32": True, "matmul_precision": "highest",
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"), "precision": run.schedule.precision}


# -- resuming ---------------------------------------------------------------------------------
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


def _iteration(path: Path) -> int:
    match = re.fullmatch(r"iter_(\d+)\.pth", path.name)
    return int(match.group(1)) if match else -1


def _loads(path: Path) -> bool:
    """Whether a checkpoint of this run loads whole (a truncated or corrupt file does not)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        return False
    return isinstance(state, dict) and "state_dict" in state


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The newest of the run's checkpoints that loads, or None (start from scratch)."""
    candidates = sorted(run_dir.glob("iter_*.pth"), key=_iteration, reverse=True)
    return next((path for path in candidates if _loads(path)), None)


# -- the model ----------------------------------------------------------------------------------
def _device(run: RunSpec) -> str:
    import torch

    if run.device == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda requested but no GPU is visible")
    return "cuda" if run.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"


def _teacher_checkpoint(teacher: Teacher) -> tuple[str, bool]:
    if isinstance(teacher.checkpoint, TeacherRun):
        from runners.teacher_run import teacher_run_checkpoint

        # Written by kdbench itself as a plain state dict: safe with weights_only=True.
        return teacher_run_checkpoint(teacher.checkpoint.run, "teacher.checkpoint"), False
    from runners.weights import checkpoint_file

    # A URL is read from the weights cache (fetched and verified there), never downloaded by torch.hub.
    return checkpoint_file(teacher.checkpoint, teacher.sha256, "teacher.checkpoint"), teacher.trusted


def input_size_overrides(run: RunSpec) -> dict:
    """mmseg stacks a training batch at a fixed size: the size the data pipeline crops to."""
    from runners.datasets import training_size

    return {"model.data_preprocessor.size": training_size(run)} if run.task == "seg" else {}


def _load(run: RunSpec, role: str, init: bool = True):
    from runners.build import build_model, load_config

    model = run.teacher if role == "teacher" else run.student
    cfg = load_config(model.config, {**input_size_overrides(run), **model.overrides}, f"{role}.config")
    if init:  # its pretrained weights from the weights cache: mmengine never downloads them
        from runners.weights import localize

        localize(cfg.model, f"{role}.config")
    return build_model(cfg, run.task, init=init)


def _check_same_preprocessing(student, teacher) -> None:
    import torch

    s, t = student.data_preprocessor, teacher.data_preprocessor
    for attr in ("mean", "std"):
        a, b = getattr(s, attr, None), getattr(t, attr, None)
        if a is not None and b is not None and not torch.equal(a, b):
            raise UserError(f"teacher and student configs normalise images differently ({attr}: "
                            f"{a.flatten().tolist()} vs {b.flatten().tolist()}); the teacher sees the student's inputs")


def build_trained_model(run: RunSpec, data: dict):
    """What the Runner trains: the teacher alone for a teacher run, else a DistillModel around the
    student (and the teacher with its weights, when the run distils)."""
    from mmengine.runner import Runner

    from runners.build import load_weights
    from runners.distill import KD_WATCH_STEPS, DistillModel

    # The student first, right after the seed is set: a distilled student starts from the same
    # weights as its baseline with that seed (the teacher's construction draws random numbers too).
    student = _load(run, "student") if run.role == "student" else None
    teacher = None
    if run.role == "teacher" or run.distill:
        # A teacher with a checkpoint is not initialised first: every weight is overwritten, and its
        # config's ImageNet init (a download on clusters) would be wasted.
        teacher = _load(run, "teacher", init=run.teacher.checkpoint is None)
        if run.teacher.checkpoint is not None:  # always set for distillation (validated)
            load_weights(teacher, *_teacher_checkpoint(run.teacher), where="teacher.checkpoint")
    if run.role == "teacher":
        return DistillModel(teacher, None, (), probe=None)
    if run.student.init_from_teacher:  # e.g. MGD's neck and head (validated: the run has a loaded teacher)
        from runners.build import copy_parts

        copy_parts(student, teacher, run.student.init_from_teacher, "student.init_from_teacher")
    if teacher is not None:
        _check_same_preprocessing(student, teacher)

    def probe():
        """One preprocessed training image, to check locations and shapes before training."""
        loader = Runner.build_dataloader({**data["train_dataloader"], "batch_size": 1, "num_workers": 0},
                                         seed=run.seed)
        processed = student.data_preprocessor(next(iter(loader)), training=False)
        return processed["inputs"], processed["data_samples"]

    return DistillModel(student, teacher, run.distill, probe=probe,
                        watch_steps=min(KD_WATCH_STEPS, run.schedule.iterations),
                        teacher_mode=run.teacher.mode if run.teacher else "eval",
                        teacher_forward=run.teacher.forward if run.teacher else "full")


# -- the Runner ---------------------------------------------------------------------------------
def optim_config(schedule: Schedule) -> tuple[dict, list]:
    """mmengine's optimizer wrapper and parameter schedulers for a schedule."""
    if schedule.optimizer == "sgd":
        optimizer = {"type": "SGD", "lr": schedule.lr, "momentum": schedule.momentum,
                     "weight_decay": schedule.weight_decay}
    else:
        optimizer = {"type": "AdamW", "lr": schedule.lr, "weight_decay": schedule.weight_decay}
    iters, warmup = max(schedule.iterations, 1), schedule.warmup_iters
    schedulers = []
    if warmup:
        schedulers.append({"type": "LinearLR", "start_factor": 0.001, "by_epoch": False, "begin": 0, "end": warmup})
    if schedule.lr_schedule == "poly":
        schedulers.append({"type": "PolyLR", "eta_min": schedule.min_lr, "power": 0.9, "begin": warmup,
                           "end": iters, "by_epoch": False})
    elif schedule.lr_schedule == "step":  # x0.1 at 2/3 and 11/12 of training (the 1x schedule's 8/12, 11/12)
        schedulers.append({"type": "MultiStepLR", "milestones": [iters * 2 // 3, iters * 11 // 12],
                           "gamma": 0.1, "by_epoch": False, "begin": 0, "end": iters})
    clip = None if schedule.grad_clip is None else {"max_norm": schedule.grad_clip, "norm_type": 2}
    return {"type": "OptimWrapper", "optimizer": optimizer, "clip_grad": clip}, schedulers


def default_hooks(schedule: Schedule) -> dict:
    """mmengine's default hooks for a schedule: logging, the lr schedule, checkpoints (the last two
    kept, by iteration), the sampler's seed."""
    return {
        "timer": {"type": "IterTimerHook"},
        "logger": {"type": "LoggerHook", "interval": max(1, min(10, schedule.iterations)),
                   "log_metric_by_epoch": False},
        "param_scheduler": {"type": "ParamSchedulerHook"},
        "checkpoint": {"type": "CheckpointHook", "by_epoch": False, "interval": checkpoint_interval(schedule),
                       "max_keep_ckpts": KEEP_CHECKPOINTS, "save_last": True},
        "sampler_seed": {"type": "DistSamplerSeedHook"},
    }


def _training_arguments(schedule: Schedule, model, data: dict, resume: Path | None, device: str) -> dict:
    """The Runner's training arguments (none for an evaluation-only run)."""
    from runners.precision import optim_wrapper_type

    if schedule.iterations == 0:
        return {}
    optim_wrapper, schedulers = optim_config(schedule)
    optim_wrapper.update(optim_wrapper_type(schedule.precision, device))  # autocast: runners/precision.py
    own = model.frozen_in_student_optimizer()
    if own:  # lr and decay x0: the student's optimizer never moves e.g. HO's discriminator
        optim_wrapper["paramwise_cfg"] = {"custom_keys": {k: {"lr_mult": 0.0, "decay_mult": 0.0} for k in own}}
    return {
        "train_dataloader": data["train_dataloader"],
        "train_cfg": {"type": "IterBasedTrainLoop", "max_iters": schedule.iterations,
                      "val_interval": schedule.val_interval or schedule.iterations},
        "optim_wrapper": optim_wrapper, "param_scheduler": schedulers or None,
        "resume": resume is not None,
        "load_from": f"{OWN_CHECKPOINT_SCHEME}{resume}" if resume is not None else None,
    }


@dataclass
class Session:
    """One attempt at a run: where it writes, how it runs, and what watches it."""

    run: RunSpec
    out: Path
    device: str
    launcher: str                   # none | slurm (several tasks of one job)
    rank: int
    world_size: int
    resume: Path | None             # the checkpoint this attempt resumes from


def build_runner(session: Session, model, data: dict, hooks: list):
    """mmengine's Runner for the session: hooks, checkpoints, seed, scope, launcher."""
    from mmengine.runner import Runner

    from runners.build import register_scope
    from runners.tracking import visualizer_config

    schedule = session.run.schedule
    cpu_ranks = session.launcher == "slurm" and session.device == "cpu"
    return Runner(
        model=model, work_dir=str(session.out),
        val_dataloader=data["val_dataloader"], val_cfg={"type": "ValLoop"}, val_evaluator=data["val_evaluator"],
        default_hooks=default_hooks(schedule),
        custom_hooks=hooks, randomness={"seed": session.run.seed}, default_scope=register_scope(session.run.task),
        launcher=session.launcher,
        # GPUs: NCCL through mmengine's launcher; CPU-only multi-task jobs joined gloo before
        env_cfg={"cudnn_benchmark": False, "dist_cfg": {"backend": "nccl"}},
        # DDP of a CPU module takes no device ids (mmengine's default names the local GPU)
        cfg=({"model_wrapper_cfg": {"type": "MMDistributedDataParallel", "device_ids": None,
                                    "broadcast_buffers": False}} if cpu_ranks else None),
        log_processor={"by_epoch": False}, experiment_name=session.run.name,
        visualizer=visualizer_config(session.run, session.out, session.rank),  # curves: runners/tracking.py
        **_training_arguments(schedule, model, data, session.resume, session.device),
    )


# -- one attempt ----------------------------------------------------------------------------------
def _start(run: RunSpec, out: Path) -> Session:
    """The attempt's environment: device, process group, env.json, the checkpoint to resume from."""
    device = _device(run)
    rank, size = world()
    launcher = os.environ.get("KDBENCH_LAUNCHER", "none")
    if launcher == "slurm" and device == "cpu":  # several tasks on CPUs: the local test cluster
        _init_cpu_ranks()
    if run.schedule.batch_size % size:
        raise UserError(f"schedule.batch_size {run.schedule.batch_size} is not divisible by the "
                        f"{size} GPUs of this job (the batch size is global: images per iteration)")
    numerics = configure_numerics(run)
    if rank == 0:
        attempt.claim(out)   # this attempt is the run's current one: an older one still running stops at its next write
        store.write_json_atomic(out / store.ENV, attempt_environment(out, {**_environment(device), **numerics}))
    resume = resume_checkpoint(out) if run.schedule.iterations > 0 else None
    if resume is not None:
        _register_own_checkpoint_loader(out)
    return Session(run, out, device, launcher, rank, size, resume)


def train_and_evaluate(run: RunSpec, out: Path, hooks: tuple = ()) -> dict:
    """One attempt: build, train (resumed where a checkpoint loads), evaluate, write final.json.
    ``hooks``: more mmengine hooks for the Runner (a test watches the state a resume restored)."""
    from mmengine.runner import set_random_seed

    from runners import metrics  # noqa: F401  (registers KDIoUMetric / KDCocoMetric)
    from runners.build import register_scope
    from runners.data import holdout  # noqa: F401  (registers HeldOutSplit, for a held-out split)
    from runners.datasets import dataset_configs
    from runners.distill import DivergedError
    from runners.hooks import AttemptHook, CostHook, MetricsHook, RandomStateHook

    session = _start(run, out)
    register_scope(run.task)
    data = dataset_configs(run)
    data["train_dataloader"]["batch_size"] //= session.world_size  # per process
    set_random_seed(run.seed)
    model = build_trained_model(run, data)
    model.to(session.device)
    metrics_hook, cost_hook = MetricsHook(out / store.METRICS), CostHook()
    hooks = (AttemptHook(out, checkpoint_interval(run.schedule)), *hooks)
    # Evaluations recorded after the checkpoint this attempt starts from are made again: dropped.
    metrics_hook.resume_from(_iteration(session.resume) if session.resume else 0, rewrite=session.rank == 0)
    runner = build_runner(session, model, data, [metrics_hook, cost_hook, RandomStateHook(), *hooks])
    started = time.time()
    try:
        if run.schedule.iterations > 0:
            runner.train()  # a resume makes an evaluation its kill missed (MetricsHook.before_train)
        else:
            runner.val()
    except DivergedError as error:
        error.step = cost_hook.current_iter + 1
        raise
    if session.rank != 0:  # other ranks of a multi-GPU run train; rank 0 alone writes results
        return {"status": "complete", "rank": session.rank}
    return _finish(session, getattr(model, "module", model).student, metrics_hook, cost_hook, started)


def _finish(session: Session, trained, metrics_hook, cost_hook, started: float) -> dict:
    """The trained weights and final.json, each written whole or not at all."""
    from runners.data.layout import run_record
    from runners.distill import DivergedError
    from runners.recipe import recipe
    from runners.selection import selection

    attempt.check(session.out, "model_final.pth")
    _save_atomic(trained.state_dict(), session.out / "model_final.pth")
    run = session.run
    final_metrics, selected = selection(run.schedule.select, run.task, metrics_hook.last,
                                        store.read_jsonl(session.out / store.METRICS))
    record = {
        "status": "complete", "run_id": run_id(run), "name": run.name, "role": run.role, "task": run.task,
        "iterations": run.schedule.iterations, "metrics": final_metrics,
        "cost": {**cost_hook.summary(), "wall_seconds_this_attempt": time.time() - started},
        "checkpoint": "model_final.pth",
        "resumed_from": session.resume.name if session.resume is not None else None,
        "data": run_record(run.dataset.name, run.dataset.root),  # the splits found: a partial one is marked
        "terms": term_records(run),  # what a report needs from the losses, so that it imports no plugin
        "attempt": attempt.token(),  # which attempt wrote it (runners.attempt)
    }
    if selected is not None:  # the last and the best evaluation, whichever schedule.select reports
        record["selection"] = selected
        if store.PER_CLASS in selected[selected["select"]]:  # each class's values of the reported evaluation
            record[store.PER_CLASS] = selected[selected["select"]][store.PER_CLASS]
    nodes = int(os.environ.get("SLURM_NNODES", 1)) if session.launcher == "slurm" else 1
    record["recipe"] = recipe(run, session.world_size, nodes, session.device, record["data"])
    if not final_metrics or not all(store.is_finite_number(v) for v in final_metrics.values()):
        raise DivergedError("val metrics", final_metrics)
    if run.role == "teacher" and run.teacher.expect is not None:  # the teacher gate
        record["teacher_check"] = store.teacher_check(final_metrics, vars(run.teacher.expect))
    attempt.check(session.out, store.FINAL)
    store.write_json_atomic(session.out / store.FINAL, record)
    return record


def checkpoint_interval(schedule: Schedule) -> int:
    """The schedule's checkpoint interval, at most its iterations: a run shorter than the default
    interval checkpoints at its last iteration (an interval given beyond it is refused at plan)."""
    return max(1, min(schedule.checkpoint_interval, schedule.iterations))


def term_records(run: RunSpec) -> list[dict]:
    """Each distill term's name, method and what its loss distils (``LossParams.distils``), as the
    loss's declaration says now: a report reads it from final.json and imports no plugin code."""
    from kdbench.losses import registry

    def distils(term) -> str | None:
        try:
            return registry.check_params(term.method, dict(term.params)).distils()
        except UserError:
            return None

    return [{"name": term.name, "method": term.method, "distils": distils(term)} for term in run.distill]


def _save_atomic(state: dict, path: Path) -> None:
    """torch.save, written atomically: a full disk never leaves a truncated weights file."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    store.write_bytes_atomic(path, buffer.getvalue())


# -- the result of an attempt ---------------------------------------------------------------------
def execute(run: RunSpec, out_dir: str | Path, preempted: Callable[[], bool] = lambda: False) -> dict:
    """Run ``run`` into ``out_dir``; return the final record, or raise after writing error.json.
    ``preempted()`` is True once the scheduler has asked the job to checkpoint: an error from then
    on is the job being requeued, not a failure, and is not recorded."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if world()[0] != 0:  # other ranks of a multi-GPU run train; rank 0 alone writes results
        return train_and_evaluate(run, out)
    recorded, identity = store.read_json(out / store.SPEC), run_id(run)
    if recorded is not None and recorded.get("run_id") != identity:
        raise UserError(f"{out}: this directory holds results of a different run (id "
                        f"{recorded.get('run_id')}, not {identity}); choose another --out")
    if store.run_state(out) == State.COMPLETE:
        return store.read_json(out / store.FINAL)
    store.write_json_atomic(out / store.SPEC, {**run.to_dict(), "run_id": identity})
    if (out / store.ERROR).exists():  # a retry: the old error stays beside, renamed
        os.replace(out / store.ERROR, out / f"error.previous.{int(time.time())}.json")
    try:
        return train_and_evaluate(run, out)
    except attempt.StaleAttempt:
        raise  # superseded: the newer attempt owns the run's files, this one writes nothing more
    except UserError as error:
        # Found by the run's own probe (a location not in the model, a missing checkpoint):
        # recorded, so the store shows a failed run rather than one that started and vanished.
        _record_error(out, {"status": "failed", "error": str(error), "user_error": True})
        raise
    except BaseException as error:
        if preempted() or isinstance(error, KeyboardInterrupt):
            raise  # SLURM is requeueing this job: it resumes from its last checkpoint
        _record_error(out, _error_record(error))
        raise


def _error_record(error: BaseException) -> dict:
    from runners.distill import DivergedError, KDInactiveError

    if isinstance(error, DivergedError):
        return {"status": "diverged", "step": getattr(error, "step", None), "key": error.key,
                "value": str(error.value), "message": f"{error.key} became {error.value}"}
    if isinstance(error, KDInactiveError):
        return {"status": "kd_inactive", "term": error.term, "reason": error.reason, "message": str(error)}
    return {"status": "failed", "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}


def _record_error(out: Path, record: dict) -> None:
    """Write error.json if the disk lets us: a full disk or a read-only file system must not hide
    the error that stopped the run (often that same disk) behind a second one."""
    try:
        attempt.check(out, store.ERROR)
        store.write_json_atomic(out / store.ERROR, record)
    except (OSError, attempt.StaleAttempt):
        pass
