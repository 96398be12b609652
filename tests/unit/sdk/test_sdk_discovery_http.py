"""The ``dinfer discovery`` service over real loopback HTTP, and its SDK client (cache, refresh, retries)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from tests.fixtures.servers import free_port, serve_app
from tests.unit.sdk.sdk_discovery_support import ETH, SMOL, TINY, announcement, register_host

from dinfer.chain.contracts.registry import RegistryClient
from dinfer.config import DiscoverySettings
from dinfer.crypto import Keypair
from dinfer.discovery_service import DiscoveryServiceConfig, create_discovery_app
from dinfer.node.announcer import Announcer
from dinfer.retry import RetryPolicy
from dinfer.sdk.discovery import (
    BadDiscoveryResponse,
    DiscoveryUnavailable,
    HostFilter,
    HttpDiscoveryClient,
    RegistrySource,
)

FAST_RETRY = RetryPolicy(min_backoff=0.01, max_backoff=0.02, max_retries=1)


@pytest.fixture
async def service() -> AsyncIterator[str]:
    async with serve_app(create_discovery_app(DiscoveryServiceConfig(max_age_s=600))) as base:
        yield base


async def _post(base: str, body: bytes | str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{base}/v1/announce", content=body, headers={"content-type": "application/json"})


async def _hosts(base: str, **params: object) -> dict:  # type: ignore[type-arg]
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{base}/v1/hosts", params=params)
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]


async def test_announcer_posts_and_filters_apply(service: str) -> None:
    eu, us = Keypair.generate(), Keypair.generate()
    settings = DiscoverySettings(http_services=[service])
    announcers = [
        Announcer(settings, eu.private_key, "http://10.0.0.1:9000", [SMOL, TINY],
                  {"region": "eu-west", "prices": {SMOL: 100}}),
        Announcer(settings, us.private_key, "http://10.0.0.2:9000", [TINY], {"region": "us-east", "prices": {TINY: 5}}),
    ]
    for a in announcers:
        await a.start()
        assert a.status[f"http:{service}"].published == 1
    try:
        body = await _hosts(service)
        assert body["chain"] == "off" and {h["address"] for h in body["hosts"]} == {eu.address, us.address}
        assert all(h["origins"] == ["announcement"] and h["announcement"]["signature"] for h in body["hosts"])
        assert [h["address"] for h in (await _hosts(service, model=SMOL))["hosts"]] == [eu.address]
        assert [h["address"] for h in (await _hosts(service, region="us-east"))["hosts"]] == [us.address]
        assert (await _hosts(service, model=SMOL, max_price=99))["hosts"] == []
        assert len((await _hosts(service, model=SMOL, max_price=100))["hosts"]) == 1
        assert (await _hosts(service, min_stake=1))["hosts"] == []  # announcements carry no stake
    finally:
        for a in announcers:
            await a.stop()


async def test_refusals(service: str) -> None:
    ann = announcement()
    assert (await _post(service, ann.to_json())).status_code == 200
    forged = ann.to_json().decode().replace("9000", "9666")
    cases = [
        (forged, 401, "bad_signature"),
        (announcement(age_s=3600).to_json(), 400, "announcement_expired"),
        ('{"address": "0x1"}', 400, "bad_announcement"),
        ("not json", 400, "bad_announcement"),
        (announcement(metadata={"max_concurrent": -1}).to_json(), 400, "bad_announcement"),
        ("x" * 20_000, 413, None),
    ]
    for body, status, code in cases:
        resp = await _post(service, body)
        assert resp.status_code == status, (body[:40], resp.text)
        assert resp.json()["error"]["code"] == code and resp.json()["error"]["message"]
    key = Keypair.generate()
    newer, older = announcement(key, age_s=0), announcement(key, age_s=10)
    assert (await _post(service, newer.to_json())).status_code == 200
    stale = await _post(service, older.to_json())
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_announcement"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{service}/v1/hosts", params={"max_price": -1})).status_code == 400
    assert {h["address"] for h in (await _hosts(service))["hosts"]} == {ann.address, key.address}


async def test_announcements_expire() -> None:
    async with serve_app(create_discovery_app(DiscoveryServiceConfig(max_age_s=2))) as base:
        assert (await _post(base, announcement().to_json())).status_code == 200
        assert len((await _hosts(base))["hosts"]) == 1
        await asyncio.sleep(3.1)
        assert (await _hosts(base))["hosts"] == []


async def test_chain_hosts_merged_with_announcements(registry: RegistryClient, actors, sender_for) -> None:  # type: ignore[no-untyped-def]
    await register_host(registry, sender_for(actors.host), "http://10.0.0.1:9000", {"region": "chain-r"}, [SMOL], ETH)
    await register_host(registry, sender_for(actors.host2), "http://10.0.0.2:9000", {}, [TINY], 3 * ETH)
    source = RegistrySource(registry, cache_ttl_s=0)
    app = create_discovery_app(DiscoveryServiceConfig(watch_registry=False), registry=source)
    async with serve_app(app) as base:
        ann = announcement(actors.host, url="http://10.9.9.9:9000", models=(SMOL,), metadata={"region": "announced"})
        assert (await _post(base, ann.to_json())).status_code == 200
        body = await _hosts(base)
        assert body["chain"] == "ok"
        by_address = {h["address"]: h for h in body["hosts"]}
        merged = by_address[actors.host.address]
        assert merged["origins"] == ["announcement", "registry"] and merged["stake"] == ETH
        assert [h["address"] for h in body["hosts"]] == [actors.host2.address, actors.host.address]  # stake order
        assert by_address[actors.host2.address]["announcement"] is None
        assert [h["address"] for h in (await _hosts(base, min_stake=2 * ETH))["hosts"]] == [actors.host2.address]


async def test_client_cache_ttl_hit_rate_and_background_refresh(service: str) -> None:
    first = announcement(models=(SMOL,))
    assert (await _post(service, first.to_json())).status_code == 200
    client = HttpDiscoveryClient(service, cache_ttl_s=60, refresh_interval_s=0.2, retry=FAST_RETRY)
    try:
        assert [h.address for h in await client.discover(SMOL)] == [first.address]
        for _ in range(3):
            await client.discover(SMOL)
        stats = client.stats.as_dict()
        assert (stats["calls"], stats["cache_hits"], stats["cache_hit_rate"]) == (4, 3, 0.75)
        second = announcement(models=(SMOL,))
        assert (await _post(service, second.to_json())).status_code == 200
        deadline = time.monotonic() + 5  # the TTL is 60 s: only the background refresh can bring the newcomer
        while len(await client.discover(SMOL)) < 2:
            assert time.monotonic() < deadline, "background refresh never picked the new host up"
            await asyncio.sleep(0.05)
        assert client.refreshes >= 1
        eu = await client.find(HostFilter(model=SMOL, region="nowhere"))
        assert eu == []
    finally:
        await client.close()


async def test_client_retries_then_fails_typed_and_recovers() -> None:
    port = free_port()
    client = HttpDiscoveryClient(f"http://127.0.0.1:{port}", cache_ttl_s=0, retry=FAST_RETRY, timeout_s=1,
                                 background_refresh=False)
    try:
        with pytest.raises(DiscoveryUnavailable, match="unreachable"):
            await client.discover()
        assert not client.stats.healthy and "unreachable" in str(client.stats.last_error)
        app = create_discovery_app()
        async with serve_app(app) as base:
            client.urls = [f"http://127.0.0.1:{port}", base]  # first URL still dead: the next one answers
            ann = announcement()
            assert (await _post(base, ann.to_json())).status_code == 200
            assert [h.address for h in await client.discover()] == [ann.address]
            assert client.stats.healthy and client.stats.success_rate == 0.5
    finally:
        await client.close()


async def test_garbage_answers_are_bad_responses() -> None:
    junk = FastAPI()

    @junk.get("/v1/hosts")
    async def hosts() -> PlainTextResponse:
        return PlainTextResponse('{"hosts": "nope"}')

    async with serve_app(junk) as base:
        client = HttpDiscoveryClient(base, retry=FAST_RETRY, background_refresh=False)
        try:
            with pytest.raises(BadDiscoveryResponse, match="host list"):
                await client.discover()
        finally:
            await client.close()


async def test_client_drops_entries_whose_announcement_does_not_match() -> None:
    junk = FastAPI()
    good, other = announcement(), announcement()

    @junk.get("/v1/hosts")
    async def hosts() -> dict:  # type: ignore[type-arg]
        entry = {"address": good.address, "url": good.url, "models": [SMOL], "announcement": good.to_dict()}
        spoofed = {**entry, "url": "http://evil:1"}  # URL differs from the signed one
        stolen = {"address": other.address, "url": other.url, "announcement": good.to_dict()}
        return {"hosts": [entry, spoofed, stolen, {"address": "0x" + "ab" * 20, "url": "http://chain-only:1"}]}

    async with serve_app(junk) as base:
        client = HttpDiscoveryClient(base, background_refresh=False)
        try:
            found = await client.discover()
            assert [h.url for h in found] == [good.url, "http://chain-only:1"]
            assert client.stats.rejected == 2
        finally:
            await client.close()
