"""The README's walkthroughs ("Your first study", "Your own loss") as a user types them: the study
file and the command lines are read from README.md, so the text cannot rot without a test failing.

The plan test runs the study exactly as written. The launch test shortens the students' schedule
(a few iterations) and the teacher's (TEACHER_ITERATIONS, its recipe and data unchanged: enough to
clear chance by a wide margin, which it checks) and changes nothing else: the same methods, seeds
and commands, launched, reported, and extended by the plugin loss.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.launch_helpers import dump_yaml

ROOT = Path(__file__).resolve().parents[1]


def section(title: str) -> str:
    """The README's ``## title`` section, up to the next ``## `` heading."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def lines(block: str) -> list[tuple[list[str], str]]:
    """Each command line of a bash block: (its words, its comment)."""
    found = []
    for line in block.splitlines():
        if line.strip():
            words = shlex.split(line, comments=True)
            found.append((words, line.partition(" #")[2].strip()))
    return found


def first_study() -> str:
    (text,) = blocks(section("Your first study"), "yaml")
    assert text.startswith("# first.yaml")
    return text


def own_loss_additions() -> dict:
    (text,) = blocks(section("Your own loss"), "yaml")
    return yaml.safe_load(text)


def run(words: list[str], where: Path) -> tuple[int, str, str]:
    """One README command line typed in ``where``, as a process of its own (a plugin is imported
    once per process, as for a user); ``kdbench`` is this checkout's CLI."""
    if words[0] == "source":  # the environment this test already runs in
        return 0, "", ""
    if words[0] == "kdbench":
        words = [sys.executable, "-m", "kdbench.cli", *words[1:]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(words, cwd=where, capture_output=True, text=True, timeout=1800, env=env)
    return done.returncode, done.stdout, done.stderr


def promised_runs(comment: str) -> int:
    return int(re.match(r"(\d+) runs", comment)[1])


@pytest.fixture
def workdir(tmp_path):
    """A folder to type the commands in, with the repository's studies/ where the README's cp finds it."""
    (tmp_path / "studies").symlink_to(ROOT / "studies")
    return tmp_path


def with_loss(spec: dict) -> dict:
    additions = own_loss_additions()
    return {**spec, "plugins": additions["plugins"], "methods": {**spec["methods"], **additions["methods"]}}


@pytest.mark.slow  # the preflight builds the tiny models (a few seconds the first time, then cached)
def test_the_first_study_of_the_readme_plans_the_runs_its_comments_promise(workdir):
    """Guarantee: The README's walkthroughs ("Your first study", "Your own loss") work as written: their study file and
    command lines, read from the README, plan the runs their comments promise, launch, report, and a plugin
    added later trains only its own runs."""
    (workdir / "first.yaml").write_text(first_study())
    first, *_ = [line for line in blocks(section("Your first study"), "bash")]
    plans = [(w, c) for w, c in lines(first) if w[:2] == ["kdbench", "plan"]]
    assert plans, "the walkthrough plans its study"
    for words, comment in plans:
        code, out, err = run(words, workdir)
        assert code == 0, err
        if "--estimate" in words:
            assert re.search(r"study first: [0-9.]+ CPU-h in all", out)
            continue
        assert f"study first: {promised_runs(comment)} runs" in out
        for name in ("teacher", "student_s1", "cwd_tau1_s0", "cwd_tau4_s1", "pi_s0"):
            assert f" {name} " in out
    assert not (workdir / "results").exists()  # plan writes nothing
    # "Your own loss": the copied plugin is listed, and the study with it plans the promised runs
    setup, then = blocks(section("Your own loss"), "bash")
    for words, comment in lines(setup):
        code, out, err = run(words, workdir)
        assert code == 0, err
        if words[:2] == ["kdbench", "losses"]:
            assert " ".join(comment.split()[:3]) in " ".join(out.split())
    (workdir / "first.yaml").write_text(dump_yaml(with_loss(yaml.safe_load(first_study()))))
    ((words, comment), *_) = lines(then)
    code, out, err = run(words, workdir)
    assert code == 0 and f"study first: {promised_runs(comment)} runs" in out and " cosine_s1 " in out


TEACHER_ITERATIONS = 200   # the README's recipe reaches ~42 mIoU here (chance ~14), ~57 at its 1000


def shortened(spec: dict) -> dict:
    """The study with students of a few iterations and a shorter teacher: the data, the teacher's
    optimiser and everything else as the README has it."""
    base = spec["base"]
    schedule = {**base["schedule"], "iterations": 4, "val_interval": 4, "checkpoint_interval": 2}   # the teacher
    # trains at this batch size too (teacher_run.schedule is merged over it): it stays the README's
    teacher = {**spec["teacher_run"]["schedule"], "iterations": TEACHER_ITERATIONS,
               "val_interval": TEACHER_ITERATIONS, "checkpoint_interval": TEACHER_ITERATIONS}
    return {**spec, "base": {**base, "schedule": schedule}, "teacher_run": {**spec["teacher_run"], "schedule": teacher}}


def teacher_clears_chance(results: Path, md: str) -> None:
    """The teacher is well above chance (twice the chance mIoU, and 20 points over it), and the
    report's warnings say nothing about the teacher being near chance."""
    (final,) = [json.loads(p.read_text()) for p in results.glob("*/final.json") if '"role": "teacher"' in p.read_text()]
    miou, chance = final["metrics"]["val/mIoU"], final["metrics"]["val/chance_mIoU"]
    assert miou >= 2 * chance and miou - chance >= 20, (miou, chance)
    assert "warning: the teacher is within" not in md


@pytest.mark.slow  # 16 runs, two at a time: a 200-iteration teacher, 15 students of 4 iterations
def test_the_readme_walkthrough_launches_reports_and_a_plugin_loss_trains_only_its_own_runs(workdir):
    """Guarantee: The readme walkthrough launches reports and a plugin loss trains only its own runs."""
    (workdir / "first.yaml").write_text(dump_yaml(shortened(yaml.safe_load(first_study()))))
    (first,) = blocks(section("Your first study"), "bash")
    for words, comment in lines(first):
        code, out, err = run(words, workdir)
        assert code == 0, f"{words}: {err}"
        if words[:2] == ["kdbench", "status"]:
            assert comment in out  # "9 complete"
    report = workdir / "results" / "first" / "report"
    assert (report / "index.html").is_file()
    md = (report / "README.md").read_text()
    for text in ("cwd\\_tau1 (channel-wise)", "cwd\\_tau4 (channel-wise)", "pi (spatial)",
                 "| chance (a constant predictor) |", "CWD beat the student baseline in"):
        assert text in md
    teacher_clears_chance(workdir / "results" / "first", md)
    finals = {path: path.stat().st_mtime_ns for path in (workdir / "results" / "first").glob("*/final.json")}
    assert len(finals) == 13

    setup, then = blocks(section("Your own loss"), "bash")
    for words, _ in lines(setup):
        assert run(words, workdir)[0] == 0
    spec = shortened(with_loss(yaml.safe_load(first_study())))
    (workdir / "first.yaml").write_text(dump_yaml(spec))
    for words, comment in lines(then):
        code, out, err = run(words, workdir)
        assert code == 0, f"{words}: {err}"
        if words[:2] == ["kdbench", "plan"]:
            assert "13 complete" in comment and out.count(" complete ") == 13 and out.count(" missing ") == 3
    after = {path: path.stat().st_mtime_ns for path in (workdir / "results" / "first").glob("*/final.json")}
    assert len(after) == 16 and all(after[path] == stamp for path, stamp in finals.items())
    assert "cosine (spatial)" in (report / "README.md").read_text()
