"""The selection and memory benchmarks' measuring parts, at toy sizes, and their rows in the summary table."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import bench.common
import pytest
from bench import memory, routing_overhead, selection
from bench.common import summary_markdown, write_result

from dinfer import selection as spec


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    return tmp_path


def test_run_all_finds_the_new_benchmarks() -> None:
    for name in ("selection", "memory", "routing_overhead"):
        assert callable(importlib.import_module(f"bench.{name}").main)
    assert 32 in routing_overhead.RUNS and routing_overhead.HUNG_TTFT_TIMEOUT_S > 0


def test_selection_bench_walks_the_order_like_pick_executor(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selection, "IDS", 100)
    res = selection.measure((300,))
    r = res["n300"]
    assert r["members"] == 300 and r["build_ms"] >= 0
    for pct in (0, 10):
        o = r[f"order_inactive_{pct}pct"]
        assert o["ids"] == selection.IDS and 0 < o["p50_us"] <= o["p99_us"]
    assert r["order_inactive_0pct"]["max_skipped"] == 0 and r["order_inactive_10pct"]["mean_skipped"] > 0
    # The walk over cached prefix sums picks what the one-call API picks.
    weights = list(range(1, 41))
    active = [i % 7 != 0 for i in range(40)]
    cumulative = spec.prefix_sums(weights)
    for iid in selection._ids(50, 1):
        first, skipped = spec.pick_executor(iid, weights, active, selection.MAX_DRAWS)
        assert selection._first_eligible(iid, cumulative, active) == (first, len(skipped))
    write_result("selection", selection.summarize(res))
    table = summary_markdown()
    assert "| selection | executor order p50, 300 members, 10 % non-ACTIVE |" in table
    assert "| selection | pick_executor p50, 300 members, 10 % non-ACTIVE |" in table


def test_rss_of_a_real_process_and_its_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(64 << 20); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while memory.rss_bytes(child.pid) < 64 << 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert memory.rss_bytes(child.pid) >= 64 << 20
        assert child.pid in memory.descendants(os.getpid())
        tree = sum(memory.rss_bytes(p) for p in memory.descendants(os.getpid()))
        assert tree >= memory.rss_bytes(os.getpid()) + (64 << 20)
    finally:
        child.kill()
        child.wait(10)
    assert memory.rss_bytes(child.pid) == 0  # gone


def test_memory_rows_render(results: Path) -> None:
    def phase(mib: float) -> dict[str, dict[str, float]]:
        return {n: {"median_mib": mib, "peak_mib": mib + 5.0, "samples": 3} for n in ("host_node", "mlnode",
                                                                                     "mlnode_tree")}

    res = {"rss": {"idle": phase(100.0), "load": phase(110.0), "after": phase(102.0)},
           "load": {"requests": 20, "concurrency": 8, "failures": 0}}
    rows = memory.summarize(res)
    assert {r["metric"]: r["value"] for r in rows}["RSS host node, growth after load"] == 2.0
    write_result("memory", rows)
    assert "| memory | RSS ML node + engine, peak under load | 115.00 MiB |" in summary_markdown()
