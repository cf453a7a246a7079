"""No shell command is built from spec strings: the code never runs a shell (no ``shell=True``, no
``os.system``/``os.popen``/``subprocess.getoutput``), every subprocess gets an argument list, and
the one spec string that reaches a batch script (the SLURM partition) is refused unless it is a
plain name (tests/bad_inputs/49_*)."""

import ast
from pathlib import Path

import pytest

from kdbench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("kdbench", "runners", "analysis", "reports") for p in (ROOT / folder).rglob("*.py"))
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput")}
PROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


def calls(tree):
    for node in ast.walk(tree):
        func = getattr(node, "func", None)
        if isinstance(node, ast.Call) and isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            yield node, (node.func.value.id, node.func.attr)


def test_the_code_never_runs_a_shell_and_passes_every_command_as_a_list():
    """Guarantee: No shell command is built from spec strings: no shell anywhere, every subprocess an argument list,
    and the spec strings that reach a batch script are checked: partition, account, QOS and reservation plain
    names, constraint and exclude in their sbatch syntax, extra options known sbatch names with printable values
    (submitit quotes them)."""
    assert len(SOURCES) > 20
    found_process_calls = 0
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for node, (module, name) in calls(tree):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert (module, name) not in SHELL_CALLS, f"{where}: {module}.{name} runs a shell"
            if module == "subprocess" and name in PROCESS_CALLS:
                found_process_calls += 1
                assert not any(k.arg == "shell" for k in node.keywords), f"{where}: shell= given"
                command = node.args[0] if node.args else None
                is_text = isinstance(command, ast.JoinedStr) or (
                    isinstance(command, ast.Constant) and isinstance(command.value, str))
                assert not is_text, f"{where}: a command line as one string, not an argument list"
    assert found_process_calls >= 3  # the scan sees the launcher's, SLURM's and git's calls


def test_a_partition_that_is_not_a_plain_name_is_refused_on_the_command_line_too(tmp_path):
    """Guarantee: A partition that is not a plain name is refused on the command line too."""
    from kdbench.stages import load_study
    from runners.launch.launcher import LaunchOptions, launch
    from tests.launch_helpers import write_study

    study = load_study(write_study(tmp_path, "inject"), tmp_path / "results")
    with pytest.raises(UserError, match=r"--partition: 'debug; rm -rf x' must be letters"):
        launch(study, LaunchOptions(executor="slurm",
                                    resources={"partition": "debug; rm -rf x"}))
    assert not (tmp_path / "results").exists()
