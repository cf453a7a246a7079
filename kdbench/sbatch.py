"""What a study may ask of a SLURM site beyond the resources kdbench sets itself: checked before
anything is submitted, because each value goes into a batch script (``#SBATCH --key=value``).

``account``, ``qos``, ``constraint``, ``exclude`` and ``reservation`` are ``resources`` keys of
their own; anything else is an ``resources.sbatch`` item, ``"--name=value"`` or ``"--name"``, whose
name must be one of sbatch's long options (sbatch(1), Slurm 22-24) and not one kdbench sets.
"""

from __future__ import annotations

import re

from kdbench.errors import Problems
from kdbench.schema import Checker, did_you_mean, join

# sbatch's long options that make sense in a batch script's #SBATCH lines (sbatch --help, Slurm 22.05).
SBATCH_OPTIONS = (
    "acctg-freq", "batch", "bb", "bbf", "begin", "chdir", "cluster-constraint", "clusters", "comment",
    "container", "contiguous", "core-spec", "cores-per-socket", "cpu-freq", "cpus-per-gpu", "deadline",
    "delay-boot", "distribution", "export", "export-file", "extra-node-info", "get-user-env", "gid", "gpu-bind",
    "gpu-freq", "gpus", "gpus-per-socket", "gpus-per-task", "gres", "gres-flags", "hint", "hold", "ignore-pbs",
    "licenses", "mail-type", "mail-user", "mcs-label", "mem-bind", "mem-per-cpu", "mem-per-gpu", "mincpus",
    "network", "nice", "no-kill", "no-requeue", "nodefile", "nodelist", "ntasks", "ntasks-per-core",
    "ntasks-per-gpu", "ntasks-per-socket", "overcommit", "oversubscribe", "power", "priority", "profile",
    "propagate", "reboot", "requeue", "sockets-per-node", "spread-job", "switches", "thread-spec",
    "threads-per-core", "time-min", "tmp", "tres-per-task", "uid", "use-min-nodes", "wckey",
)
# The options kdbench writes itself, and where a study sets what they carry.
SET_BY_KDBENCH = {
    "job-name": "the study's name", "time": "resources.time_min", "mem": "resources.mem_gb",
    "cpus-per-task": "resources.cpus", "ntasks-per-node": "resources.gpus (one task per GPU)",
    "nodes": "kdbench (one node per run)", "gpus-per-node": "resources.gpus", "partition": "resources.partition",
    "array": "--array-parallelism", "dependency": "kdbench (teachers before their students)",
    "kill-on-invalid-dep": "kdbench", "output": "kdbench (logs in <results>/<study>/.submitit/)",
    "error": "kdbench (logs in <results>/<study>/.submitit/)", "open-mode": "kdbench",
    "signal": "kdbench (the requeue before the time limit)", "account": "resources.account",
    "qos": "resources.qos", "constraint": "resources.constraint", "exclude": "resources.exclude",
    "reservation": "resources.reservation",
}
SITE_KEYS = ("account", "qos", "constraint", "exclude", "reservation")

_NAME = re.compile(r"[A-Za-z0-9_.-]+")                   # an account, a QOS, a reservation
_CONSTRAINT = re.compile(r"[A-Za-z0-9_.\-&|\[\]*,:()!]+")  # features joined by & | [ ] *N (sbatch(1))
_HOSTLIST = re.compile(r"[A-Za-z0-9_.\-\[\],]+")          # node[01-04],gpu7
_PATTERNS = {"account": (_NAME, "letters, digits, '_', '-' or '.'"),
             "qos": (_NAME, "letters, digits, '_', '-' or '.'"),
             "reservation": (_NAME, "letters, digits, '_', '-' or '.'"),
             "constraint": (_CONSTRAINT, "node features joined by '&', '|', '[...]' and '*N' (sbatch --constraint)"),
             "exclude": (_HOSTLIST, "a host list such as 'node[01-04],gpu7'")}


def check_site_value(check: Checker, key: str, value: object, path: str) -> str:
    """One of ``SITE_KEYS``: a string of the characters its sbatch option takes."""
    text = check.string(value, path)
    pattern, what = _PATTERNS[key]
    if not pattern.fullmatch(text):
        raise check.fail(path, f"{text!r} must be {what}")
    return text


def check_extra(check: Checker, value: object, path: str) -> tuple[str, ...]:
    """``resources.sbatch``: a list of ``--name=value`` or ``--name`` items, each an sbatch option
    kdbench does not set itself; every bad item reported at once."""
    items = check.sequence(value, path)
    problems = Problems()
    for index, item in enumerate(items):
        problems.get(_check_item, check, item, join(path, index))
    problems.raise_any()
    return tuple(items)


def _check_item(check: Checker, item: object, where: str) -> None:
    text = check.string(item, where)
    name, equals, argument = text.removeprefix("--").partition("=")
    if not text.startswith("--") or not name:
        raise check.fail(where, f"{text!r} must be an sbatch long option, '--name=value' or '--name'")
    if name in SET_BY_KDBENCH:
        raise check.fail(where, f"--{name} is set by kdbench; set it with {SET_BY_KDBENCH[name]}")
    if name not in SBATCH_OPTIONS:
        close = did_you_mean(f"--{name}", [f"--{option}" for option in SBATCH_OPTIONS])
        raise check.fail(where, f"--{name} is not an sbatch option{close}")
    if equals and (not argument or not argument.isprintable()):
        raise check.fail(where, f"{text!r}: the value must be printable text, without control characters")


def as_parameters(extra: tuple[str, ...]) -> dict[str, str | bool]:
    """``("--mail-type=END", "--requeue")`` -> ``{"mail-type": "END", "requeue": True}``, as
    submitit's ``slurm_additional_parameters`` takes them."""
    parameters: dict[str, str | bool] = {}
    for item in extra:
        name, equals, argument = item.removeprefix("--").partition("=")
        parameters[name] = argument if equals else True
    return parameters
