"""Memory: RSS of a host-node process and an ML-node process, idle and under a bounded load, peak and after.

Run: ``.venv/bin/python -m bench.memory`` or ``make bench`` (writes ``bench/results/memory.json``).
Smoke run (20 requests, results to a scratch directory): ``DINFER_BENCH_SMALL=1 .venv/bin/python -m bench.memory``.

A devnet with one host (its TA proxies to its own executor) and one ML node serving the tiny random GGUF
(``tests/fixtures/tiny_gguf.py``) gets ``REQUESTS`` signed streaming chats at concurrency ``CONCURRENCY``.
A sampler thread reads RSS every ``SAMPLE_S`` (psutil when installed, else ``/proc/<pid>/status`` ``VmRSS``) of:

* the host node process (``dinfer node run``);
* the ML node process (``dinfer mlnode run``) alone, and its process tree (with the llama.cpp engine subprocess).

Phases: *idle* (after start-up, before any request), *load* (peak during the run), *after* (``SETTLE_S`` after the
last answer). The growth after − idle is what a long soak would accumulate per ``REQUESTS`` requests.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/memory.py` as well as `python -m bench.run_all`
    sys.path.insert(0, str(REPO))

from bench.common import SMALL, write_result  # noqa: E402
from dinfer.auth import sign_headers  # noqa: E402
from dinfer.chain.anvil import free_port, free_port_block  # noqa: E402
from dinfer.config import DevnetSettings  # noqa: E402
from dinfer.devnet import Devnet  # noqa: E402

TINY = "dinfer/tiny-random-llama"
REQUESTS = int(os.environ.get("DINFER_BENCH_MEMORY_REQUESTS", "20" if SMALL else "200"))
CONCURRENCY = int(os.environ.get("DINFER_BENCH_MEMORY_CONCURRENCY", "8"))
MAX_TOKENS = 16
SAMPLE_S = 0.2
IDLE_S = 3.0
SETTLE_S = 5.0
MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 when it is gone)."""
    try:
        import psutil  # optional: not a dependency of dinfer

        return int(psutil.Process(pid).memory_info().rss)
    except ImportError:
        pass
    except Exception:  # psutil.NoSuchProcess and friends
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from ``/proc/<pid>/task/*/children``)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


class RssSampler:
    """Samples named RSS series in a thread; ``phase(name)`` starts a new phase, ``stats()`` summarises each."""

    def __init__(self, series: dict[str, Any]) -> None:
        self.series = series  # name -> () -> bytes
        self.samples: dict[str, dict[str, list[int]]] = {}
        self._phase = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rss-sampler")

    def phase(self, name: str) -> None:
        self._phase = name

    def _loop(self) -> None:
        while not self._stop.is_set():
            row = self.samples.setdefault(self._phase, {})
            for name, read in self.series.items():
                row.setdefault(name, []).append(read())
            self._stop.wait(SAMPLE_S)

    @contextmanager
    def running(self) -> Iterator[RssSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)

    def stats(self) -> dict[str, dict[str, float]]:
        return {phase: {name: {"median_mib": statistics.median(v) / MIB, "peak_mib": max(v) / MIB,
                               "samples": len(v)} for name, v in rows.items()}
                for phase, rows in self.samples.items() if phase != "start"}


async def _load(url: str, ta: str, key: str, requests: int, concurrency: int) -> dict[str, Any]:
    sem = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def one(client: httpx.AsyncClient, i: int) -> None:
        body = json.dumps({"model": TINY, "messages": [{"role": "user", "content": f"memory bench {i}"}],
                           "max_tokens": MAX_TOKENS, "stream": True,
                           "stream_options": {"include_usage": True}}).encode()
        headers = {**sign_headers(body, key, ta), "content-type": "application/json"}
        async with sem:
            async with client.stream("POST", f"{url}/v1/chat/completions", content=body, headers=headers) as resp:
                await resp.aread()
                if resp.status_code != 200:
                    failures.append(f"{resp.status_code}: {resp.text[:200]}")

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=concurrency * 2)) as client:
        await asyncio.gather(*(one(client, i) for i in range(requests)))
    return {"requests": requests, "concurrency": concurrency, "failures": len(failures),
            "first_failures": failures[:3], "wall_s": time.perf_counter() - start}


async def measure(requests: int = REQUESTS, concurrency: int = CONCURRENCY) -> dict[str, Any]:
    from tests.fixtures.tiny_gguf import write_tiny_gguf

    tmp = Path(tempfile.mkdtemp(prefix="dinfer-bench-memory-"))
    model = write_tiny_gguf(tmp / "tiny-llama.gguf")
    settings = DevnetSettings(hosts=1, anvil_port=free_port(), base_port=free_port_block(130), block_time_s=0.5,
                              state_dir=tmp / "devnet", model=TINY, model_path=model, discovery=False,
                              host_rate_limit_per_minute=max(600, requests * 2),
                              params={"epoch_length_blocks": 100_000})  # no PoC cycle during the run
    async with Devnet(settings) as net:
        assert net.info is not None
        host = net.info.hosts[0]
        host_pid = net.supervisor.processes["host0"].pid
        ml_pid = net.supervisor.processes["host0-ml0"].pid
        assert host_pid is not None and ml_pid is not None
        sampler = RssSampler({
            "host_node": lambda: rss_bytes(host_pid),
            "mlnode": lambda: rss_bytes(ml_pid),
            "mlnode_tree": lambda: sum(rss_bytes(p) for p in descendants(ml_pid)),
        })
        with sampler.running():
            sampler.phase("idle")
            await asyncio.sleep(IDLE_S)
            sampler.phase("load")
            load = await _load(host["url"], host["address"], net.info.demo_client_key, requests, concurrency)
            sampler.phase("after")
            await asyncio.sleep(SETTLE_S)
    return {"model": TINY, "max_tokens": MAX_TOKENS, "load": load, "rss": sampler.stats(),
            "rss_source": "psutil" if _has_psutil() else "/proc/<pid>/status VmRSS"}


def _has_psutil() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


def summarize(res: dict[str, Any]) -> list[dict[str, Any]]:
    rss, load = res["rss"], res["load"]
    runs = f"{load['requests']} requests at concurrency {load['concurrency']}, {load['failures']} failed"
    rows = []
    for name, label in (("host_node", "host node"), ("mlnode", "ML node"), ("mlnode_tree", "ML node + engine")):
        idle, peak, after = (rss["idle"][name]["median_mib"], rss["load"][name]["peak_mib"],
                             rss["after"][name]["median_mib"])
        rows += [
            {"metric": f"RSS {label}, idle", "value": round(idle, 1), "unit": "MiB"},
            {"metric": f"RSS {label}, peak under load", "value": round(peak, 1), "unit": "MiB", "note": runs},
            {"metric": f"RSS {label}, growth after load", "value": round(after - idle, 1), "unit": "MiB",
             "note": f"{after:.1f} MiB {SETTLE_S:.0f} s after the last answer"},
        ]
    return rows


def main() -> dict[str, Any]:
    res = asyncio.run(measure())
    if res["load"]["failures"]:
        raise RuntimeError(f"{res['load']['failures']} requests failed: {res['load']['first_failures']}")
    rows = summarize(res)
    write_result("memory", rows, res)
    for row in rows:
        print(f"   {row['metric']}: {row['value']} {row['unit']}")
    return res


if __name__ == "__main__":
    main()
