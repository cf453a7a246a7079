"""mmengine hooks that turn a training run into kdbench's result files."""

from __future__ import annotations

import os
import resource
import statistics
import time
from pathlib import Path

import torch
from mmengine.hooks import Hook

from kdbench import store
from kdbench.store import PER_CLASS
from runners import attempt, contention


def metric_key(name: str) -> str:
    """mmseg's ``mIoU`` -> ``val/mIoU``; mmdet's ``coco/bbox_mAP`` -> ``val/bbox_mAP``."""
    return "val/" + name.split("/")[-1]


def evaluation_due(loop, iteration: int) -> bool:
    """Whether mmengine's IterBasedTrainLoop evaluates after ``iteration`` (its own condition)."""
    return iteration >= loop.val_begin and (iteration % loop.val_interval == 0 or iteration == loop.max_iters)


class MetricsHook(Hook):
    """Appends one JSON object per evaluation to ``metrics.jsonl``: iteration and raw metrics, and
    ``per_class`` (each class's values by name) where the metric gives them."""

    priority = "LOW"

    def __init__(self, path):
        self.path = path
        self.last: dict | None = None

    def resume_from(self, iteration: int, rewrite: bool = True) -> None:
        """The run resumes from its checkpoint at ``iteration``. Evaluations recorded after it
        are dropped (the resumed run makes them again) and one recorded at it becomes the latest
        (it is not made again), so no evaluation is ever recorded twice. ``rewrite``: rewrite the
        file (the main process only); every process reads it."""
        lines = store.read_jsonl(self.path)
        by_iter: dict[int, dict] = {}
        for line in lines:
            if isinstance(line.get("iter"), int) and line["iter"] <= iteration:
                by_iter[line["iter"]] = line
        kept = [by_iter[i] for i in sorted(by_iter)]
        if rewrite and kept != lines:
            attempt.check(self.path.parent, self.path.name)
            store.write_jsonl_atomic(self.path, kept)
        self.last = by_iter.get(iteration)

    def before_train(self, runner) -> None:
        if runner.iter:  # resumed: mmengine has restored the checkpoint's iteration by now
            from mmengine.dist import is_main_process

            self.resume_from(int(runner.iter), rewrite=is_main_process())
            if self.last is None and evaluation_due(runner.train_loop, int(runner.iter)):
                # Killed between the checkpoint and its evaluation (mmengine saves first): the
                # resumed loop goes on to the next one, so this one is made now, or never.
                runner.val_loop.run()

    def after_val_epoch(self, runner, metrics=None) -> None:
        if not metrics:
            return
        from mmengine.dist import is_main_process

        values = {metric_key(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        self.last = {"iter": int(runner.iter), **values}
        classes = next((v for k, v in metrics.items() if k.split("/")[-1] == PER_CLASS and isinstance(v, dict)), None)
        if classes is not None:  # each class's values by name (runners.metrics.class_values), beside the metrics
            self.last[PER_CLASS] = classes
        if is_main_process():
            attempt.check(self.path.parent, self.path.name)
            store.append_jsonl(self.path, self.last)


class AttemptHook(Hook):
    """After an iteration that ends with a checkpoint, before mmengine's CheckpointHook saves it (it
    runs last), the main process checks that its attempt is still the run's current one
    (runners.attempt): a step that was stopped while SLURM requeued its job elsewhere stops there,
    without saving. Iterations in between write nothing, so they are not checked (no file read in
    the training loop's other steps); evaluations are checked where they are written (MetricsHook)."""

    priority = "HIGH"

    def __init__(self, out, interval: int):
        self.out, self.interval = out, interval

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        from mmengine.dist import is_main_process

        done = runner.iter + 1
        if (done % self.interval == 0 or done == runner.max_iters) and is_main_process():
            attempt.check(self.out, f"the checkpoint after iteration {done}")
def process_age() -> float | None:
    """Seconds since this process started (Linux's /proc), or None where that is not known."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")          # field 22: start time after boot
        return max(0.0, float(Path("/proc/uptime").read_text().split()[0]) - started)
    except (OSError, ValueError, IndexError):
        return None


class CostHook(Hook):
    """Seconds per iteration (median after two warm-up iterations), peak memory, and the shares
    of the step spent in the teacher's forward (``teacher_share``) and in the KD terms, forward
    and backward, adapters and a term's own optimizer step included (``kd_share``)."""

    priority = "VERY_LOW"

    def __init__(self):
        self.step_seconds: list[float] = []
        self.loads: list[float] = []        # the load average while the run trained (runners.contention)
        self._next_load = 0.0               # when to read it next (perf_counter seconds)
        self.parts: list[dict[str, float]] = []
        self._start = 0.0
        self.current_iter = 0
        self.startup: float | None = None   # seconds from the process's start to the run's first hook
        self._val_start = 0.0
        self.evaluation_seconds, self.evaluations = 0.0, 0

    def _model(self, runner):
        model = runner.model
        return getattr(model, "module", model)

    def _sync(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def before_run(self, runner) -> None:
        self.startup = process_age()   # the process's start-up: imports, building the models and the data

    def before_val_epoch(self, runner) -> None:
        self._val_start = time.perf_counter()

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.evaluation_seconds += time.perf_counter() - self._val_start
        self.evaluations += 1

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.current_iter = int(runner.iter)
        self._sync()
        clock = getattr(self._model(runner), "clock", None)
        if clock is not None:
            clock.reset()
        self._start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._sync()
        now = time.perf_counter()
        self.step_seconds.append(now - self._start)
        if now >= self._next_load:  # the kernel updates it every 5 s: reading it each step repeats it
            self._next_load = now + contention.LOAD_PERIOD_S
            load = contention.load_now()
            if load is not None:
                self.loads.append(load)
        clock = getattr(self._model(runner), "clock", None)
        self.parts.append(clock.parts() if clock is not None else {})

    def summary(self) -> dict:
        steps = self.step_seconds[2:] if len(self.step_seconds) > 4 else self.step_seconds
        parts = self.parts[-len(steps):] if steps else []
        total = sum(steps)

        def share(*names: str) -> float | None:
            return sum(p.get(n, 0.0) for p in parts for n in names) / total if total > 0 else None

        if torch.cuda.is_available():
            peak_mb, kind = torch.cuda.max_memory_allocated() / 2**20, "cuda_max_allocated"
        else:
            peak_mb, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_max_rss"
        return {
            "seconds_per_iter": statistics.median(steps) if steps else None,
            "teacher_share": share("teacher"),
            "kd_share": share("kd_forward", "kd_backward"),
            "peak_memory_mb": peak_mb,
            "peak_memory_kind": kind,
            "iterations_timed": len(steps),
            "startup_seconds": self.startup, "evaluation_seconds": self.evaluation_seconds,
            "evaluations": self.evaluations,   # for plan --estimate (kdbench.estimate)
            **contention.record(self.loads, torch.get_num_threads()),
        }


class RandomStateHook(Hook):
    """Saves the random generators' states (Python's, NumPy's, torch's on the CPU and on each GPU)
    in every checkpoint, and brings them back when a run resumes, so that the iterations after a
    resume draw the same random numbers as an uninterrupted run (a loss's random sampling, dropout,
    the data pipeline's crops and flips in the main process).

    mmengine seeds a resumed run afresh and then advances its data loader past the batches trained
    before the checkpoint, which runs the pipeline on them again; the saved states were taken after
    the checkpoint's iteration, before the next batch was fetched. So they are set back just before
    the resumed loop fetches its first new batch, after that replay. The states come from the
    process that saves (rank 0): they are restored in a single-process run only."""

    KEY = "random_states"

    def __init__(self):
        self.saved: dict | None = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[self.KEY] = random_states()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self.saved = checkpoint.get(self.KEY)

    def before_train(self, runner) -> None:
        from mmengine.dist import get_world_size

        loop = runner.train_loop
        if self.saved is None or not loop.iter or get_world_size() > 1:
            return
        loop.dataloader_iterator = _RestoreAfter(loop, loop.iter, self.saved)
        self.saved = None


class _RestoreAfter:
    """The training loop's batch iterator, which sets the random generators to ``states`` after
    ``skipped`` batches (the ones mmengine replays on a resume), then gives the loop back its own."""

    def __init__(self, loop, skipped: int, states: dict):
        self.loop, self.inner, self.skipped, self.states = loop, loop.dataloader_iterator, skipped, states

    def __iter__(self):
        return self

    def __next__(self):
        if self.skipped:
            self.skipped -= 1
            return next(self.inner)
        set_random_states(self.states)
        self.loop.dataloader_iterator = self.inner
        return next(self.inner)


def random_states() -> dict:
    """The states of Python's, NumPy's and torch's global generators (torch's GPUs' when present)."""
    import random

    import numpy as np

    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict) -> None:
    """The global generators set back to ``states`` (``random_states``); the GPUs' only where the
    states were saved with as many GPUs as there are now."""
    import random

    import numpy as np

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"].cpu())
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([state.cpu() for state in cuda])
