"""``dinfer bench``: run the benchmarks of a dinfer checkout (``bench/``) and print the summary table.

The benchmarks are not part of the installed package (they need the test fixtures and write
``bench/results/``), so the command runs them from the checkout it is started in, like ``make bench``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer

from dinfer.cli_output import emit_json, json_option
from dinfer.errors import ConfigError

STDERR_FD = 2
"""The process's real stderr (a file descriptor, so it works even while ``sys.stderr`` is replaced)."""


def bench(
    names: list[str] = typer.Argument(None, help="Benchmarks to run (file names in bench/ without .py); all if none."),
    checkout: Path = typer.Option(Path("."), help="The dinfer checkout holding bench/."),
    as_json: bool = json_option(),
) -> None:
    """Run benchmarks, write bench/results/*.json and the summary table. Example: `dinfer bench validation`"""
    root = checkout.resolve()
    runner = root / "bench" / "run_all.py"
    if not runner.is_file():
        raise ConfigError(f"no bench/run_all.py under {root}: run `dinfer bench` in a dinfer checkout "
                          "(or pass --checkout DIR)")
    available = sorted(p.stem for p in (root / "bench").glob("*.py") if p.stem not in {"__init__", "common", "run_all"})
    unknown = [n for n in names or [] if n not in available]
    if unknown:
        raise ConfigError(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available)}")
    # With --json the runner's progress and table go to stderr; stdout gets only the results files' contents.
    code = subprocess.call([sys.executable, "-m", "bench.run_all", *(names or [])], cwd=root,
                           stdout=STDERR_FD if as_json else None)
    if as_json:
        results = root / "bench" / "results"
        emit_json({"exit_code": code, "results": {
            name: json.loads((results / f"{name}.json").read_text())
            for name in (names or available) if (results / f"{name}.json").is_file()}})
    if code:
        raise typer.Exit(code)
