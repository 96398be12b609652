"""report_host round trips against a real ``dinfer discovery`` service on loopback: accepted and aggregated, bad or
missing signatures (401), replays (409), unknown hosts (404), per-reporter rate limit (429), Registry-known hosts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from tests.fixtures.servers import serve_app
from tests.unit.sdk.sdk_discovery_support import ETH, SMOL, announcement, register_host

from dinfer.chain.contracts.registry import RegistryClient
from dinfer.crypto import Keypair
from dinfer.discovery_service import DiscoveryServiceConfig, create_discovery_app
from dinfer.sdk import PeerBook
from dinfer.sdk.discovery import (
    HttpDiscoveryClient,
    RegistrySource,
    ReportError,
    ReportRateLimited,
    ReportReplayed,
    ReportSignatureError,
    UnifiedDiscovery,
    UnknownReportedHost,
    sign_report,
    verify_report,
)


@pytest.fixture
async def service() -> AsyncIterator[str]:
    async with serve_app(create_discovery_app(DiscoveryServiceConfig(reports_per_minute=4))) as base:
        yield base


async def _announce(base: str, key: Keypair) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{base}/v1/announce", content=announcement(key).to_json(),
                               headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text


async def _post(base: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{base}/v1/reports", content=body, headers={"content-type": "application/json"})


async def test_report_round_trip_through_unified_discovery(service: str, tmp_path: Path) -> None:
    host, alice, bob = Keypair.generate(), Keypair.generate(), Keypair.generate()
    await _announce(service, host)
    peers = PeerBook(tmp_path / "peers.sqlite")
    discovery = UnifiedDiscovery([HttpDiscoveryClient(service, reporter_key=alice.private_key,
                                                      background_refresh=False)], peers=peers)
    other = HttpDiscoveryClient(service, reporter_key=bob.private_key, background_refresh=False)
    try:
        acks = await discovery.report_host(host.address, "timeout", "no first token in 30 s")
        assert acks == [{"url": service, "host": host.address, "accepted": True, "total": 1}]
        await discovery.report_host(host.address, "overcharge")
        await other.report_host(host.address.lower(), "timeout")
        summary = await other.host_reports(host.address)
        assert (summary["total"], summary["reporters"], summary["by_issue"]) == (3, 2, {"timeout": 2, "overcharge": 1})
        assert [(r["reporter"], r["issue"]) for r in summary["recent"]] == [
            (bob.address, "timeout"), (alice.address, "overcharge"), (alice.address, "timeout")]
        assert summary["recent"][2]["detail"] == "no first token in 30 s"
        assert discovery.get_discovery_stats()["peers"]["hosts"][host.address]["reports_sent"] == 2
        with pytest.raises(ReportError, match="unknown report issue 'rude'; valid: unreachable"):
            await discovery.report_host(host.address, "rude")
        with pytest.raises(ValueError, match="not an address"):
            await discovery.report_host("0x123", "timeout")
        with pytest.raises(ReportError, match="reporter_key"):
            await UnifiedDiscovery([HttpDiscoveryClient(service)]).report_host(host.address, "timeout")
    finally:
        await discovery.close()
        await other.close()
        peers.close()


async def test_unknown_hosts_are_404(service: str) -> None:
    reporter = HttpDiscoveryClient(service, reporter_key=Keypair.generate().private_key)
    stranger = Keypair.generate().address
    try:
        with pytest.raises(UnknownReportedHost, match=r"404.*unknown host"):
            await reporter.report_host(stranger, "unreachable")
        with pytest.raises(UnknownReportedHost, match="404"):
            await reporter.host_reports(stranger)
        async with httpx.AsyncClient() as http:
            bad = await http.get(f"{service}/v1/reports/0xnothex")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_address"
        known = Keypair.generate()
        await _announce(service, known)
        assert (await reporter.host_reports(known.address))["total"] == 0  # known, nothing reported yet
    finally:
        await reporter.close()


async def test_unsigned_forged_replayed_and_stale_reports(service: str) -> None:
    host, reporter = Keypair.generate(), Keypair.generate()
    await _announce(service, host)
    report = sign_report(reporter.private_key, host.address, "bad_response")
    assert verify_report(report.to_dict()) == report
    body = report.to_dict()
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    forged = {**body, "detail": "changed after signing"}
    impostor = {**sign_report(Keypair.generate().private_key, host.address, "timeout").to_dict(),
                "reporter": reporter.address}
    for payload, status, code in [(unsigned, 401, "bad_signature"), (forged, 401, "bad_signature"),
                                  (impostor, 401, "bad_signature"), ({**body, "issue": "rude"}, 400, "bad_report"),
                                  ({**body, "host": "0x12"}, 400, "bad_report")]:
        resp = await _post(service, orjson.dumps(payload))
        assert (resp.status_code, resp.json()["error"]["code"]) == (status, code), resp.text
    assert (await _post(service, b"{not json")).status_code == 400
    assert (await _post(service, orjson.dumps(body))).status_code == 201
    replay = await _post(service, orjson.dumps(body))
    assert (replay.status_code, replay.json()["error"]["code"]) == (409, "replayed_report")
    stale = sign_report(reporter.private_key, host.address, "timeout", timestamp=int(time.time()) - 3600)
    resp = await _post(service, orjson.dumps(stale.to_dict()))
    assert (resp.status_code, resp.json()["error"]["code"]) == (409, "stale_report")
    with pytest.raises(ReportSignatureError, match="not signed"):
        verify_report(unsigned)


async def test_rate_limit_per_reporter(service: str) -> None:
    host = Keypair.generate()
    await _announce(service, host)
    noisy = HttpDiscoveryClient(service, reporter_key=Keypair.generate().private_key)
    calm = HttpDiscoveryClient(service, reporter_key=Keypair.generate().private_key)
    try:
        for _ in range(4):  # reports_per_minute=4: a burst of 4
            await noisy.report_host(host.address, "slow")
        with pytest.raises(ReportRateLimited) as err:
            await noisy.report_host(host.address, "slow")
        assert err.value.retry_after >= 1
        await calm.report_host(host.address, "slow")  # another reporter has its own budget
        assert (await calm.host_reports(host.address))["total"] == 5
    finally:
        await noisy.close()
        await calm.close()


async def test_replay_through_the_client_is_typed(service: str) -> None:
    host, reporter = Keypair.generate(), Keypair.generate()
    await _announce(service, host)
    report = sign_report(reporter.private_key, host.address, "timeout", nonce="0x" + "ab" * 16)
    assert (await _post(service, orjson.dumps(report.to_dict()))).status_code == 201
    client = HttpDiscoveryClient(service)
    try:
        with pytest.raises(ReportReplayed, match="409"):
            await client.send_report(report)
    finally:
        await client.close()


async def test_registry_hosts_can_be_reported(registry: RegistryClient, actors, sender_for) -> None:  # type: ignore[no-untyped-def]
    await register_host(registry, sender_for(actors.host), "http://10.0.0.1:9000", {}, [SMOL], ETH)
    app = create_discovery_app(DiscoveryServiceConfig(watch_registry=False),
                               registry=RegistrySource(registry, cache_ttl_s=0))
    async with serve_app(app) as base:
        client = HttpDiscoveryClient(base, reporter_key=actors.client.private_key)
        try:
            ack = await client.report_host(actors.host.address, "invalid_output")
            assert ack[0]["total"] == 1
            with pytest.raises(UnknownReportedHost):
                await client.report_host(actors.host2.address, "invalid_output")
        finally:
            await client.close()
