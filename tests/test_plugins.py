"""Your own losses as plugins: a module named under ``plugins:`` registers a loss with the same
decorator as the built-ins; it is validated by the same rules, listed, planned, run and reported
beside them. The example is the shipped one (studies/examples/)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kdbench import losses
from kdbench.errors import UserError
from kdbench.spec import parse_run
from kdbench.stages import load_study
from tests.launch_helpers import TINY_BASE, run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "studies" / "examples"
PLUGIN = EXAMPLES / "cosine_kd.py"


def test_kdbench_losses_lists_a_plugins_loss_with_its_declared_parameters_and_file():
    """Guarantee: A plugin's loss is listed, validated by the same rules as a built-in (bad values, unknown parameters
    with the close match), refused in one line when its file is missing, broken or takes a built-in's name,
    planned with the same ids wherever the study lives, run locally and reported beside the built-ins; on SLURM
    the job imports it."""
    code, out, err = run_cli("losses", "--plugin", str(PLUGIN), "--json")
    assert code == 0, err
    table = json.loads(out)
    assert table["cosine"] == {"origin": str(PLUGIN), "needs_labels": False, "needs_boxes": False,
                               "needs_adapter": True, "needs_heads": False, "params": {"eps": 1e-8, "loss_weight": 1.0}}
    assert {"cwd", "pi", "at"} <= set(table)  # beside the built-ins


def test_a_plugins_loss_is_validated_by_the_same_rules_as_a_built_in(tmp_path):
    """Guarantee: A plugins loss is validated by the same rules as a built in."""
    plugins = [str(PLUGIN)]
    run = {**TINY_BASE, "teacher": {"config": "tiny_seg_teacher", "checkpoint": "t.pth"}, "plugins": plugins}
    term = {"method": "cosine", "student_location": "decode_head.conv_seg"}
    # The example registers with one decorator: eps's type comes from `eps: float = 1e-8`.
    with pytest.raises(UserError, match=r"distill\[0\]\.params: eps must be a finite number, got 'small'"):
        parse_run({**run, "distill": [{**term, "params": {"eps": "small"}}]})
    with pytest.raises(UserError, match=r"distill\[0\]\.params\.epsilon: unknown key \(did you mean 'eps'\?\)"):
        parse_run({**run, "distill": [{**term, "params": {"epsilon": 1e-6}}]})
    with pytest.raises(UserError, match=r"distill\[0\]\.weight: must be >= 0"):
        parse_run({**run, "distill": [{**term, "weight": -1}]})
    built = losses.build("cosine", eps=1e-6, loss_weight=2.0)
    assert (built.eps, built.loss_weight, built.needs_adapter) == (1e-6, 2.0, True)


# Plugins whose __init__ cannot declare their parameters: (file, its class's __init__ parameters).
UNDECLARABLE = {
    "no_default.py": "self, margin: float, loss_weight: float = 1.0",
    "tensor_param.py": "self, scale: torch.Tensor = None, loss_weight: float = 1.0",
    "list_param.py": "self, sizes: list = (1, 2), loss_weight: float = 1.0",
    "kwargs.py": "self, loss_weight: float = 1.0, **options",
    "no_weight.py": "self, eps: float = 1e-8",
    "bad_default.py": "self, eps: float = 'small', loss_weight: float = 1.0",
}


@pytest.mark.parametrize("entry, message", [
    ("missing.py", r"plugins\[0\]: 'missing.py': no such file"),
    ("broken.py", r"plugins\[0\]: 'broken.py' does not import: NameError: name 'oops' is not defined"),
    ("clash.py", r"plugins\[0\]: 'clash.py': loss 'cwd' is registered twice \(already by kdbench.losses.cwd\)"),
    ("clash_one_decorator.py", r"'clash_one_decorator.py': loss 'pi' is registered twice \(already by kdbench"),
    ("no_such_module_anywhere", r"plugins\[0\]: 'no_such_module_anywhere' does not import: ModuleNotFoundError"),
    ("no_default.py", r"'no_default.py': loss 'no_default' \(\S+/no_default.py\): parameter 'margin' has no default; "
                      r"give it one"),
    ("tensor_param.py", r"parameter 'scale' is of type Tensor, which a spec cannot hold; valid: float, int, bool, str"),
    ("list_param.py", r"parameter 'sizes' is of type list, which a spec cannot hold"),
    ("kwargs.py", r"loss 'kwargs' \(\S+/kwargs.py\): \*options in __init__; a spec can only set named parameters"),
    ("no_weight.py", r"Plugin.__init__ has no parameter loss_weight; add one"),
    ("bad_default.py", r"the default of eps must be a finite number, got 'small'"),
])
def test_a_plugin_that_is_missing_broken_or_takes_a_built_in_name_is_one_line_exit_2(entry, message, tmp_path):
    """Guarantee: A plugin that is missing broken or takes a built in name is one line exit 2."""
    (tmp_path / "broken.py").write_text("oops\n")
    (tmp_path / "clash.py").write_text(
        "from dataclasses import dataclass\nfrom torch import nn\nfrom kdbench.losses import LossParams, register\n"
        "@dataclass(frozen=True)\nclass P(LossParams):\n    pass\n"
        "@register('cwd', P)\nclass Clash(nn.Module):\n    pass\n")
    (tmp_path / "clash_one_decorator.py").write_text(
        "from torch import nn\nfrom kdbench.losses import register\n"
        "@register('pi')\nclass Clash(nn.Module):\n    def __init__(self, loss_weight: float = 1.0):\n        pass\n")
    for name, parameters in UNDECLARABLE.items():
        (tmp_path / name).write_text(
            f"import torch\nfrom torch import nn\nfrom kdbench.losses import register\n"
            f"@register({name.removesuffix('.py')!r})\nclass Plugin(nn.Module):\n"
            f"    def __init__({parameters}):\n        super().__init__()\n")
    study = tmp_path / "s.yaml"
    study.write_text((EXAMPLES / "plugin_cosine.yaml").read_text().replace("[cosine_kd.py]", f"[{entry}]"))
    code, out, err = run_cli("plan", str(study), "--results", str(tmp_path / "results"))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"kdbench plan: error: {study}: plugins[0]: ") and __import__("re").search(message, err)
    assert not (tmp_path / "results").exists()


def test_one_decorator_declares_a_plugins_parameters_from_its_init(tmp_path):
    (tmp_path / "one_decorator.py").write_text(
        "from typing import Literal\nfrom torch import nn\nfrom kdbench.losses import register\n"
        "@register('one_decorator')\nclass Plain(nn.Module):\n"
        "    needs_adapter = False\n"
        "    def __init__(self, margin: float = 0.5, steps=3, mode: Literal['sum', 'mean'] = 'mean',\n"
        "                 limit: int | None = None, squared: bool = False, loss_weight: float = 2.0):\n"
        "        super().__init__()\n        self.margin, self.steps, self.limit = margin, steps, limit\n"
        "        self.mode, self.squared, self.loss_weight = mode, squared, loss_weight\n")
    code, out, err = run_cli("losses", "--plugin", str(tmp_path / "one_decorator.py"), "--json")
    assert code == 0, err
    assert json.loads(out)["one_decorator"] == {
        "origin": str(tmp_path / "one_decorator.py"), "needs_labels": False, "needs_boxes": False,
        "needs_adapter": False, "needs_heads": False,
        "params": {"margin": 0.5, "steps": 3, "mode": "mean", "limit": None, "squared": False, "loss_weight": 2.0}}
    built = losses.build("one_decorator", margin=1, limit=4, mode="sum", loss_weight=0.5)
    assert (built.margin, built.steps, built.limit, built.mode, built.loss_weight) == (1, 3, 4, "sum", 0.5)
    assert losses.declaration("one_decorator")().distils() is None  # no kind declared: neither
    for params, message in [({"margin": "wide"}, r"margin must be a finite number, got 'wide'"),
                            ({"steps": 2.5}, r"steps must be an integer, got 2.5"),
                            ({"mode": "max"}, r"unknown mode 'max'; valid: sum, mean"),
                            ({"limit": True}, r"limit must be an integer, got True"),
                            ({"squared": 1}, r"squared must be true or false, got 1"),
                            ({"loss_weight": -1.0}, r"loss_weight must be >= 0"),
                            ({"margni": 1.0}, r"method 'one_decorator' has no parameter 'margni'")]:
        with pytest.raises(UserError, match=message):
            losses.build("one_decorator", **params)


def test_a_loss_params_dataclass_still_adds_rules_beyond_the_types(tmp_path):
    (tmp_path / "with_rules.py").write_text(
        "from dataclasses import dataclass\nfrom typing import ClassVar\nfrom torch import nn\n"
        "from kdbench.losses import LossParams, positive, register\n"
        "@dataclass(frozen=True)\nclass RuledParams(LossParams):\n    eps: float = 1e-8\n"
        "    kind: ClassVar[str | None] = 'channel-wise'\n"
        "    def check(self) -> None:\n        positive('eps', self.eps)\n"
        "@register('with_rules', RuledParams)\nclass Ruled(nn.Module):\n"
        "    def __init__(self, eps: float = 1e-8, loss_weight: float = 1.0):\n        super().__init__()\n")
    run = {**TINY_BASE, "teacher": {"config": "tiny_seg_teacher", "checkpoint": "t.pth"},
           "plugins": [str(tmp_path / "with_rules.py")]}
    term = {"method": "with_rules", "student_location": "decode_head.conv_seg"}
    with pytest.raises(UserError, match=r"distill\[0\]\.params: eps must be a finite number > 0, got 0"):
        parse_run({**run, "distill": [{**term, "params": {"eps": 0}}]})
    assert losses.declaration("with_rules")().distils() == "channel-wise"


def test_a_plugin_may_be_an_importable_module_name(tmp_path, monkeypatch):
    package = tmp_path / "my_lab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(PLUGIN, package / "kd_losses.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    # The file was imported above under its path: the module registers the same name again, from
    # the same class body, which the registry refuses as a second registration.
    text = (package / "kd_losses.py").read_text().replace('register("cosine"', 'register("cosine_module"')
    (package / "kd_losses.py").write_text(text)
    run = parse_run({**TINY_BASE, "plugins": ["my_lab.kd_losses"],
                     "teacher": {"config": "tiny_seg_teacher", "checkpoint": "t.pth"},
                     "distill": [{"method": "cosine_module", "student_location": "decode_head.conv_seg"}]})
    assert run.plugins == ("my_lab.kd_losses",) and run.distill[0].method == "cosine_module"


def test_plugin_paths_are_resolved_from_the_spec_and_leave_the_run_ids_alone(tmp_path):
    """Guarantee: Plugin paths are resolved from the spec and leave the run ids alone."""
    study = load_study(EXAMPLES / "plugin_cosine.yaml", tmp_path)
    cell = next(p for p in study.runs if p.params.get("method") == "cosine_logits")
    assert cell.run.plugins == (str(PLUGIN),) and cell.run.to_dict()["plugins"] == [str(PLUGIN)]
    copied = tmp_path / "elsewhere"
    copied.mkdir()
    for name in ("plugin_cosine.yaml", "cosine_kd.py"):
        shutil.copy(EXAMPLES / name, copied / name)
    # In another process (this one holds the original's registration of the name `cosine`).
    plan = subprocess.run([sys.executable, "-m", "kdbench.cli", "plan", str(copied / "plugin_cosine.yaml"), "--json",
                           "--no-model-check", "--no-data-check", "--results", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    moved = json.loads(plan.stdout)
    assert [r["run_id"] for r in moved] == [p.run_id for p in study.runs]  # the same runs, wherever it lives


@pytest.mark.slow
def test_a_study_with_a_plugin_loss_plans_runs_locally_and_reports_it_beside_the_built_ins(tmp_path, monkeypatch):
    """Guarantee: A study with a plugin loss plans runs locally and reports it beside the built ins."""
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "data"))
    study_file = str(EXAMPLES / "plugin_cosine.yaml")
    results = str(tmp_path / "results")
    code, out, err = run_cli("plan", study_file, "--results", results)
    assert code == 0 and "study plugin_cosine: 4 runs" in out, err
    code, out, err = run_cli("launch", study_file, "--results", results, "--no-progress")
    assert code == 0 and "4 of 4 runs complete" in out, out + err
    study = load_study(study_file, results)
    cell = next(p for p in study.runs if p.params.get("method") == "cosine_logits")
    spec = json.loads((study.directory / cell.run_id / "spec.json").read_text())
    assert spec["plugins"] == [str(PLUGIN)] and spec["distill"][0]["method"] == "cosine"
    lines = (study.directory / cell.run_id / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["iter"] == 20
    code, out, err = run_cli("report", study_file, "--results", results, "--format", "md")
    assert code == 0, err
    readme = (study.directory / "report" / "README.md").read_text()
    assert "cosine\\_logits" in readme and "cwd\\_logits" in readme and "0 of 4 runs have no result" not in readme
