"""Faults a run survives, as real processes: ``kdbench run`` killed with SIGKILL mid-training, then
run again. The rerun resumes from the newest checkpoint that loads (a truncated or garbage last one
is passed over for the one before it; with none left it starts afresh), ends with one result,
records each evaluation once, and brings back what its checkpoint holds: a distilled run's adapters
with their optimizer state, HO's critic with its Adam state.

Every killed run carries the test plugin's ``gate`` term (tests/plugins/gate_kd.py): from the
iteration after the checkpoint the test wants, training waits for a file only the test creates.
The kill lands while the run waits there, a point it cannot pass by itself, so a loaded machine
cannot let it run past (no timing window); the test then opens the gate for the rerun. The
deadlines are generous because a loaded 2-core machine is slow, not wrong."""

import copy
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kdbench import store
from kdbench.spec import parse_run
from tests.launch_helpers import process_alive, wait_until
from tests.run_fixtures import ROOT, cwd_terms, execute, seg_run, teacher_of

pytestmark = pytest.mark.slow

DEADLINE_S = 600
GATE = ROOT / "tests" / "plugins" / "gate_kd.py"
# Killed at its second checkpoint (iteration 4), held there by its gate.
SCHEDULE = {"iterations": 8, "batch_size": 2, "checkpoint_interval": 2, "val_interval": 2}
EVALUATIONS = list(range(2, 9, 2))
# A distilled run is killed at its first checkpoint (iteration 2).
DISTILLED = {"iterations": 12, "batch_size": 2, "checkpoint_interval": 2, "val_interval": 4}


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path_factory.getbasetemp() / "data"))


def iteration(path: Path) -> int:
    match = re.search(r"iter_(\d+)\.pth$", str(path).strip())
    return int(match.group(1)) if match else -1


def checkpoints(out: Path) -> list[Path]:
    """The run's checkpoint files, oldest first."""
    return sorted(out.glob("iter_*.pth"), key=iteration)


def write_run_file(run: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.json"
    path.write_text(json.dumps(run))
    return path


def kdbench_run(run_file: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "kdbench.cli", "run", str(run_file), "--out", str(out)]


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def gated(run: dict, teacher_dir: Path, release: Path, at: int) -> dict:
    """``run`` with a ``gate`` term that holds training from iteration ``at`` (after its checkpoint
    there) until ``release`` exists; a student without a teacher gets ``teacher_dir``'s."""
    gate = {"name": "gate", "method": "gate", "params": {"release": str(release), "hold_at": at},
            "student_location": "decode_head.conv_seg"}
    return {**run, "plugins": [str(GATE)], "teacher": run.get("teacher") or teacher_of(teacher_dir),
            "distill": [*run.get("distill", []), gate]}


def kill_at_checkpoint(run_file: Path, out: Path, at: int, worker) -> None:
    """Start ``kdbench run`` on a gated run (``gated``), forked from the session's local worker as a
    local launch starts its runs (conftest.py's ``run_worker``), and SIGKILL it while it waits at its
    gate, its checkpoint at iteration ``at`` whole; then open the gate for the rerun."""
    release = Path(json.loads(run_file.read_text())["distill"][-1]["params"]["release"])
    waiting = Path(f"{release}.waiting")  # the gate writes it as it starts waiting
    log = out.with_name(f"{out.name}.log")
    pid = worker.start(["run", str(run_file), "--out", str(out)], environment(), str(log))
    assert pid, "the local worker did not start the run"
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not waiting.exists():
            assert process_alive(pid), f"the run ended before its gate: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the run did not reach its gate in {DEADLINE_S} s"
            time.sleep(0.05)
    finally:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not process_alive(pid), timeout=60, what="the killed run to exit")
    release.write_text("open\n")
    assert iteration((out / "last_checkpoint").read_text()) == at
    assert store.run_state(out) == "started"


def rerun(run_file: Path, out: Path) -> dict:
    """``kdbench run`` again on the killed run's directory, to its end; its final record."""
    result = subprocess.run(kdbench_run(run_file, out), cwd=ROOT, env=environment(), capture_output=True,
                            text=True, timeout=DEADLINE_S)
    assert result.returncode == 0, result.stderr[-3000:]
    return store.read_json(out / store.FINAL)


