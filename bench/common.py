"""Shared benchmark plumbing: results as JSON in bench/results/, plus a Markdown summary for the README."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SMALL = os.environ.get("DINFER_BENCH_SMALL", "") not in ("", "0")
"""Smoke configuration (``DINFER_BENCH_SMALL=1``): benchmarks that support it run a few requests only. Its figures
are not comparable, so they go to a scratch directory instead of the committed ``bench/results/``."""
RESULTS = (Path(tempfile.gettempdir()) / "dinfer-bench-smoke" if SMALL
           else Path(__file__).resolve().parent / "results")


def machine() -> dict[str, Any]:
    """Where a figure was measured (figures are only comparable on the same machine)."""
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "system": platform.system(),
    }


def write_result(name: str, summary: list[dict[str, Any]], details: dict[str, Any] | None = None) -> Path:
    """Save ``bench/results/<name>.json``. ``summary`` rows are ``{"metric", "value", "unit", "goal"?, "note"?}``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        **({"smoke": True} if SMALL else {}),
        "summary": summary,
        "details": details or {},
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def summary_markdown() -> str:
    """One table over every results file (used in README and bench/results/summary.md)."""
    lines = ["| benchmark | metric | value | goal | date | note |", "|---|---|---:|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        for row in data.get("summary", []):
            value = row["value"]
            shown = f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
            lines.append(
                f"| {data['benchmark']} | {row['metric']} | {shown} {row.get('unit', '')} | {row.get('goal', '')} "
                f"| {data['date']} | {row.get('note', '')} |"
            )
    return "\n".join(lines) + "\n"


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
