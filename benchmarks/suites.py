"""``kdbench bench``: the benchmark suites, their options checked before any suite runs, each suite's
table as it finishes, and every figure with the machine as JSON or markdown."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from kdbench.errors import UserError

SUITES = ("grid", "data", "losses", "step")  # grid and data first: as on a login node, in a process without torch


def csv(text: str | None, flag: str, cast=str) -> list | None:
    """A comma-separated option as a list (None when not given)."""
    if text is None:
        return None
    try:
        values = [cast(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected a comma-separated list, got {text!r}") from None
    if not values:
        raise UserError(f"{flag}: empty list")
    return values


def _check_names(names: list[str] | None, flag: str, suite: str, chosen: str) -> None:
    """``--cases`` (step) and ``--methods`` (losses): known names, and a suite that runs them."""
    if names is None:
        return
    if chosen not in (suite, "all"):
        raise UserError(f"{flag}: applies to --suite {suite} (or all), not {chosen}")
    from kdbench.losses.params import BUILTINS
    from kdbench.schema import did_you_mean

    valid = [case[0] for case in importlib.import_module("benchmarks.step").CASES] if suite == "step" \
        else sorted(BUILTINS)
    unknown = next((name for name in names if name not in valid), None)
    if unknown is not None:
        what = "step case" if suite == "step" else "method"
        raise UserError(f"{flag}: unknown {what} {unknown!r}{did_you_mean(unknown, valid)}; valid: {', '.join(valid)}")


def check(suite: str, scale: float, repeats: int, outputs: dict[str, str | None], sizes: str,
          precisions: str | None, cases: str | None, methods: str | None) -> dict:
    """Every option checked before a suite prints a line (every file's directory exists, not found
    after minutes of timing); the parsed lists."""
    if not 0 < scale <= 1 or repeats < 1:
        raise UserError("--scale must be in (0, 1] and --repeats >= 1")
    for flag, target in outputs.items():
        if target and not Path(target).resolve().parent.is_dir():
            raise UserError(f"{flag}: {target}: its directory does not exist")
    parsed = {"sizes": csv(sizes, "--sizes", int)}
    if any(n < 1 for n in parsed["sizes"]):
        raise UserError(f"--sizes: grid sizes must be >= 1, got {sizes}")
    from kdbench.spec import PRECISIONS

    parsed["precisions"] = csv(precisions, "--precisions")
    if parsed["precisions"] and not set(parsed["precisions"]) <= set(PRECISIONS):
        raise UserError(f"--precisions: {precisions!r}; valid: {', '.join(PRECISIONS)}")
    parsed["cases"], parsed["methods"] = csv(cases, "--cases"), csv(methods, "--methods")
    _check_names(parsed["cases"], "--cases", "step", suite)
    _check_names(parsed["methods"], "--methods", "losses", suite)
    return parsed


def bench(suite: str = "all", scale: float = 1.0, repeats: int = 5, sizes: str = "1000,10000",
          precisions: str | None = None, cases: str | None = None, methods: str | None = None,
          json_file: str | None = None, markdown_file: str | None = None, command: str = "kdbench bench",
          say: Callable[[str], None] = print, progress: Callable[[str], None] = print) -> list[dict]:
    """Run the chosen suites (``all``: every one, in ``SUITES``' order), saying each one's table as
    it finishes; every figure also written with the machine to ``json_file`` and ``markdown_file``
    (the tables, under ``command``). Every row."""
    from benchmarks.machine import machine, markdown
    from kdbench.store import write_json_atomic, write_text_atomic

    parsed = check(suite, scale, repeats, {"--json": json_file, "--markdown": markdown_file}, sizes, precisions,
                   cases, methods)
    calls = {
        "losses": lambda m: m.run(scale=scale, repeats=repeats, methods=parsed["methods"], progress=progress),
        "step": lambda m: m.run(repeats=repeats, cases=parsed["cases"], precisions=parsed["precisions"]),
        "grid": lambda m: m.run(sizes=tuple(parsed["sizes"])),
        "data": lambda m: m.run(repeats=repeats),
    }
    suites = SUITES if suite == "all" else (suite,)
    rows: list[dict] = []
    tables: dict[str, str] = {}
    for name in suites:
        module = importlib.import_module(f"benchmarks.{name}")
        say(f"== kdbench bench --suite {name}")
        found = calls[name](module)
        tables[name] = module.format_rows(found)
        say(tables[name])
        rows.extend(found)
    facts = machine() if json_file or markdown_file else None  # one look at the machine for both files
    if json_file:
        write_json_atomic(json_file, {"machine": facts, "suites": list(suites), "results": rows})
        say(f"kdbench bench: wrote {json_file}")
    if markdown_file:
        write_text_atomic(markdown_file, markdown(facts, tables, command))
        say(f"kdbench bench: wrote {markdown_file}")
    return rows