def evaluated_iterations(out: Path) -> list[int]:
    return [line["iter"] for line in store.read_jsonl(out / store.METRICS)]


def resumed_state(run_file: Path, out: Path, read):
    """``read(runner)`` in an attempt of the run in ``run_file`` on ``out`` once mmengine has resumed
    it, just before its first iteration (the attempt stops there): what a rerun starts training from."""
    from mmengine.hooks import Hook

    from runners.train import train_and_evaluate

    seen = []

    class Watch(Hook):
        def before_train(self, runner):
            seen.append(read(runner))
            raise _Stop

    with pytest.raises(_Stop):
        train_and_evaluate(parse_run(json.loads(run_file.read_text())), out, hooks=(Watch(),))
    return seen[0]


class _Stop(Exception):
    pass


# -- a damaged last checkpoint ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, seg_teacher, run_worker):
    """A student run killed once its second checkpoint is written: (its run file, its directory)."""
    folder = tmp_path_factory.mktemp("killed")
    run_file = write_run_file(gated(seg_run(schedule=SCHEDULE), seg_teacher, folder / "gate", at=4), folder)
    os.environ["KDBENCH_DATA"] = str(tmp_path_factory.getbasetemp() / "data")  # module scope: no monkeypatch
    kill_at_checkpoint(run_file, folder / "out", at=4, worker=run_worker)
    return run_file, folder / "out"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble(path: Path) -> None:
    """Garbage of the checkpoint's own size (seeded: the same bytes every time)."""
    path.write_bytes(random.Random(0).randbytes(path.stat().st_size))


@pytest.mark.parametrize("damage", [None, truncate, garble], ids=["intact", "truncated", "garbage"])
def test_a_killed_run_resumes_from_its_newest_checkpoint_that_loads_and_records_each_evaluation_once(
        damage, killed_run, tmp_path):
    """Guarantee: A run killed (SIGKILL) mid-training resumes from its newest checkpoint that loads and ends with one
    result: a truncated or garbage last checkpoint falls back to the one before, and with every checkpoint
    corrupt the run starts afresh."""
    run_file, killed = killed_run
    out = shutil.copytree(killed, tmp_path / "out")
    *_, previous, newest = checkpoints(out)
    before = store.read_jsonl(out / store.METRICS)
    if damage is not None:
        damage(newest)
    expected = previous if damage is not None else newest

    final = rerun(run_file, out)
    assert final["status"] == "complete" and final["resumed_from"] == expected.name
    assert evaluated_iterations(out) == EVALUATIONS
    # the killed process's evaluations up to the checkpoint are kept (an evaluation at the
    # checkpoint itself may be missing: the kill came between the two, and the rerun makes it)
    kept = [line for line in before if line["iter"] <= iteration(expected)]
    assert kept and all(line in store.read_jsonl(out / store.METRICS) for line in kept)
    assert iteration(checkpoints(out)[-1]) == SCHEDULE["iterations"]


def test_a_killed_run_whose_every_checkpoint_is_corrupt_starts_afresh_and_completes(killed_run, tmp_path):
    """Guarantee: A killed run whose every checkpoint is corrupt starts afresh and completes."""
    run_file, killed = killed_run
    out = shutil.copytree(killed, tmp_path / "out")
    damaged = checkpoints(out)
    assert len(damaged) >= 2
    truncate(damaged[0])
    for path in damaged[1:]:
        garble(path)

    final = rerun(run_file, out)
    assert final["status"] == "complete" and final["resumed_from"] is None
    assert evaluated_iterations(out) == EVALUATIONS
    last = torch.load(checkpoints(out)[-1], map_location="cpu", weights_only=False)
    assert last["meta"]["iter"] == SCHEDULE["iterations"]


