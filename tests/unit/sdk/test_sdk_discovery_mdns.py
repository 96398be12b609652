"""mDNS on loopback: the host-side Announcer registers a ``_dinfer._tcp`` service, MdnsSource finds and verifies it."""

from __future__ import annotations

import asyncio
import socket
import time

from tests.unit.sdk.sdk_discovery_support import SMOL, TINY, announcement
from zeroconf.asyncio import AsyncServiceInfo

from dinfer.announce import Announcement, to_txt_properties
from dinfer.config import DiscoverySettings
from dinfer.crypto import Keypair
from dinfer.node.announcer import Announcer
from dinfer.sdk.discovery import SERVICE_TYPE, MdnsSource
from dinfer.sdk.discovery.mdns import open_zeroconf

LOOPBACK = ["127.0.0.1"]


async def test_announced_host_found_quickly_and_updates_follow() -> None:
    key = Keypair.generate()
    announcer = Announcer(DiscoverySettings(mdns=True, mdns_interfaces=LOOPBACK, announce_interval_s=60),
                          key.private_key, "http://127.0.0.1:9300", [SMOL], {"region": "lab"})
    source = MdnsSource(interfaces=LOOPBACK, settle_s=0.3)
    try:
        await announcer.start()
        assert announcer.status["mdns"].published == 1
        started = time.perf_counter()
        record = await source.wait_for_host(key.address, timeout_s=5)
        assert time.perf_counter() - started < 1.0
        assert (record.url, record.models, record.region, record.sources) == (
            "http://127.0.0.1:9300", (SMOL,), "lab", ("mdns",))
        assert [h.address for h in await source.discover(SMOL)] == [key.address]
        assert await source.discover(TINY) == []
        assert source.stats.cache_hits >= 1

        announcer.update(models=[SMOL, TINY])
        await announcer.publish()
        deadline = time.monotonic() + 5
        while not [h for h in await source.discover(TINY) if h.address == key.address]:
            assert time.monotonic() < deadline, "updated TXT record never seen"
            await asyncio.sleep(0.05)
    finally:
        await announcer.stop()
        await source.close()


async def test_bad_signature_and_expired_services_are_dropped() -> None:
    good, forged_key, stale_key = Keypair.generate(), Keypair.generate(), Keypair.generate()
    signed = announcement(forged_key, url="http://127.0.0.1:9401").to_json().decode()
    forged_props = to_txt_properties(Announcement.from_json(signed.replace("9401", "9499")))  # URL changed
    stale = announcement(stale_key, url="http://127.0.0.1:9402", age_s=3600)
    publisher = open_zeroconf(LOOPBACK)
    announcer = Announcer(DiscoverySettings(mdns=True, mdns_interfaces=LOOPBACK), good.private_key,
                          "http://127.0.0.1:9400", [SMOL])
    source = MdnsSource(interfaces=LOOPBACK)
    try:
        for name, props in (("forged", forged_props), ("stale", to_txt_properties(stale))):
            info = AsyncServiceInfo(SERVICE_TYPE, f"test-{name}-{good.address[2:10]}.{SERVICE_TYPE}", port=9401,
                                    addresses=[socket.inet_aton("127.0.0.1")], properties=props,
                                    server=f"test-{name}-{good.address[2:10]}.local.")
            await publisher.async_register_service(info)
        await announcer.start()
        await source.wait_for_host(good.address, timeout_s=5)
        deadline = time.monotonic() + 5
        while source.stats.rejected < 2:
            assert time.monotonic() < deadline, f"rejected={source.stats.rejected}"
            await asyncio.sleep(0.05)
        addresses = {h.address for h in await source.discover()}
        assert good.address in addresses
        assert not addresses & {forged_key.address, stale_key.address}
    finally:
        await announcer.stop()
        await publisher.async_close()
        await source.close()


async def test_nothing_announced_answers_empty() -> None:
    source = MdnsSource(interfaces=LOOPBACK, settle_s=0.2)
    try:
        assert await source.discover("no/such-model") == [] and source.stats.calls == 1 and source.stats.healthy
    finally:
        await source.close()
