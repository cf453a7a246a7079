"""The local worker: one process that imports the training stack (torch, mmengine, mmseg, mmdet and
the runners that use them) once, then forks a child per run, so that a local launch's runs do not
each pay those imports in a fresh interpreter.

A child is what ``python -m kdbench.cli run RUN.json --out DIR`` would be, started later: it takes
the run's environment and its log file as stdout and stderr, runs the CLI's module as ``__main__``
with that command line, and exits with its code. Its pid is a real process on this host, so the
local executor records and cancels it as it would a subprocess. The worker itself computes nothing
before it forks (no thread pool is started, nothing is seeded), so a child starts from the state a
fresh interpreter has after the same imports, and every setting that changes a run's numbers is
made by the run itself (runners.train.configure_numerics); the tests that compare a run launched
alone, beside another and on SLURM check that the results stay bit-identical.

The protocol is one JSON line each way on the worker's stdin and stdout: ``{"argv", "env", "log", "cwd"}``
in, ``{"pid"}`` out. The worker ends when its stdin closes (the launch ended); children it started
go on to their end. ``KDBENCH_LOCAL_WORKER=0`` turns it off: each run then starts a fresh
interpreter.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import signal
import subprocess
import sys
import traceback
import weakref

# What a run imports before it trains (runners.run and what it reaches), imported once here; torch
# imports its compiler (torch._dynamo, torch._inductor.config) at the first optimizer a run builds
# and where it sets deterministic algorithms: most of a CPU second, paid here once too.
STACK = ("torch", "torch._dynamo", "torch._inductor.config", "mmengine.runner", "mmseg.models", "mmdet.models",
         "kdbench.spec", "runners.run", "runners.train", "runners.build", "runners.preflight", "runners.distill",
         "runners.metrics")


def enabled() -> bool:
    """Whether a local launch forks its runs from a worker (``KDBENCH_LOCAL_WORKER`` not ``0``)."""
    return os.environ.get("KDBENCH_LOCAL_WORKER", "1") != "0"


class Worker:
    """The launcher's side: starts the worker process, asks it for a child per run."""

    def __init__(self, env: dict[str, str]):
        self.process = subprocess.Popen([sys.executable, "-m", "runners.launch.worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        weakref.finalize(self, _close, self.process)

    def start(self, argv: list[str], env: dict[str, str], log: str) -> int | None:
        """Fork a child that runs ``python -m kdbench.cli <argv>`` here with ``env``, writing to ``log``;
        its pid, or None when the worker is gone (the caller then starts a fresh interpreter)."""
        try:
            self.process.stdin.write(json.dumps({"argv": argv, "env": env, "log": log, "cwd": os.getcwd()}) + "\n")
            self.process.stdin.flush()
            reply = self.process.stdout.readline()
        except (OSError, ValueError):
            return None
        return json.loads(reply)["pid"] if reply else None


def _close(process: subprocess.Popen) -> None:
    try:
        process.stdin.close()
        process.wait(timeout=30)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        process.kill()


def _child(request: dict) -> None:
    """In the forked child: become ``python -m kdbench.cli <argv>`` and never return."""
    import runpy

    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the worker reaps its children; a run waits on its own
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW  # a planted link is not followed
        log = os.open(request["log"], flags, 0o666)  # the umask decides the mode
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0), os.dup2(log, 1), os.dup2(log, 2)
        os.close(log), os.close(null)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["kdbench", *request["argv"]]
        try:
            runpy.run_module("kdbench.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: B036  (whatever stops the run is printed to its log, as Python would)
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _reap(signum, frame) -> None:
    """Collect every child that has ended: no zombies, and its CPU time counts in this process's
    children's, so in the launcher's once the worker ends (as a subprocess's would)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve() -> None:
    """The worker's loop: import the stack, then fork a child for each request on stdin."""
    for name in STACK:
        importlib.import_module(name)
    # What the imports made lives as long as the worker: every collection in a child (mmengine runs
    # full ones) would walk those few hundred thousand objects. Frozen, they are skipped, and a
    # child's collections do not write into the pages it shares with the worker.
    gc.freeze()
    signal.signal(signal.SIGCHLD, _reap)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
