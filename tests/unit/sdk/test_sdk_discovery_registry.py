"""Registry discovery against the in-process chain: active hosts, models from ML nodes, stake, metadata checks,
cache, and event watching."""

from __future__ import annotations

import asyncio
import logging

import pytest
from tests.unit.sdk.sdk_discovery_support import ETH, SMOL, TINY, register_host

from dinfer.chain.contracts.registry import RegistryClient
from dinfer.sdk.discovery import RegistrySource


@pytest.fixture
async def hosts(registry: RegistryClient, chain, actors, sender_for):  # type: ignore[no-untyped-def]
    """host: SMOL+TINY, eu-west, 2 ETH; host2: TINY, us-east, 1 ETH; non_owner: malformed metadata."""
    await register_host(registry, sender_for(actors.host), "http://10.0.0.1:9000",
                        {"region": "eu-west", "prices": {SMOL: 7}}, [SMOL, TINY], 2 * ETH)
    await register_host(registry, sender_for(actors.host2), "http://10.0.0.2:9000", {"region": "us-east"}, [TINY])
    await register_host(registry, sender_for(actors.non_owner), "http://10.0.0.3:9000", "{not json", [SMOL])
    return actors


async def test_active_hosts_with_models_stake_and_metadata(registry: RegistryClient, hosts, caplog) -> None:  # type: ignore[no-untyped-def]
    source = RegistrySource(registry)
    with caplog.at_level(logging.WARNING):
        found = {h.address: h for h in await source.discover()}
    assert set(found) == {hosts.host.address, hosts.host2.address}
    first = found[hosts.host.address]
    assert (first.url, first.models, first.stake, first.region, first.price(SMOL), first.sources) == (
        "http://10.0.0.1:9000", (SMOL, TINY), 2 * ETH, "eu-west", 7, ("registry",))
    assert found[hosts.host2.address].models == (TINY,)
    assert any(hosts.non_owner.address in r.message and "not JSON" in r.message for r in caplog.records)
    assert source.stats.rejected == 1
    assert [h.address for h in await source.discover(SMOL)] == [hosts.host.address]
    assert await source.discover("unknown/model") == []


async def test_cache_ttl_and_stats(registry: RegistryClient, hosts, sender_for, actors) -> None:  # type: ignore[no-untyped-def]
    source = RegistrySource(registry, cache_ttl_s=60)
    await source.discover()
    await source.discover(TINY)
    stats = source.stats.as_dict()
    assert (stats["calls"], stats["successes"], stats["cache_hits"], stats["healthy"]) == (2, 2, 1, True)
    assert stats["cache_hit_rate"] == 0.5 and stats["avg_discovery_ms"] > 0
    # a change on chain is not seen until the TTL expires (or the watcher runs)
    await registry.with_sender(sender_for(actors.host2)).update_host("http://moved:9000", "{}")
    assert {h.url for h in await source.discover(TINY)} == {"http://10.0.0.1:9000", "http://10.0.0.2:9000"}
    source.cache_ttl_s = 0
    assert {h.url for h in await source.discover(TINY)} == {"http://10.0.0.1:9000", "http://moved:9000"}


async def test_unbonded_host_is_not_active(registry: RegistryClient, hosts, sender_for, actors) -> None:  # type: ignore[no-untyped-def]
    await registry.with_sender(sender_for(actors.host2)).request_unbond(ETH)
    found = await RegistrySource(registry).discover()
    assert [h.address for h in found] == [hosts.host.address]


async def test_watch_follows_registry_events(registry: RegistryClient, chain, hosts, sender_for, actors) -> None:  # type: ignore[no-untyped-def]
    source = RegistrySource(registry, cache_ttl_s=3600, poll_interval_s=0.05)
    source.start_watching()
    await source.wait_watching()
    assert source.watching
    newcomer = chain.accounts[6]
    await register_host(registry, sender_for(newcomer), "http://10.0.0.6:9000", {"region": "ap"}, [SMOL])
    as_host = registry.with_sender(sender_for(actors.host))
    await as_host.update_host("http://10.0.0.11:9000", '{"region": "eu-central"}')
    await as_host.submit_hardware_diff([], ["n0"])  # host stops serving SMOL
    await registry.with_sender(sender_for(actors.host2)).request_unbond(ETH)  # host2 drops below min collateral

    async def settled() -> dict[str, object]:
        while True:
            found = {h.address: h for h in await source.discover()}
            if newcomer.address in found and hosts.host2.address not in found \
                    and found[hosts.host.address].models == (TINY,):
                return found
            await asyncio.sleep(0.05)

    found = await asyncio.wait_for(settled(), 10)
    moved = found[hosts.host.address]
    assert (moved.url, moved.region) == ("http://10.0.0.11:9000", "eu-central")  # type: ignore[attr-defined]
    assert [h.address for h in await source.discover(SMOL)] == [newcomer.address]
    assert source.events_handled >= 4 and source.stats.cache_hits == source.stats.calls
    await source.close()
    assert not source.watching


async def test_chain_failure_is_a_typed_error(registry: RegistryClient, hosts) -> None:  # type: ignore[no-untyped-def]
    from web3 import AsyncWeb3

    from dinfer.chain.deploy import bind
    from dinfer.sdk.discovery import DiscoveryUnavailable

    dead = AsyncWeb3(AsyncWeb3.AsyncHTTPProvider("http://127.0.0.1:9", request_kwargs={"timeout": 1}))
    source = RegistrySource(RegistryClient(bind(dead, "Registry", registry.address)))
    with pytest.raises(DiscoveryUnavailable, match="registry"):
        await source.discover()
    assert not source.stats.healthy and source.stats.success_rate == 0
    assert source.stats.last_error is not None
