"""Shared pytest set-up: deterministic torch on few threads, so tests behave the same on 2 cores."""

import contextlib
import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded_torch():
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield


@pytest.fixture(autouse=True, scope="session")
def _launch_records(tmp_path_factory):
    """Launches record their results roots (kdbench.roots) in this session's folder, never the user's."""
    os.environ["KDBENCH_STATE"] = str(tmp_path_factory.getbasetemp() / "state")


@pytest.fixture(autouse=True)
def _fresh_mmengine_loggers():
    """mmengine keeps every MMLogger it creates, each writing to the sys.stdout of its time; under
    pytest that is one test's capture, closed when the test ends. Forget them after each test so a
    later test logs to its own stdout (in a real process each run has its own, so this is a
    test-isolation matter only)."""
    yield
    import sys

    if "mmengine.logging" in sys.modules:
        from mmengine.logging import MMLogger

        for logger in list(MMLogger._instance_dict.values()):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
                handler.close()
        MMLogger._instance_dict.clear()


@pytest.fixture(scope="session")
def seg_teacher(tmp_path_factory):
    """A complete tiny segmentation teacher run (4 iterations), trained once per test session (per
    xdist worker) and shared by every test that distils from it; none writes into it."""
    from tests.run_fixtures import SHORT, TINY_DATA, execute

    os.environ["KDBENCH_DATA"] = str(tmp_path_factory.getbasetemp() / "data")
    out = tmp_path_factory.mktemp("seg_teacher")
    execute({"task": "seg", "role": "teacher", "teacher": {"config": "tiny_seg_teacher"},
             "dataset": TINY_DATA, "schedule": dict(SHORT)}, out)
    return out


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory):
    """The teacher of the tiny studies of tests/launch_helpers.py, trained once per test session
    (per xdist worker) by ``kdbench run``, as a local launch runs it. Gives ``seed(study)``, which
    copies it into the study's results wherever the study plans that very teacher (the same run id:
    ids are content hashes of what changes the numbers) and returns the ids it copied, so a launch
    finds the teacher complete and trains only what the test is about. Each executor keeps a test
    that trains its own teacher (tests/test_launch_local.py, tests/test_launch_slurm.py)."""
    import shutil
    import subprocess
    import sys

    from kdbench.stages import load_study
    from runners.launch.executor import write_run_file
    from tests.launch_helpers import write_study

    root = tmp_path_factory.mktemp("tiny_teacher")
    study = load_study(write_study(root, "tiny_teacher"), root / "results")
    (teacher,) = [planned for planned in study.runs if planned.run.role == "teacher"]
    trained = study.directory / teacher.run_id
    run_file = write_run_file(study.directory, teacher, study.resources.cpus)
    threads = str(study.resources.cpus)
    done = subprocess.run([sys.executable, "-m", "kdbench.cli", "run", str(run_file), "--out", str(trained)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    assert done.returncode == 0, done.stderr

    def seed(planned_study) -> list[str]:
        copied = []
        for planned in planned_study.runs:
            target = planned_study.directory / planned.run_id
            if planned.run_id == teacher.run_id and not target.exists():
                shutil.copytree(trained, target, ignore=shutil.ignore_patterns("job.json"))
                copied.append(planned.run_id)
        return copied

    return seed


@pytest.fixture(scope="session")
def run_worker():
    """A local worker (runners/launch/worker.py, what a local launch forks its runs from) for the test
    session. ``run_worker.start(argv, env, log)`` forks ``kdbench <argv>`` with environment ``env``,
    writing to the file ``log``, from a process that imported the training stack once, and returns
    its pid: a real process on this host, to watch or kill, spared a fresh interpreter's imports
    (several CPU seconds). Its exit code is not seen (the worker reaps its children): a
    test reads what the run wrote and its log. Where the exit code or a fresh interpreter is what a
    test is about, it starts a subprocess instead."""
    from pathlib import Path

    from runners.launch.worker import Worker

    root = str(Path(__file__).resolve().parents[1])
    worker = Worker({**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))})
    yield worker
    worker.process.stdin.close()
    worker.process.wait(timeout=60)