@pytest.mark.parametrize("at", [2, 4], ids=["mid-training", "last"])
def test_a_resume_makes_the_evaluation_that_a_kill_between_checkpoint_and_evaluation_left_out(at, tmp_path):
    """Guarantee: A resume makes the evaluation that a kill between checkpoint and evaluation left out."""
    schedule = {"iterations": 4, "batch_size": 2, "checkpoint_interval": 2, "val_interval": 2}
    execute(seg_run(schedule=schedule), tmp_path)
    made = {line["iter"]: line for line in store.read_jsonl(tmp_path / store.METRICS)}
    # the directory as a kill just after the checkpoint at `at` leaves it (mmengine saves, then evaluates)
    for path in [tmp_path / store.FINAL, tmp_path / "model_final.pth",
                 *(p for p in checkpoints(tmp_path) if iteration(p) > at)]:
        path.unlink()
    store.write_jsonl_atomic(tmp_path / store.METRICS, [made[i] for i in sorted(made) if i < at])

    final = execute(seg_run(schedule=schedule), tmp_path)
    assert final["resumed_from"] == f"iter_{at}.pth"
    assert evaluated_iterations(tmp_path) == [2, 4]
    remade = next(line for line in store.read_jsonl(tmp_path / store.METRICS) if line["iter"] == at)
    assert remade == made[at]  # the checkpoint's weights, evaluated as the killed process would have


# -- what a distilled run's checkpoint brings back ------------------------------------------------
def killed_distilled_run(run: dict, tmp_path: Path, worker) -> tuple[Path, Path, dict]:
    """``run`` killed at its first checkpoint: (run file, directory, the checkpoint a rerun loads)."""
    run_file = write_run_file(gated(run, Path(run["teacher"]["checkpoint"]["run"]), tmp_path / "gate", at=2),
                              tmp_path)
    out = tmp_path / "out"
    kill_at_checkpoint(run_file, out, at=2, worker=worker)
    from runners.train import resume_checkpoint

    checkpoint = resume_checkpoint(out)
    assert checkpoint is not None
    return run_file, out, checkpoint


def test_a_killed_distilled_run_resumes_its_adapters_and_their_optimizer_state_from_the_checkpoint(
        seg_teacher, tmp_path, run_worker):
    """Guarantee: A killed distilled run resumes its adapters and their optimizer state from the checkpoint."""
    run = seg_run(teacher=teacher_of(seg_teacher), distill=cwd_terms(), schedule=DISTILLED)
    run_file, out, checkpoint = killed_distilled_run(run, tmp_path, run_worker)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)

    def read(runner):
        model = runner.model
        adapters = {id(p) for p in model.adapters.parameters()}
        order = [p for group in runner.optim_wrapper.optimizer.param_groups for p in group["params"]]
        return ({f"adapters.{k}": v.clone() for k, v in model.adapters.state_dict().items()},
                copy.deepcopy(runner.optim_wrapper.state_dict()),
                [index for index, p in enumerate(order) if id(p) in adapters])

    weights, optimizer, adapter_indices = resumed_state(run_file, shutil.copytree(out, tmp_path / "copy"), read)
    assert weights and all(torch.equal(value, saved["state_dict"][key]) for key, value in weights.items())
    assert adapter_indices and set(adapter_indices) <= set(optimizer["state"])
    assert optimizer["state"].keys() == saved["optimizer"]["state"].keys()
    for index, state in optimizer["state"].items():  # SGD's momentum buffers, the adapters' among them
        assert all(torch.equal(value, saved["optimizer"]["state"][index][name]) for name, value in state.items())

    final = rerun(run_file, out)
    assert final["status"] == "complete" and final["resumed_from"] == checkpoint.name
    assert evaluated_iterations(out) == [4, 8, 12]


