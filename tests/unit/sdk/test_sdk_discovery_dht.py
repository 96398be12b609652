"""A 3-node kademlia DHT on loopback: a bootstrap node, a host announcing through its Announcer, a client looking up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from kademlia.network import Server
from tests.unit.sdk.sdk_discovery_support import SMOL, TINY, announcement

from dinfer.announce import dht_key, parse_dht_value
from dinfer.chain.anvil import free_port
from dinfer.config import DiscoverySettings
from dinfer.crypto import Keypair
from dinfer.node.announcer import Announcer
from dinfer.sdk.discovery import BadDiscoveryResponse, DhtSource, DiscoveryUnavailable
from dinfer.sdk.discovery.dht import dht_port, open_dht_node


@pytest.fixture
async def bootstrap() -> AsyncIterator[Server]:
    node, _ = await open_dht_node(port=0, interface="127.0.0.1")
    yield node
    node.stop()


def _settings(boot: Server, **extra: object) -> DiscoverySettings:
    return DiscoverySettings(dht_port=free_port(), dht_bind="127.0.0.1",
                             dht_bootstrap=[f"127.0.0.1:{dht_port(boot)}"], **extra)  # type: ignore[arg-type]


async def test_announce_on_one_node_found_from_another(bootstrap: Server) -> None:
    key = Keypair.generate()
    announcer = Announcer(_settings(bootstrap), key.private_key, "http://127.0.0.1:9500", [SMOL], {"region": "x"})
    source = DhtSource([f"127.0.0.1:{dht_port(bootstrap)}"], models=[SMOL, TINY], cache_ttl_s=60)
    try:
        await announcer.start()
        assert announcer.status["dht"].published == 1 and announcer.dht_port
        found = await source.discover(SMOL)
        assert [(h.address, h.url, h.region, h.sources) for h in found] == [
            (key.address, "http://127.0.0.1:9500", "x", ("dht",))]
        assert await source.discover(TINY) == []
        assert [h.address for h in await source.discover()] == [key.address]  # the configured models
        assert source.stats.cache_hits == 2  # SMOL and TINY were cached by the first two calls
        assert source.stats.success_rate == 1.0
    finally:
        await announcer.stop()
        await source.close()


async def test_two_hosts_share_a_model_key(bootstrap: Server) -> None:
    keys = [Keypair.generate(), Keypair.generate()]
    announcers = [Announcer(_settings(bootstrap), k.private_key, f"http://127.0.0.1:95{i}0", [SMOL])
                  for i, k in enumerate(keys)]
    source = DhtSource([f"127.0.0.1:{dht_port(bootstrap)}"], cache_ttl_s=0)
    try:
        for a in announcers:
            await a.start()
        assert {h.address for h in await source.discover(SMOL)} == {k.address for k in keys}
        await announcers[0].publish()  # re-announcing replaces the host's entry, keeps the other host's
        items = parse_dht_value(await bootstrap.get(dht_key(SMOL)))
        assert sorted(i["address"] for i in items) == sorted(k.address for k in keys)
    finally:
        for a in announcers:
            await a.stop()
        await source.close()


async def test_bad_entries_dropped_garbage_value_is_a_typed_error(bootstrap: Server) -> None:
    writer, _ = await open_dht_node(interface="127.0.0.1", bootstrap=[("127.0.0.1", dht_port(bootstrap))])
    good, expired = announcement(), announcement(age_s=3600)
    forged = {**announcement().to_dict(), "url": "http://evil:1"}
    source = DhtSource([f"127.0.0.1:{dht_port(bootstrap)}"], cache_ttl_s=0)
    try:
        assert await writer.set(dht_key(SMOL), orjson.dumps([good.to_dict(), expired.to_dict(), forged, 7]).decode())
        assert [h.address for h in await source.discover(SMOL)] == [good.address]
        assert source.stats.rejected == 3
        assert await writer.set(dht_key(TINY), "<html>not json</html>")
        with pytest.raises(BadDiscoveryResponse, match="not a list"):
            await source.discover(TINY)
        assert not source.stats.healthy and "BadDiscoveryResponse" in str(source.stats.last_error)
    finally:
        writer.stop()
        await source.close()


async def test_unreachable_bootstrap_is_unavailable() -> None:
    source = DhtSource([f"127.0.0.1:{free_port()}"], models=[SMOL], rpc_timeout_s=0.3)
    try:
        with pytest.raises(DiscoveryUnavailable, match="bootstrap"):
            await source.discover(SMOL)
        assert source.stats.calls == 1 and source.stats.successes == 0
    finally:
        await source.close()
    with pytest.raises(ValueError, match="HOST:PORT"):
        DhtSource(["no-port"])
