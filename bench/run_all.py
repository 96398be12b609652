"""`make bench`: run every benchmark module in bench/ (each has ``main()``), then write bench/results/summary.md."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from bench.common import RESULTS, summary_markdown

BENCH_DIR = Path(__file__).resolve().parent
SKIP = {"__init__", "common", "run_all"}


def main() -> int:
    only = set(sys.argv[1:])
    failures = []
    for path in sorted(BENCH_DIR.glob("*.py")):
        name = path.stem
        if name in SKIP or (only and name not in only):
            continue
        module = importlib.import_module(f"bench.{name}")
        if not hasattr(module, "main"):
            continue
        print(f"== bench/{name}.py", flush=True)
        start = time.perf_counter()
        try:
            module.main()
        except Exception as exc:  # one failing bench must not hide the others' figures
            failures.append(name)
            print(f"   FAILED: {type(exc).__name__}: {exc}", flush=True)
        print(f"   {time.perf_counter() - start:.1f} s", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)  # a scratch directory under DINFER_BENCH_SMALL
    (RESULTS / "summary.md").write_text(summary_markdown())
    print(summary_markdown())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
