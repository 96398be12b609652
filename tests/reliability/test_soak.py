"""Soak (issue #13 part 5): 5 minutes of signed requests at concurrency 32 over 3 TAs with the tiny model, on a real
devnet. Error rate 0; host-node and ML-node RSS growth after warm-up below ``RSS_GROWTH_BOUND_MIB``; the hosts' tx
queues drain (no start/finish record pending at the end, no failed transaction); and the chain audit of
``test_faults`` holds (every answered request FINISHED once, balances conserved to the wei).

Full profile only (``make test-full``); bounded by time (``SOAK_S``) and count (``SOAK_MAX_REQUESTS``). Starts anvil:
wrap runs in ``flock /tmp/devnet.lock``. Its figures are printed (and quoted in docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest
from faults_support import (
    ChainAudit,
    LoadReport,
    Verdict,
    admin_stats,
    audit,
    client_key,
    fault_settings,
    fund,
    pid_of,
    rss_kib,
    sdk_client,
    signed_load,
    wait_drained,
)
from tests.e2e.network import BackgroundDevnet, running
from tests.fixtures.tiny_gguf import write_tiny_gguf

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

SOAK_S = 300.0
SOAK_CONCURRENCY = 32
SOAK_MAX_REQUESTS = 30_000
"""Count bound: far above what the tiny model serves in ``SOAK_S`` on a small machine (the time bound ends it)."""
WARMUP_S = 30.0
"""RSS baseline is taken this long into the run (imports, caches, connection pools and llama.cpp buffers settle)."""
RSS_GROWTH_BOUND_MIB = 64
"""Largest RSS growth of any host node or ML node process from the warm-up baseline to the end of the soak."""
SAMPLE_EVERY_S = 10.0


@pytest.fixture(scope="module")
def soak_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundDevnet]:
    model = write_tiny_gguf(tmp_path_factory.mktemp("soak-model") / "tiny-llama.gguf")
    with running(fault_settings(tmp_path_factory.mktemp("soak-devnet"), model)) as net:
        yield net


def _processes(net: BackgroundDevnet) -> dict[str, int]:
    names = [f"host{i}" for i in range(len(net.info.hosts))]
    names += [ml["node_id"] for h in net.info.hosts for ml in h["mlnodes"]]
    return {name: pid_of(net, name) for name in names}


def test_soak_five_minutes_at_concurrency_32(soak_net: BackgroundDevnet) -> None:
    net = soak_net
    pids = _processes(net)
    samples: list[tuple[float, dict[str, int]]] = []

    async def sample(stop: asyncio.Event) -> None:
        began = time.monotonic()
        while not stop.is_set():
            samples.append((time.monotonic() - began, {n: rss_kib(p) for n, p in pids.items()}))
            try:
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)
            except TimeoutError:
                pass

    async def main() -> tuple[LoadReport, Verdict, list[dict[str, Any]], float]:
        client = sdk_client(net, client_key(net, 8))
        try:
            chain = ChainAudit(client, [h["address"] for h in net.info.hosts])
            from_block = await chain.head()
            before = await chain.balances()
            deposit = await fund(client)
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample(stop))
            report = await signed_load(client, [h["url"] for h in net.info.hosts], total=SOAK_MAX_REQUESTS,
                                       concurrency=SOAK_CONCURRENCY, deadline_s=SOAK_S)
            stop.set()
            await sampler
            drained_at = time.monotonic()
            await wait_drained(net, timeout=120)
            drain_s = time.monotonic() - drained_at
            ledger = await chain.settle(from_block, timeout=60)
            verdict = audit(report, ledger, before, await chain.balances(), deposit)
            after_stats = [await admin_stats(h) for h in net.info.hosts]
        finally:
            await client.close()
        return report, verdict, after_stats, drain_s

    report, verdict, after_stats, drain_s = asyncio.run(main())
    base = next(s for t, s in samples if t >= WARMUP_S)
    end = samples[-1][1]
    growth = {n: round((end[n] - base[n]) / 1024, 1) for n in pids}
    lat = sorted(report.latencies_s)
    figures = {
        "requests": report.sent, "answered": len(report.answered), "errors": len(report.errors),
        "wall_s": round(report.wall_s, 1), "req_per_s": round(report.sent / report.wall_s, 2),
        "latency_p50_s": round(statistics.median(lat), 3),
        "latency_p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3),
        "rss_baseline_mib": {n: round(base[n] / 1024, 1) for n in pids},
        "rss_end_mib": {n: round(end[n] / 1024, 1) for n in pids},
        "rss_growth_mib": growth, "drain_s": round(drain_s, 1),
        "chain_writer": [s["chain_writer"] for s in after_stats],
        "verdict": {k: v for k, v in vars(verdict).items() if k != "problems"},
    }
    print("\nsoak figures: " + json.dumps(figures, indent=1))
    assert report.errors == [], report.errors[:5]
    verdict.check()
    assert verdict.expired == 0, "a request was left unfinished and had to be expired"
    writers = [s["chain_writer"] for s in after_stats]
    assert all(w["queue_depth"] == 0 and w["tx_failures"] == 0 for w in writers), writers
    # Under this load some first tokens miss ttft_timeout_s (each ML node serves one sequence at a time), the TA
    # falls back and reassigns, and the slow original executor may still finish: its finish or the reassign is then
    # refused, or the next executor's finish is a DuplicateFinish no-op. Harmless (the audit above holds), and each
    # such record needs a fallback behind it.
    assert sum(w["rejected"] + w["duplicate"] for w in writers) <= verdict.reassigned, writers
    assert max(growth.values()) < RSS_GROWTH_BOUND_MIB, growth
