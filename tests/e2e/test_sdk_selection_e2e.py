"""HostSelector against the shared devnet: 3 real host nodes, one behind a delaying loopback proxy, reputation read
from the real chain after a real inference."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from network import TINY, BackgroundDevnet, signed_chat, wait_status
from tests.fixtures.servers import serve_app

from dinfer.chain.backends import connect
from dinfer.chain.contracts.epochs import EpochsClient
from dinfer.chain.contracts.inference import InferenceClient
from dinfer.chain.deploy import bind
from dinfer.sdk import ChainReputation, HostSelector, Strategy, SyncHostSelector
from dinfer.sdk.hosts import HostMetadata, HostRecord

pytestmark = pytest.mark.e2e

PRICE = 100_000_000  # the tiny model's governance price (genesis/devnet.toml)
DELAY_S = 0.3


class DelayingProxy:
    """A real ASGI reverse proxy: waits ``delay_s``, then forwards the request to ``target`` and relays the answer."""

    def __init__(self, target: str, delay_s: float) -> None:
        self.target, self.delay_s = target, delay_s
        self.forwarded = 0
        self._http: httpx.AsyncClient | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self._http = httpx.AsyncClient(base_url=self.target, timeout=60)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    assert self._http is not None
                    await self._http.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await asyncio.sleep(self.delay_s)
        assert self._http is not None
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"host", b"content-length")]
        upstream = await self._http.request(scope["method"], scope["path"], params=scope["query_string"].decode(),
                                            headers=headers, content=body)
        self.forwarded += 1
        await send({"type": "http.response.start", "status": upstream.status_code,
                    "headers": [(k.encode(), v.encode()) for k, v in upstream.headers.items()
                                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")]})
        await send({"type": "http.response.body", "body": upstream.content})


def records(network: BackgroundDevnet, urls: list[str] | None = None) -> list[HostRecord]:
    """The devnet hosts as discovery would report them: host 0 at 3×, host 1 at 2× the governance price, host 2
    advertising no price."""
    prices: list[dict[str, int]] = [{TINY: 3 * PRICE}, {TINY: 2 * PRICE}, {}]
    out = []
    for i in range(3):
        h = network.host(i)
        meta = HostMetadata(prices=prices[i], region="local", hardware="cpu", max_concurrent=4)
        out.append(HostRecord(h["address"], urls[i] if urls else h["url"], models=(TINY,), metadata=meta))
    return out


@asynccontextmanager
async def chain_clients(network: BackgroundDevnet) -> AsyncIterator[tuple[InferenceClient, EpochsClient]]:
    w3 = connect([network.info.rpc_url])
    contracts = network.info.contracts
    try:
        yield (InferenceClient(bind(w3, "Inference", contracts.address("Inference"))),
               EpochsClient(bind(w3, "Epochs", contracts.address("Epochs"))))
    finally:
        await w3.provider.disconnect()


def run_one_inference(network: BackgroundDevnet) -> str:
    """A real paid request through host 1; returns the executor's address once the chain recorded it."""
    host1 = network.host(1)
    body, headers = signed_chat(network.info.demo_client_key, host1["address"], "rank me", max_tokens=4)
    r = httpx.post(f"{host1['url']}/v1/chat/completions", content=body, headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    done = wait_status(host1["url"], r.headers["x-dinfer-inference-id"], "FINISHED")
    return str(done["executor"])


async def test_every_strategy_on_real_hosts_with_a_slow_one(network: BackgroundDevnet, tmp_path: Path) -> None:
    executor = await asyncio.to_thread(run_one_inference, network)
    host0 = network.host(0)
    proxy = DelayingProxy(host0["url"], DELAY_S)
    async with serve_app(proxy) as proxy_url:
        hosts = records(network, [proxy_url, network.host(1)["url"], network.host(2)["url"]])
        slow = hosts[0].address
        reputation = ChainReputation.connect(network.info.rpc_url, network.info.contracts)
        selector = HostSelector(stats_path=tmp_path / "stats.sqlite", reputation=reputation)
        try:
            # latency: the proxied host is measured through the proxy and avoided
            ranked = await selector.rank_hosts(hosts, TINY, "lowest_latency")
            assert ranked[-1].host.address == slow
            assert ranked[-1].details["latency_s"] >= DELAY_S > ranked[0].details["latency_s"]
            assert proxy.forwarded == selector.latency.samples
            assert (await selector.select_optimal_host(hosts, TINY, "lowest_latency")).address != slow
            # price: host 2 advertises nothing and is priced at the governance price
            cheapest = await selector.select_optimal_host(hosts, TINY, "lowest_price", governance_price=PRICE)
            assert cheapest.address == hosts[2].address
            # reputation: the details are the chain's numbers
            async with chain_clients(network) as (inference, epochs):
                epoch = await epochs.current_epoch()
                validation = await inference.validation_client()
                by_host = {r.host.address: r for r in await selector.rank_hosts(hosts, TINY, "best_reputation")}
                for h in hosts:
                    stats = await inference.executor_stats(epoch, h.address)
                    d = by_host[h.address].details
                    assert (d["epoch"], d["missed"], d["total"]) == (epoch, stats.missed, stats.total)
                    assert d["invalid"] == await validation.invalid_count(epoch, h.address)
                    assert d["stake"] > 0
                assert by_host[executor].details["total"] >= 1
            # every strategy hands out a serving host
            addresses = {h.address for h in hosts}
            for strategy in Strategy:
                picked = await selector.select_optimal_host(hosts, TINY, strategy, governance_price=PRICE)
                assert picked.address in addresses, strategy
            composite = await selector.rank_hosts(hosts, TINY, "composite", governance_price=PRICE)
            assert composite[0].host.address != slow  # slowest and most expensive
            assert {"latency_norm", "price_norm", "reputation_norm", "reliability_norm", "load_norm"} <= set(
                composite[0].details)
        finally:
            await selector.aclose()


def test_sync_selector_reads_the_devnet(network: BackgroundDevnet, tmp_path: Path) -> None:
    hosts = records(network)
    with SyncHostSelector(stats_path=tmp_path / "stats.sqlite", rpc_url=network.info.rpc_url,
                          deployment=network.info.contracts) as selector:
        best = selector.select_optimal_host(hosts, TINY, "best_reputation")
        assert best.address in {h.address for h in hosts}
        ranked = selector.rank_hosts(hosts, TINY, "lowest_latency")
        assert len(ranked) == 3 and all(r.details["latency_s"] > 0 for r in ranked)
        selector.release(best)
        selector.record_outcome(best, True, 0.5)
    with SyncHostSelector(stats_path=tmp_path / "stats.sqlite") as reopened:
        assert reopened.performance(best).successes == 1