def test_a_killed_holistic_run_resumes_its_critic_and_the_critics_adam_state_continues(seg_teacher, tmp_path,
                                                                                      run_worker):
    """Guarantee: A killed holistic run resumes its critic and the critics adam state continues."""
    terms = [{"name": "ho", "method": "ho", "weight": 0.1, "student_location": "decode_head.conv_seg"}]
    run = seg_run(teacher=teacher_of(seg_teacher), distill=terms, schedule=DISTILLED)
    run_file, out, checkpoint = killed_distilled_run(run, tmp_path, run_worker)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    saved_adam = saved["kd_losses.ho._extra_state"]["optimizer_d"]

    def read(runner):
        ho = runner.model.kd_losses["ho"]
        return ({f"kd_losses.ho.{k}": v.clone() for k, v in ho.state_dict().items() if k != "_extra_state"},
                copy.deepcopy(ho.optimizer_d.state_dict()))

    critic, adam = resumed_state(run_file, shutil.copytree(out, tmp_path / "copy"), read)
    assert critic and all(torch.equal(value, saved[key]) for key, value in critic.items())
    steps = {float(state["step"]) for state in adam["state"].values()}
    assert steps == {float(iteration(checkpoint))}  # one critic step per training iteration so far
    for index, state in adam["state"].items():
        assert all(torch.equal(value, saved_adam["state"][index][name]) for name, value in state.items())

    final = rerun(run_file, out)
    assert final["status"] == "complete" and final["resumed_from"] == checkpoint.name
    assert evaluated_iterations(out) == [4, 8, 12]
    last = torch.load(checkpoints(out)[-1], map_location="cpu", weights_only=False)["state_dict"]
    last_steps = {float(state["step"]) for state in last["kd_losses.ho._extra_state"]["optimizer_d"]["state"].values()}
    assert last_steps == {float(DISTILLED["iterations"])}  # counted on from the checkpoint's, not from 0


def test_a_killed_cirkd_memory_run_resumes_bit_for_bit_and_ends_as_the_same_run_uninterrupted(seg_teacher, tmp_path,
                                                                                             run_worker):
    """CIRKD's memory queues are the loss's buffers: the checkpoint holds them (written to by the
    iterations before it) and the rerun starts from them exactly, not from fresh random vectors.
    The loss samples its anchors from torch's global generator, whose state the checkpoint holds
    too: the resumed run ends with the same metrics and weights, bit for bit, as the same run
    trained without a kill.

    Guarantee: A killed run resumed from its checkpoint continues bit for bit as if never killed: the
    checkpoint holds the random generators' states (Python's, NumPy's, torch's, the GPUs') and the
    resume sets them back once mmengine has replayed the batches already trained; a killed CIRKD
    memory run ends with the metrics and weights, memory queues included, of the same run trained
    straight through."""
    terms = [{"name": "memory", "method": "cirkd_memory", "params": {"pixel_memory_size": 64, "region_memory_size": 8},
              "student_location": "decode_head.bottleneck"}]
    run = seg_run(teacher=teacher_of(seg_teacher), distill=terms, schedule=DISTILLED)
    run_file, out, checkpoint = killed_distilled_run(run, tmp_path, run_worker)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    names = ("teacher_pixel_queue", "pixel_queue_ptr", "teacher_segment_queue", "segment_queue_ptr")
    assert {f"kd_losses.memory.{name}" for name in names} <= set(saved)
    assert int(saved["kd_losses.memory.segment_queue_ptr"].sum()) > 0  # the training steps wrote into them

    def read(runner):
        return {f"kd_losses.memory.{k}": v.clone() for k, v in runner.model.kd_losses["memory"].state_dict().items()}

    resumed = resumed_state(run_file, shutil.copytree(out, tmp_path / "copy"), read)
    assert {f"kd_losses.memory.{name}" for name in names} <= set(resumed)
    assert all(torch.equal(value, saved[key]) for key, value in resumed.items())

    final = rerun(run_file, out)
    assert final["status"] == "complete" and final["resumed_from"] == checkpoint.name
    assert evaluated_iterations(out) == [4, 8, 12]

    whole = rerun(run_file, tmp_path / "uninterrupted")  # the gate is open: it trains straight through
    assert whole["resumed_from"] is None and whole["run_id"] == final["run_id"]
    assert final["metrics"] == whole["metrics"]
    assert store.read_jsonl(out / store.METRICS) == store.read_jsonl(tmp_path / "uninterrupted" / store.METRICS)
    for name in ("model_final.pth", f"iter_{DISTILLED['iterations']}.pth"):  # the student; everything, queues too
        resumed, straight = (torch.load(folder / name, map_location="cpu", weights_only=False)
                             for folder in (out, tmp_path / "uninterrupted"))
        resumed, straight = resumed.get("state_dict", resumed), straight.get("state_dict", straight)
        assert resumed.keys() == straight.keys()
        assert all(torch.equal(value, straight[key]) for key, value in resumed.items()), name
