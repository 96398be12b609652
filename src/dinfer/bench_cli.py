"""``dinfer bench``: run the benchmarks of a dinfer checkout (``bench/``) and print the summary table.

The benchmarks are not part of the installed package (they need the test fixtures and write
``bench/results/``), so the command runs them from the checkout it is started in, like ``make bench``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from dinfer.errors import ConfigError


def bench(
    names: list[str] = typer.Argument(None, help="Benchmarks to run (file names in bench/ without .py); all if none."),
    checkout: Path = typer.Option(Path("."), help="The dinfer checkout holding bench/."),
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
    code = subprocess.call([sys.executable, "-m", "bench.run_all", *(names or [])], cwd=root)
    if code:
        raise typer.Exit(code)
