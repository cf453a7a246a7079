"""Tiny studies for the launcher tests, written into a temporary directory (``gate_study``: one
whose distilled run waits at a gate the test opens, tests/plugins/gate_kd.py), ``wait_until`` for
what the executors do in the background, and ``run_cli``: the command line run in-process, its
output captured."""

import contextlib
import io
import json
import time
from pathlib import Path

import yaml

from kdbench import store
from kdbench.cli import main
from runners.launch.slurm import slurm_jobs

GATE_PLUGIN = Path(__file__).resolve().parent / "plugins" / "gate_kd.py"

TINY_BASE = {
    "task": "seg",
    "teacher": {"config": "tiny_seg_teacher"},
    "student": {"config": "tiny_seg_student"},
    "dataset": {"name": "fashion_scenes", "params": {"num_train": 12, "num_val": 4, "size": 64, "seed": 1}},
    "schedule": {"iterations": 4, "batch_size": 2, "checkpoint_interval": 2},
}
CWD = {"method": "cwd", "params": {"tau": 4.0}, "weight": 3.0, "student_location": "decode_head.conv_seg"}


class _NoAliases(yaml.SafeDumper):
    """PyYAML writes an object met twice as an anchor and aliases, which kdbench refuses in a spec."""

    def ignore_aliases(self, data) -> bool:
        return True


def dump_yaml(data) -> str:
    """``data`` as YAML without anchors or aliases: every value written out."""
    return yaml.dump(data, Dumper=_NoAliases)


def write_study(directory: Path, name: str, methods=None, seeds=(0,), **extra) -> Path:
    spec = {"name": name, "base": TINY_BASE, "methods": {"cwd_logits": CWD} if methods is None else methods,
            "seeds": list(seeds), "resources": {"gpus": 0, "cpus": 1, "mem_gb": 2, "time_min": 30}, **extra}
    path = directory / f"{name}.yaml"
    path.write_text(dump_yaml(spec))
    return path


def gate_study(directory: Path, name: str, release: Path, hold_at: int = 2) -> Path:
    """A teacher and one distilled run, ``gate_s0``, of 2 * ``hold_at`` iterations with a checkpoint
    every ``hold_at``: it trains up to its first checkpoint, then waits until ``release`` exists
    (having written ``<release>.waiting``, its pid inside)."""
    gate = {"method": "gate", "params": {"release": str(release), "hold_at": hold_at}, "weight": 1.0,
            "student_location": "decode_head.conv_seg"}
    path = write_study(directory, name, methods={"gate": gate}, baselines={"teacher": True, "student": False},
                       plugins=[str(GATE_PLUGIN)])
    spec = yaml.safe_load(path.read_text())
    spec["base"]["schedule"].update(iterations=2 * hold_at, checkpoint_interval=hold_at)
    path.write_text(dump_yaml(spec))
    return path


def wait_until(condition, timeout=240, what="condition", poll=0.5):
    """Poll ``condition`` until it holds; an AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def settled(study) -> bool:
    """Every run of ``study`` has ended: none is running, missing or interrupted."""
    from runners.launch.jobs import status

    return all(r.state not in ("pending", "running", "missing", "interrupted") for r in status(study))


def run_cli(*args) -> tuple[int, str, str]:
    """``kdbench <args>`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def outcome(run_dir: Path) -> dict:
    """What a run computed: each evaluation (metrics.jsonl), its final metrics, every value mmengine
    logged in training (losses, accuracy, learning rate; not the timings) and its thread count."""
    logged = [{k: v for k, v in json.loads(line).items() if k not in ("time", "data_time")}
              for scalars in sorted(run_dir.glob("*/vis_data/scalars.json"))
              for line in scalars.read_text().splitlines()]
    return {"metrics": store.read_jsonl(run_dir / "metrics.jsonl"),
            "final": store.read_json(run_dir / "final.json")["metrics"],
            "logged": logged, "threads": store.read_json(run_dir / "env.json")["threads"]}


def same_weights(first: Path, second: Path) -> bool:
    import torch

    a, b = torch.load(first, weights_only=True), torch.load(second, weights_only=True)
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """The scheduler's state of each job id (squeue, then sacct); unknown ids are left out."""
    return {job: state for job, (state, _) in slurm_jobs(job_ids).items()}
