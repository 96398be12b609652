"""Unified discovery over real sources (Registry on the py-evm chain, an HTTP discovery service, a loopback DHT):
dedup by address, global filters, priority, enable/disable, stats, fallback when a source fails."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
from tests.fixtures.servers import free_port, serve_app
from tests.unit.sdk.sdk_discovery_support import ETH, SMOL, TINY, register_host

from dinfer.chain.contracts.registry import RegistryClient
from dinfer.config import DiscoverySettings
from dinfer.crypto import Keypair
from dinfer.discovery_service import create_discovery_app
from dinfer.node.announcer import Announcer
from dinfer.retry import RetryPolicy
from dinfer.sdk.discovery import (
    DhtSource,
    DiscoveryError,
    DiscoveryUnavailable,
    HttpDiscoveryClient,
    RegistrySource,
    UnifiedDiscovery,
)
from dinfer.sdk.discovery.dht import dht_port, open_dht_node


async def test_merge_filter_priority_stats_and_fallback(registry: RegistryClient, actors, sender_for) -> None:  # type: ignore[no-untyped-def]
    offchain = Keypair.generate()
    await register_host(registry, sender_for(actors.host), "http://10.0.0.1:9000", {"region": "eu"}, [SMOL], ETH)
    await register_host(registry, sender_for(actors.host2), "http://10.0.0.2:9000", {"region": "us"}, [TINY], 3 * ETH)
    boot, _ = await open_dht_node(interface="127.0.0.1")
    async with AsyncExitStack() as stack:
        stack.callback(boot.stop)
        service_cm = serve_app(create_discovery_app())
        service = await service_cm.__aenter__()
        running = [True]

        async def stop_service() -> None:
            if running.pop() if running else False:
                await service_cm.__aexit__(None, None, None)

        stack.push_async_callback(stop_service)
        http_settings = DiscoverySettings(http_services=[service])
        dht_settings = DiscoverySettings(dht_port=free_port(), dht_bind="127.0.0.1",
                                         dht_bootstrap=[f"127.0.0.1:{dht_port(boot)}"])
        announcers = [
            Announcer(http_settings, actors.host.private_key, "http://10.0.0.1:9000", [SMOL], {"region": "eu"}),
            Announcer(http_settings, offchain.private_key, "http://10.0.0.3:9000", [SMOL], {"region": "eu"}),
            Announcer(dht_settings, actors.host2.private_key, "http://10.0.0.2:9000", [TINY], {"region": "us"}),
        ]
        for a in announcers:
            await a.start()
            stack.push_async_callback(a.stop)
        http = HttpDiscoveryClient(service, cache_ttl_s=0, background_refresh=False, timeout_s=1,
                                   retry=RetryPolicy(min_backoff=0.01, max_backoff=0.01, max_retries=1))
        dht = DhtSource([f"127.0.0.1:{dht_port(boot)}"], models=[SMOL, TINY], cache_ttl_s=0)
        discovery = UnifiedDiscovery([RegistrySource(registry, cache_ttl_s=0), http, dht])
        stack.push_async_callback(discovery.close)

        hosts = await discovery.discover_all_hosts()
        assert [h.address for h in hosts] == [actors.host2.address, actors.host.address, offchain.address]
        by = {h.address: h for h in hosts}
        assert set(by[actors.host.address].sources) == {"registry", "http"}
        assert set(by[actors.host2.address].sources) == {"registry", "dht"}
        assert by[offchain.address].sources == ("http",)  # announced over HTTP only
        assert by[actors.host2.address].stake == 3 * ETH  # chain stake survives the merge with the DHT record

        assert [h.address for h in await discovery.discover_all_hosts(TINY)] == [actors.host2.address]
        assert [h.address for h in await discovery.discover_all_hosts(min_stake=2 * ETH)] == [actors.host2.address]
        assert {h.address for h in await discovery.discover_all_hosts(SMOL, region="eu")} == {
            actors.host.address, offchain.address}

        discovery.set_discovery_priority(["http"])
        assert discovery.priority == ["http", "registry", "dht"]
        assert [h.address for h in await discovery.discover_all_hosts()] == [
            actors.host.address, offchain.address, actors.host2.address]
        with pytest.raises(DiscoveryError, match="unknown"):
            discovery.set_discovery_priority(["carrier-pigeon"])

        discovery.enable_discovery_source("registry", False)
        only_p2p = await discovery.discover_all_hosts(TINY)
        assert [(h.address, h.stake, h.sources) for h in only_p2p] == [(actors.host2.address, 0, ("dht",))]
        discovery.enable_discovery_source("registry", True)
        with pytest.raises(DiscoveryError, match="unknown"):
            discovery.enable_discovery_source("nope", False)

        stats = discovery.get_discovery_stats()
        assert set(stats) == {"registry", "http", "dht"}
        assert stats["registry"]["enabled"] and stats["registry"]["calls"] == 5  # skipped while disabled
        assert stats["http"]["success_rate"] == 1.0 and stats["dht"]["healthy"]
        assert all(s["avg_discovery_ms"] > 0 for s in stats.values())

        await stop_service()  # the discovery service goes down: the others still answer
        hosts = await discovery.discover_all_hosts(SMOL)
        assert [h.address for h in hosts] == [actors.host.address]  # offchain was only known over HTTP
        stats = discovery.get_discovery_stats()["http"]
        assert not stats["healthy"] and "unreachable" in stats["last_error"] and stats["success_rate"] < 1

        discovery.enable_discovery_source("registry", False)
        discovery.enable_discovery_source("dht", False)
        with pytest.raises(DiscoveryUnavailable, match="no discovery source answered"):
            await discovery.discover_all_hosts()
        discovery.enable_discovery_source("http", False)
        with pytest.raises(DiscoveryUnavailable, match="disabled"):
            await discovery.discover_all_hosts()


async def test_slow_source_times_out_and_others_answer(registry: RegistryClient, actors, sender_for) -> None:  # type: ignore[no-untyped-def]
    await register_host(registry, sender_for(actors.host), "http://10.0.0.1:9000", {}, [SMOL])
    silent = DhtSource([f"127.0.0.1:{free_port()}"], models=[SMOL], rpc_timeout_s=3)  # nobody answers UDP there
    # 1.5 s: the registry source (several py-evm reads) answers well within it even on a loaded CI machine (0.3 s
    # was missed once there); the silent DHT never does (its own RPC timeout is 3 s)
    discovery = UnifiedDiscovery([RegistrySource(registry), silent], source_timeout_s=1.5)
    try:
        assert [h.address for h in await discovery.discover_all_hosts(SMOL)] == [actors.host.address]
        dht = discovery.get_discovery_stats()["dht"]
        assert (dht["calls"], dht["successes"], dht["healthy"]) == (1, 0, False)
        assert "within 1.5 s" in dht["last_error"]
    finally:
        await discovery.close()


def test_duplicate_source_names_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        UnifiedDiscovery([HttpDiscoveryClient("http://127.0.0.1:1"), HttpDiscoveryClient("http://127.0.0.1:2")])
