"""The layers hold: every import in the code (function-level ones included) goes down or sideways
within its layer, never up, never between the two siblings, never round in a cycle, and never
reaches for another module's private names. Only the app layer composes the layers.

    core (kdbench: spec, study, expand, stages, ids, store, states, plan, plugins, vocab, losses' declarations)
      <- losses (kdbench.losses.<method>: torch)
        <- runners (training, preflight, launch/)        analysis  <- reports
          <- kdbench.app (one function per verb: composes runners, analysis and reports, as the CLI
             once did, so that the CLI, the tests and benchmarks/ call the same code)
            <- benchmarks (may use everything but the CLI)
              <- kdbench.cli (parses arguments, calls kdbench.app or benchmarks.suites, prints)
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kdbench", "runners", "analysis", "reports", "benchmarks")
CORE_LOSSES = {"kdbench.losses", "kdbench.losses.params", "kdbench.losses.registry", "kdbench.losses.signature"}
MAY_IMPORT = {
    "core": {"core"},
    "losses": {"core", "losses"},
    "runners": {"core", "losses", "runners"},
    "analysis": {"core", "analysis"},
    "reports": {"core", "analysis", "reports"},
    "app": {"core", "losses", "runners", "analysis", "reports", "app"},
    "benchmarks": {"core", "losses", "runners", "analysis", "reports", "app", "benchmarks"},
    "cli": {"core", "losses", "runners", "analysis", "reports", "app", "benchmarks", "cli"},
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "configs" in path.relative_to(ROOT).parts:  # mmengine config files, not modules
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def layer(module: str) -> str:
    if module == "kdbench.cli":
        return "cli"
    if module == "kdbench.app":
        return "app"
    if module.startswith("kdbench.losses"):
        return "core" if module in CORE_LOSSES else "losses"
    if module.startswith("kdbench"):
        return "core"
    return module.split(".")[0]


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int, list[str]]]:
    """(imported module, line, names taken from it) for every import of our packages, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                parts = name.split(".")[: -node.level if path.name != "__init__.py" else len(name.split("."))]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub, node.lineno, []) if sub in known else (base, node.lineno, [alias.name]))
    return [(module, line, names) for module, line, names in found if module.split(".")[0] in PACKAGES]


def graph() -> tuple[dict[str, set[str]], list[str]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    problems = []
    for name, path in known.items():
        for target, line, names in imports(name, path, known):
            where = f"{path.relative_to(ROOT)}:{line}"
            if target not in known:
                problems.append(f"{where}: imports {target}, which does not exist")
                continue
            if layer(target) not in MAY_IMPORT[layer(name)]:
                problems.append(f"{where}: {name} ({layer(name)}) imports {target} ({layer(target)})")
            private = [n for n in names if n.startswith("_")]
            if private and target != name:
                problems.append(f"{where}: {name} takes private {', '.join(private)} from {target}")
            if target != name:
                edges[name].add(target)
    return edges, problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_a_layer_above_its_own_or_a_private_name_of_another():
    """Guarantee: The layers hold: every import (function-level ones included) goes down or sideways within its layer,
    `runners` and `analysis` never import each other, only `kdbench.app` (and above it `benchmarks` and the CLI)
    composes them, there is no import cycle and no module takes another's private names."""
    _, problems = graph()
    assert problems == []


def test_no_import_cycle_between_modules():
    """Guarantee: No import cycle between modules."""
    edges, _ = graph()
    assert cycles(edges) == []


def test_the_layer_test_sees_an_upward_import_a_private_one_and_a_cycle(tmp_path):
    """Guarantee: The layer test sees an upward import a private one and a cycle."""
    assert layer("kdbench.spec") == "core" and layer("kdbench.losses.cwd") == "losses"
    assert "runners" not in MAY_IMPORT["core"] and "analysis" not in MAY_IMPORT["runners"]
    assert layer("kdbench.app") == "app" and "app" not in MAY_IMPORT["reports"] and "cli" not in MAY_IMPORT["app"]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    module = tmp_path / "x.py"
    module.write_text("def f():\n    from runners.train import _device\n    import analysis.collect\n")
    found = imports("kdbench.x", module, modules())
    assert ("runners.train", 2, ["_device"]) in found and ("analysis.collect", 3, []) in found
