"""`dinfer bench` refuses what it cannot run with one line naming the fix (the benchmarks themselves run in
`make bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dinfer.cli", "bench", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def test_unknown_benchmark_lists_the_available_ones() -> None:
    proc = _bench("nope", cwd=REPO)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "unknown benchmark(s) nope" in proc.stderr and "validation" in proc.stderr


def test_outside_a_checkout_says_where_to_run_it(tmp_path: Path) -> None:
    proc = _bench(cwd=tmp_path)
    assert proc.returncode == 1 and "in a dinfer checkout" in " ".join(proc.stderr.split())
