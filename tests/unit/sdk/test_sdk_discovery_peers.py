"""PeerBook: automatic blacklisting after N failures and its expiry, manual blacklist and bad entries, preferred hosts
first in unified discovery (real discovery service) and in HostSelector, connection quality, persistence, a corrupted
file rebuilt, and invalidations read from a real py-evm Validation contract."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.fixtures.servers import serve_app
from tests.unit.sdk.sdk_discovery_support import SMOL, announcement

from dinfer.crypto import Keypair
from dinfer.discovery_service import create_discovery_app
from dinfer.sdk import HostSelector, NoSuitableHost, PeerBook, PeerPolicy
from dinfer.sdk.discovery import HttpDiscoveryClient, UnifiedDiscovery
from dinfer.sdk.discovery.peers import percentile
from dinfer.sdk.hosts import HostRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "contracts" / "validation"))

from validation_helpers import make_vledger

A, B, C = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _host(address: str, price: int = 100) -> HostRecord:
    from dinfer.sdk.hosts import HostMetadata

    return HostRecord(address=address, url=f"http://{address[-4:]}.example", models=(SMOL,),
                      metadata=HostMetadata(prices={SMOL: price}))


def test_n_consecutive_failures_blacklist_until_expiry(tmp_path: Path) -> None:
    clock = Clock()
    peers = PeerBook(tmp_path / "peers.sqlite", PeerPolicy(failure_threshold=3, blacklist_ttl_s=60), clock=clock)
    peers.record_failure(A)
    peers.record_success(A)  # a success resets the run
    peers.record_failure(A, timeout=True)
    peers.record_failure(A)
    assert not peers.is_blacklisted(A)
    stats = peers.record_failure(A, reason="connection refused")
    assert stats.blacklisted is not None and stats.blacklisted.automatic
    assert stats.blacklisted.until == clock.now + 60 and "3 consecutive failures" in stats.blacklisted.reason
    assert "connection refused" in stats.blacklisted.reason
    assert (stats.successes, stats.failures, stats.timeouts) == (1, 4, 1)
    assert peers.arrange([_host(A), _host(B)]) == [_host(B)]
    clock.now += 59.9
    assert peers.is_blacklisted(A)
    clock.now += 0.2
    assert not peers.is_blacklisted(A) and peers.blacklisted() == []
    assert peers.arrange([_host(A), _host(B)]) == [_host(A), _host(B)]
    # the count restarted at the blacklisting: one more failure does not blacklist again
    assert peers.record_failure(A).blacklisted is None
    peers.close()


def test_manual_blacklist_persists_and_refuses_bad_addresses(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "peers.sqlite"
    with PeerBook(path, clock=clock) as peers:
        entry = peers.blacklist(B, reason="overcharged me")
        assert entry.until is None and not entry.automatic
        peers.blacklist(C, ttl_s=10)
        for _ in range(5):  # automatic blacklisting never shortens a manual one
            peers.record_failure(B)
        for bad in ["0x1234", "not-an-address", "0x" + "zz" * 20, 42]:
            with pytest.raises(ValueError, match=r"blacklist entry .* not an address|blacklist entry must be"):
                peers.blacklist(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="ttl_s must be > 0"):
            peers.blacklist(A, ttl_s=-1)
        with pytest.raises(ValueError, match="preferred host"):
            peers.set_preferred([A, "0xnope"])
    clock.now += 11
    with PeerBook(path, clock=clock) as again:
        assert [(e.address, e.reason, e.until) for e in again.blacklisted()] == [(_host(B).address, "overcharged me",
                                                                                  None)]
        assert again.unblacklist(B) and not again.unblacklist(B)
        assert again.blacklisted() == []


async def test_preferred_hosts_come_first_in_unified_discovery(tmp_path: Path) -> None:
    keys = [Keypair.generate() for _ in range(3)]
    peers = PeerBook(tmp_path / "peers.sqlite")
    async with serve_app(create_discovery_app()) as base:
        async with httpx.AsyncClient() as http:
            for i, key in enumerate(keys):
                resp = await http.post(f"{base}/v1/announce", content=announcement(key, f"http://10.0.0.{i}:9000")
                                       .to_json(), headers={"content-type": "application/json"})
                assert resp.status_code == 200
        discovery = UnifiedDiscovery([HttpDiscoveryClient(base, background_refresh=False)], peers=peers)
        try:
            plain = [h.address for h in await discovery.discover_all_hosts(SMOL)]
            assert plain == sorted(k.address for k in keys)  # same source and stake: address order
            last, middle, first = plain
            peers.set_preferred([last, middle])
            peers.blacklist(first)
            hosts = await discovery.discover_all_hosts(SMOL)
            assert [h.address for h in hosts] == [last, middle]
            stats = discovery.get_discovery_stats()
            assert stats["http"]["successes"] == 2
            assert stats["peers"]["preferred"] == [last, middle]
            assert [e["address"] for e in stats["peers"]["blacklisted"]] == [first]
            assert stats["peers"]["hosts"][first]["blacklisted"]["reason"] == "manual"
        finally:
            await discovery.close()
            peers.close()


async def test_selector_skips_blacklisted_and_prefers_preferred(tmp_path: Path) -> None:
    peers = PeerBook(tmp_path / "peers.sqlite", PeerPolicy(failure_threshold=2))
    selector = HostSelector(stats_path=tmp_path / "stats.sqlite", peers=peers)
    hosts = [_host(A, price=1), _host(B, price=2), _host(C, price=3)]
    try:
        assert (await selector.select_optimal_host(hosts, SMOL, "lowest_price")).address == hosts[0].address
        peers.set_preferred([C])
        ranked = await selector.rank_hosts(hosts, SMOL, "lowest_price")
        assert [r.host.address for r in ranked] == [hosts[2].address, hosts[0].address, hosts[1].address]
        # two failures reported through the selector blacklist A automatically
        selector.record_outcome(hosts[0], False, 1.0)
        selector.record_outcome(hosts[0], False, 1.0)
        assert peers.is_blacklisted(A)
        ranked = await selector.rank_hosts(hosts, SMOL, "load_balance")
        assert ranked[0].host.address == hosts[2].address and hosts[0].address not in [r.host.address for r in ranked]
        peers.blacklist(B)
        peers.blacklist(C)
        with pytest.raises(NoSuitableHost, match="blacklisted: 2 consecutive failures") as err:
            await selector.rank_hosts(hosts, SMOL, "lowest_price")
        assert err.value.excluded[hosts[1].address] == "blacklisted: manual"
    finally:
        await selector.aclose()
        peers.close()


def test_connection_quality(tmp_path: Path) -> None:
    with PeerBook(tmp_path / "peers.sqlite", PeerPolicy(latency_window=10)) as peers:
        for ms in range(1, 21):  # only the last 10 (11..20 ms) are kept
            peers.record_success(A, latency_s=ms / 1000, tokens=50, duration_s=0.5)
        peers.record_failure(A, timeout=True)
        stats = peers.stats(A)
        assert stats.latency_p50_ms == pytest.approx(percentile([float(v) for v in range(11, 21)], 0.5)) \
            == pytest.approx(15.5)
        assert stats.latency_p95_ms == pytest.approx(19.55)
        assert stats.error_rate == pytest.approx(1 / 21)
        assert stats.throughput_tps == pytest.approx(100.0)
        empty = peers.stats(B)
        assert (empty.error_rate, empty.latency_p50_ms, empty.throughput_tps) == (None, None, None)
        for bad in ({"latency_s": -1}, {"latency_s": float("nan")}, {"tokens": -3}):
            with pytest.raises(ValueError, match="must be"):
                peers.record_success(A, **bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("garbage", [b"this is not sqlite at all" * 40, b"SQLite format 3\x00" + b"\xff" * 200])
def test_corrupted_file_is_rebuilt_with_a_warning(tmp_path: Path, garbage: bytes,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "peers.sqlite"
    path.write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="dinfer.sdk.discovery.peers"):
        peers = PeerBook(path)
    assert "unreadable" in caplog.text and peers.rebuilt_from is not None
    assert peers.rebuilt_from.read_bytes() == garbage  # kept aside, not destroyed
    peers.record_failure(A)
    peers.close()
    with PeerBook(path) as again:
        assert again.rebuilt_from is None and again.stats(A).failures == 1


def test_bad_rows_are_a_corrupted_file_too(tmp_path: Path) -> None:
    path = tmp_path / "peers.sqlite"
    with PeerBook(path) as peers:
        peers.record_success(A, latency_s=0.1)
        peers._db.execute("UPDATE peers SET latencies_ms = '{not json'")
    with PeerBook(path) as again:
        assert again.rebuilt_from is not None and again.stats(A).successes == 0


async def test_invalidations_are_read_from_the_chain(chain, registry, genesis, actors, sender_for,  # type: ignore[no-untyped-def]
                                                     tmp_path: Path) -> None:
    vl = await make_vledger(chain, registry, genesis, actors, sender_for)
    base = vl.base
    await vl.set_param("validation_rate_bps", 10_000)
    rec = await vl.finished()
    first = next(m for m in base.group if m != rec.executor)
    await vl.as_(base.member(first)).validate(rec.inference_id, False, 100_000)
    breaker = await vl.validation.tiebreaker_for(rec.inference_id, first)
    await vl.as_(base.member(breaker)).validate(rec.inference_id, False, 50_000)
    epoch = await base.epochs.current_epoch()
    with PeerBook(tmp_path / "peers.sqlite") as peers:
        counts = await peers.sync_invalidations(vl.validation, epoch, base.group)
        assert counts[rec.executor] == 1 and sum(counts.values()) == 1
        assert peers.stats(rec.executor).invalidations == 1
        await peers.sync_invalidations(vl.validation, epoch, [rec.executor])  # idempotent per epoch
        peers.record_invalidations(rec.executor, epoch + 1, 2)
        assert peers.stats(rec.executor).invalidations == 3
        with pytest.raises(ValueError, match="integers >= 0"):
            peers.record_invalidations(rec.executor, -1, 1)


def _doc_example(name: str) -> Any:
    doc = Path(__file__).resolve().parents[3] / "docs" / "sdk" / "discovery.md"
    block = next(b for b in re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S) if name in b)
    namespace: dict[str, Any] = {}
    exec(compile(block, str(doc), "exec"), namespace)
    return namespace[name]


async def test_docs_peer_example(tmp_path: Path) -> None:
    example_peers = _doc_example("example_peers")
    keys = [Keypair.generate() for _ in range(2)]
    async with serve_app(create_discovery_app()) as base:
        async with httpx.AsyncClient() as http:
            for i, key in enumerate(keys):
                ann = announcement(key, f"http://10.0.0.{i}:9000", models=("dinfer/tiny-random-llama",))
                await http.post(f"{base}/v1/announce", content=ann.to_json(),
                                headers={"content-type": "application/json"})
        summary = await example_peers(base, Keypair.generate().private_key, str(tmp_path / "peers.sqlite"))
    best, flaky = sorted(k.address for k in keys)
    assert summary["preferred"] == [flaky] and [e["address"] for e in summary["blacklisted"]] == [flaky]
    assert summary["hosts"][flaky]["timeouts"] == 3 and summary["hosts"][flaky]["reports_sent"] == 1
    assert summary["hosts"][best]["throughput_tps"] == 80.0 and summary["hosts"][best]["latency_p50_ms"] == 80.0