@contextlib.contextmanager
def cluster_turn(exclusive: bool = False):
    """A turn on the local SLURM cluster: shared by the tests that only submit and watch their own
    jobs (they run side by side, on both workers), exclusive for a test that stops a daemon or
    reshapes the cluster (``@pytest.mark.slurm_exclusive``, and the two-node module for as long as
    the cluster has two nodes). An flock on ``$KDBENCH_SLURM_DIR.turns``, so that it also holds
    between test sessions on one machine."""
    import fcntl

    directory = os.environ.get("KDBENCH_SLURM_DIR", "/tmp/kdbench-slurm")
    with open(f"{directory}.turns", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _uses_cluster(item) -> bool:
    return item.get_closest_marker("slurm") is not None or "slurm_cluster" in getattr(item, "fixturenames", ())


@pytest.fixture(autouse=True)
def _cluster_turn(request):
    """Every test marked ``slurm`` runs in a turn on the cluster (``cluster_turn``); the two-node
    module takes its own, exclusive, around the whole module."""
    node = request.node
    if not _uses_cluster(node) or node.get_closest_marker("two_nodes") is not None:
        yield
        return
    with cluster_turn(exclusive=node.get_closest_marker("slurm_exclusive") is not None):
        yield


class SlurmCluster:
    """What the ``slurm_cluster`` fixture gives a test: the cluster's directory (its pid files are
    in ``directory / "run"``), ``up()``, which brings back what a test stopped (tools/slurm/up.sh),
    and ``up(nodes=2)``, which makes it a cluster of two nodes (each a network namespace with its own
    address: tools/slurm/nodes.sh) until ``up()`` makes it one node again (only in an exclusive
    ``cluster_turn``)."""

    def __init__(self, directory, up):
        self.directory = directory
        self.up = up
        self.turn = cluster_turn


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local SLURM cluster (tools/slurm/up.sh), brought up once for the session; skips with the
    reason where it cannot run (not root, KDBENCH_SKIP_SLURM set). Gives a ``SlurmCluster``.

    Only a cluster that a test session started is stopped (tools/slurm/down.sh), and only by the
    last session using it: each session holds a shared lock on ``$KDBENCH_SLURM_DIR.sessions``
    while it runs; the one that can take it exclusively at its end is the last. A cluster that was
    already running (started by hand, or by a CI step) is left running."""
    import fcntl
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (apt-get, daemons)")
    if os.environ.get("KDBENCH_SKIP_SLURM"):
        pytest.skip("KDBENCH_SKIP_SLURM is set")
    directory = Path(os.environ.get("KDBENCH_SLURM_DIR", "/tmp/kdbench-slurm"))
    marker = directory / "run" / "started-by-tests"  # the cluster was started by a test session

    def script(name, timeout, updown, nodes=1):
        fcntl.flock(updown, fcntl.LOCK_EX)  # one up.sh or down.sh at a time
        try:
            return subprocess.run(["bash", str(root / "tools" / "slurm" / name)], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL,
                                  env={**os.environ, "KDBENCH_SLURM_NODES": str(nodes)})
        finally:
            fcntl.flock(updown, fcntl.LOCK_UN)

    with open(f"{directory}.sessions", "a") as sessions, open(f"{directory}.updown", "a") as updown:
        fcntl.flock(sessions, fcntl.LOCK_SH)  # waits while the last session stops the cluster

        def bring_up(nodes: int = 1) -> str:
            up = script("up.sh", 600, updown, nodes)
            if up.returncode != 0:
                pytest.fail(f"tools/slurm/up.sh failed:\n{up.stdout}\n{up.stderr}")
            return up.stdout

        with cluster_turn():  # not while another worker's test has the cluster to itself (two nodes)
            started = "READY (already running)" not in bring_up()
        if started:
            marker.write_text(f"{os.getpid()}\n")
        try:
            yield SlurmCluster(directory, bring_up)
        finally:
            try:
                fcntl.flock(sessions, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # another session still uses the cluster: the last one stops it
            else:
                if marker.exists():
                    script("down.sh", 120, updown)
                    marker.unlink(missing_ok=True)


def _group(item, name: str) -> None:
    """``item`` in the xdist group ``name`` (under ``--dist loadgroup``, a group runs on one worker).
    pytest-xdist 3.8 marks a grouped test by appending ``@name`` to ``item._nodeid``, which pytest 9
    no longer reads (a node's id is ``item._id``): the suffix is set on ``_id`` here, as xdist means
    it (a later xdist that sets it too only appends the same group again)."""
    item.add_marker(pytest.mark.xdist_group(name))
    if item.config.getvalue("loadgroup") and "@" not in item.nodeid:
        from _pytest.nodeid import NodeId

        item._id = NodeId.parse(f"{item.nodeid}@{name}")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(items):
    """The order the tests are handed out in under pytest-xdist (``make test``: two workers,
    ``--dist loadgroup``, each worker taking the next test as it finishes one), longest work first
    so that the short tests even out the end:

    0. the tests that have the cluster alone (an exclusive ``cluster_turn``: the two-node module,
       which switches the cluster to two nodes and back, and the tests marked ``slurm_exclusive``),
       as one xdist group: one after another on one worker, at the start, while
    1. the other worker runs the slow tests that do not use the cluster;
    2. then the cluster's other tests, side by side on both workers, each in a shared turn;
    3. then the rest.

    Without xdist the order is left alone, so that a module's fixtures are made once."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return

    def rank(item) -> int:
        if item.get_closest_marker("two_nodes") or item.get_closest_marker("slurm_exclusive"):
            _group(item, "cluster_alone")
            return 0
        if _uses_cluster(item):
            return 2
        return 1 if item.get_closest_marker("slow") else 3

    items.sort(key=rank)  # stable: collection order within a rank
