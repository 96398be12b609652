"""HostSelector: requirements, each strategy, composite scores computed by hand, round-robin order, load balance,
persisted performance, latency against real loopback HTTP servers and reputation from a real py-evm chain."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.servers import serve_app

from dinfer.chain.anvil import free_port
from dinfer.sdk import (
    ChainReputation,
    CompositeWeights,
    HostSelector,
    HostStatsStore,
    LatencyProbe,
    NoSuitableHost,
    ReputationWeights,
    Strategy,
    SyncHostSelector,
)
from dinfer.sdk.hosts import HostMetadata, HostRecord
from dinfer.sdk.selection import reputation_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "contracts" / "validation"))

from validation_helpers import VLedger, make_vledger

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
A, B, C = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20


def host(address: str, url: str = "http://127.0.0.1:1", *, price: int | None = None, region: str = "",
         hardware: str = "", stake: int = 0, max_concurrent: int = 0, models: tuple[str, ...] = (MODEL,)) -> HostRecord:
    prices = {MODEL: price} if price is not None else {}
    meta = HostMetadata(prices=prices, region=region, hardware=hardware, max_concurrent=max_concurrent)
    return HostRecord(address, url, models=models, metadata=meta, stake=stake)


@pytest.fixture
async def selector(tmp_path: Path) -> AsyncIterator[HostSelector]:
    s = HostSelector(stats_path=tmp_path / "stats.sqlite")
    yield s
    await s.aclose()


class HealthApp:
    """A real ASGI app answering ``GET /health`` after ``delay_s`` with ``status``; counts the hits."""

    def __init__(self, delay_s: float = 0.0, status: int = 200) -> None:
        self.delay_s, self.status, self.hits = delay_s, status, 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.hits += 1
        await asyncio.sleep(self.delay_s)
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"status": "ok"}'})


# --- bad input
async def test_unknown_strategy_names_the_valid_ones(selector: HostSelector) -> None:
    with pytest.raises(ValueError, match="unknown strategy 'cheapest'; valid: lowest_price, lowest_latency"):
        await selector.select_optimal_host([host(A)], MODEL, "cheapest")


async def test_empty_host_list_is_no_suitable_host(selector: HostSelector) -> None:
    with pytest.raises(NoSuitableHost, match="host list is empty") as err:
        await selector.select_optimal_host([], MODEL, "lowest_price")
    assert err.value.excluded == {}
    with pytest.raises(ValueError, match="non-empty model"):
        await selector.rank_hosts([host(A)], "", "lowest_price")
    with pytest.raises(TypeError, match="HostRecord"):
        await selector.rank_hosts([{"address": A}], MODEL, "lowest_price")  # type: ignore[list-item]


async def test_requirements_exclude_with_a_reason_per_host(selector: HostSelector) -> None:
    hosts = [
        host(A, price=5, region="eu-west", hardware="NVIDIA H100 80GB", stake=10),
        host(B, price=50, region="eu-west", hardware="NVIDIA H100 80GB", stake=10),
        host(C, price=5, region="us-east", hardware="cpu", stake=1, models=("other/model",)),
    ]
    kept = selector.filter_by_requirements(hosts, model=MODEL, max_price=10, region="EU-WEST", hardware="h100",
                                           min_stake=5)
    assert [h.address for h in kept] == [hosts[0].address]
    with pytest.raises(NoSuitableHost) as err:
        await selector.select_optimal_host(hosts, MODEL, "requirements", max_price=4, region="eu-west")
    reasons = err.value.excluded
    assert reasons[hosts[0].address] == "price 5 wei/token > max_price 4"
    assert reasons[hosts[1].address] == "price 50 wei/token > max_price 4"
    assert reasons[hosts[2].address].startswith(f"does not serve {MODEL} (serves: other/model)")
    assert "at http://127.0.0.1:1: price 5 wei/token > max_price 4" in str(err.value)
    with pytest.raises(NoSuitableHost, match="stake 1 wei < min_stake 5"):
        selector.filter_by_requirements([hosts[2]], min_stake=5)
    with pytest.raises(NoSuitableHost, match="hardware 'cpu' does not match 'gpu'"):
        selector.filter_by_requirements([hosts[2]], hardware="gpu")
    with pytest.raises(NoSuitableHost, match=r"advertises no price .* no governance price was given"):
        selector.filter_by_requirements([host(A)], model=MODEL, max_price=10)
    assert selector.filter_by_requirements([host(A)], model=MODEL, max_price=10, governance_price=10)


@pytest.mark.parametrize(("requirement", "message"), [
    ({"max_price": -1, "model": MODEL}, "max_price must be a non-negative integer"),
    ({"min_stake": 1.5}, "min_stake must be a non-negative integer"),
    ({"min_reliability": 1.2}, r"min_reliability must be within \[0, 1\]"),
    ({"max_price": 3}, "max_price needs model="),
])
def test_bad_requirement_values(selector: HostSelector, requirement: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        selector.filter_by_requirements([host(A, price=1)], **requirement)


def test_bad_weights() -> None:
    with pytest.raises(ValueError, match="CompositeWeights must be >= 0"):
        CompositeWeights(price=-1)
    with pytest.raises(ValueError, match="positive sum"):
        CompositeWeights(price=0, latency=0, reputation=0, reliability=0, load=0)
    with pytest.raises(ValueError, match="availability, honesty or stake"):
        ReputationWeights(availability=0, honesty=0, stake=0, reliability=1)


# --- price
async def test_lowest_price_uses_governance_price_or_ranks_unpriced_last(selector: HostSelector) -> None:
    hosts = [host(A), host(B, price=300), host(C, price=100)]
    ranked = await selector.rank_hosts(hosts, MODEL, "lowest_price")
    assert [r.host.address for r in ranked] == [hosts[2].address, hosts[1].address, hosts[0].address]
    assert [r.score for r in ranked] == [1.0, 0.0, 0.0]
    assert ranked[2].details == {"price": None, "price_source": "unknown"}
    ranked = await selector.rank_hosts(hosts, MODEL, "lowest_price", governance_price=200)
    assert [r.host.address for r in ranked] == [hosts[2].address, hosts[0].address, hosts[1].address]
    assert [r.score for r in ranked] == [1.0, 0.5, 0.0]
    assert ranked[1].details == {"price": 200, "price_source": "governance"}


# --- latency (real loopback servers)
async def test_lowest_latency_pings_real_servers_and_excludes_unreachable(tmp_path: Path) -> None:
    fast, slow, sick = HealthApp(0.0), HealthApp(0.15), HealthApp(0.0, status=503)
    dead = f"http://127.0.0.1:{free_port()}"
    now = [0.0]
    probe = LatencyProbe(samples=3, timeout_s=2.0, ttl_s=10.0, clock=lambda: now[0])
    selector = HostSelector(stats_path=tmp_path / "s.sqlite", latency=probe)
    try:
        async with serve_app(fast) as fast_url, serve_app(slow) as slow_url, serve_app(sick) as sick_url:
            hosts = [host(A, slow_url), host(B, dead), host(C, fast_url), host("0x" + "dd" * 20, sick_url)]
            ranked = await selector.rank_hosts(hosts, MODEL, "lowest_latency")
            assert [r.host.url for r in ranked] == [fast_url, slow_url]
            assert ranked[1].details["latency_s"] >= 0.15 > ranked[0].details["latency_s"]
            assert [r.score for r in ranked] == [1.0, 0.0]
            assert (fast.hits, slow.hits, sick.hits) == (3, 3, 1)
            # cached within the TTL: no new pings
            assert (await selector.select_optimal_host(hosts, MODEL, "lowest_latency")).url == fast_url
            assert (fast.hits, slow.hits) == (3, 3)
            now[0] = 11.0
            await selector.rank_hosts(hosts, MODEL, "lowest_latency")
            assert (fast.hits, slow.hits) == (6, 6)
            with pytest.raises(NoSuitableHost) as err:
                await selector.rank_hosts([hosts[1], hosts[3]], MODEL, "lowest_latency")
            assert err.value.excluded[hosts[1].address].startswith("unreachable: ConnectError")
            assert err.value.excluded[hosts[3].address] == "unhealthy: GET /health answered 503"
    finally:
        await selector.aclose()


# --- composite
async def test_composite_matches_hand_computed_scores(tmp_path: Path) -> None:
    weights = CompositeWeights(price=0.5, latency=0, reputation=0, reliability=0.3, load=0.2)
    selector = HostSelector(stats_path=tmp_path / "s.sqlite", weights=weights)
    hosts = [host(A, price=100), host(B, price=200), host(C, price=400)]
    a, b, c = (h.address for h in hosts)
    # reliability (Laplace): A 1/2 (never tried), B (2+1)/(2+2) = 0.75, C (0+1)/(1+2) = 1/3
    selector.record_outcome(b, True, 1.0)
    selector.record_outcome(b, True, 3.0)
    selector.record_outcome(c, False, 0.5)
    # in flight: A 2, B 1, C 0
    for h in (hosts[0], hosts[0], hosts[1]):
        await selector.select_optimal_host([h], MODEL, "requirements")
    ranked = {r.host.address: r for r in await selector.rank_hosts(hosts, MODEL, "composite")}
    price_n = {a: 1.0, b: (400 - 200) / 300, c: 0.0}
    rel_n = {a: (0.5 - 1 / 3) / (0.75 - 1 / 3), b: 1.0, c: 0.0}
    load_n = {a: 0.0, b: 0.5, c: 1.0}
    for addr in (a, b, c):
        expected = (0.5 * price_n[addr] + 0.3 * rel_n[addr] + 0.2 * load_n[addr]) / 1.0
        assert ranked[addr].score == pytest.approx(expected)
        assert ranked[addr].details["price_norm"] == pytest.approx(price_n[addr])
        assert ranked[addr].details["reliability_norm"] == pytest.approx(rel_n[addr])
        assert ranked[addr].details["load_norm"] == pytest.approx(load_n[addr])
    order = [r.host.address for r in await selector.rank_hosts(hosts, MODEL, "composite")]
    assert order == sorted((a, b, c), key=lambda x: -ranked[x].score)
    await selector.aclose()


async def test_composite_with_latency_normalises_measured_medians(tmp_path: Path) -> None:
    selector = HostSelector(stats_path=tmp_path / "s.sqlite",
                            weights=CompositeWeights(price=1, latency=1, reputation=0, reliability=0, load=0))
    async with serve_app(HealthApp(0.0)) as u1, serve_app(HealthApp(0.05)) as u2, serve_app(HealthApp(0.1)) as u3:
        hosts = [host(A, u1, price=300), host(B, u2, price=100), host(C, u3, price=200)]
        ranked = await selector.rank_hosts(hosts, MODEL, "composite")
    lat = {r.host.address: r.details["latency_s"] for r in ranked}
    lo, hi = min(lat.values()), max(lat.values())
    price_n = {hosts[0].address: 0.0, hosts[1].address: 1.0, hosts[2].address: 0.5}
    for r in ranked:
        assert r.score == pytest.approx((price_n[r.host.address] + (hi - lat[r.host.address]) / (hi - lo)) / 2)
    await selector.aclose()


async def test_reputation_needs_a_chain_source(selector: HostSelector) -> None:
    with pytest.raises(Exception, match="ranking by reputation needs on-chain data"):
        await selector.rank_hosts([host(A)], MODEL, "best_reputation")


# --- round robin and load balance
async def test_round_robin_cycles_in_address_order(selector: HostSelector) -> None:
    hosts = [host(C), host(A), host(B)]
    picks = [(await selector.select_optimal_host(hosts, MODEL, "round_robin")).address for _ in range(4)]
    a, b, c = (HostRecord(x, "").address for x in (A, B, C))
    assert picks == [a, b, c, a]
    ranked = await selector.rank_hosts(hosts, MODEL, Strategy.ROUND_ROBIN)  # ranking alone does not advance
    assert [r.host.address for r in ranked] == [b, c, a]
    assert [r.score for r in ranked] == pytest.approx([1, 2 / 3, 1 / 3])
    # a host leaving the list does not reset the cycle
    assert (await selector.select_optimal_host([hosts[0], hosts[1]], MODEL, "round_robin")).address == c


async def test_load_balance_prefers_fewest_in_flight_and_respects_capacity(selector: HostSelector) -> None:
    hosts = [host(A, max_concurrent=1), host(B, max_concurrent=2)]
    first = await selector.load_balance(hosts, MODEL)
    second = await selector.load_balance(hosts, MODEL)
    assert {first.address, second.address} == {hosts[0].address, hosts[1].address}
    third = await selector.load_balance(hosts, MODEL)
    assert third.address == hosts[1].address  # A is at max_concurrent 1
    with pytest.raises(NoSuitableHost) as err:
        await selector.load_balance(hosts, MODEL)
    assert err.value.excluded == {hosts[0].address: "at capacity: 1 in flight >= max_concurrent 1",
                                  hosts[1].address: "at capacity: 2 in flight >= max_concurrent 2"}
    assert selector.release(hosts[1]) == 1
    assert (await selector.load_balance(hosts, MODEL)).address == hosts[1].address
    assert selector.in_flight(hosts[0]) == 1 and selector.in_flight(hosts[1]) == 2
    assert selector.release(A) == 0
    with pytest.raises(ValueError, match="no in-flight selection to release"):
        selector.release(A)


async def test_lease_releases_and_records_the_outcome(selector: HostSelector) -> None:
    hosts = [host(A, price=1)]
    async with selector.lease(hosts, MODEL, "lowest_price") as h:
        assert selector.in_flight(h) == 1
    with pytest.raises(RuntimeError):
        async with selector.lease(hosts, MODEL, "lowest_price"):
            raise RuntimeError("session broke")
    perf = selector.performance(A)
    assert (perf.selections, perf.successes, perf.failures, selector.in_flight(A)) == (2, 1, 1, 0)


# --- performance tracking
async def test_performance_is_persisted_and_fed_back(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "stats.sqlite"
    selector = HostSelector(stats_path=path, weights=CompositeWeights(price=0, latency=0, reputation=0,
                                                                     reliability=1, load=0))
    hosts = [host(A), host(B)]
    await selector.select_optimal_host(hosts, MODEL, "requirements")
    selector.record_outcome(A, False, 2.0)
    selector.record_outcome(A, False, 4.0)
    selector.record_outcome(B, True, 10.0)
    await selector.aclose()

    reopened = HostSelector(stats_path=path, weights=CompositeWeights(price=0, latency=0, reputation=0,
                                                                     reliability=1, load=0))
    a = reopened.performance(A)
    assert (a.selections, a.successes, a.failures, a.success_rate) == (1, 0, 2, 0.0)
    assert a.average_duration_s == 3.0 and a.reliability == pytest.approx(1 / 4)
    assert reopened.performance(B).reliability == pytest.approx(2 / 3)
    assert reopened.performance(C).success_rate is None and reopened.performance(C).reliability == 0.5
    assert (await reopened.select_optimal_host(hosts, MODEL, "composite")).address == hosts[1].address
    with pytest.raises(NoSuitableHost, match=r"reliability 0.250 < min_reliability 0.5"):
        reopened.filter_by_requirements([hosts[0]], min_reliability=0.5)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="duration_s must be a finite number"):
            reopened.record_outcome(A, True, bad)
    await reopened.aclose()
    with HostStatsStore(path) as store:
        assert set(store.all()) == {hosts[0].address, hosts[1].address}


def test_sync_selector_without_chain(tmp_path: Path) -> None:
    with SyncHostSelector(stats_path=tmp_path / "s.sqlite") as selector:
        hosts = [host(A, price=2), host(B, price=1)]
        assert selector.select_optimal_host(hosts, MODEL, "lowest_price").address == hosts[1].address
        assert selector.in_flight(hosts[1]) == 1
        assert selector.release(hosts[1]) == 0
        assert selector.record_outcome(hosts[1], True, 1.0).successes == 1
        with pytest.raises(NoSuitableHost):
            selector.select_optimal_host(hosts, MODEL, "lowest_price", max_price=0)
    with pytest.raises(ValueError, match="rpc_url and deployment together"):
        SyncHostSelector(stats_path=tmp_path / "s.sqlite", rpc_url="http://127.0.0.1:1")


# --- reputation on a real chain
async def _miss(vl: VLedger, executor: str) -> None:
    base = vl.base
    rec = await base.record(where=lambda e, s: e == executor)
    await base.start(rec)
    await base.chain.mine(await base.registry.param("expiration_blocks"))
    await base.inference.expire(rec.inference_id)


async def _confirmed_invalid(vl: VLedger) -> str:
    base = vl.base
    await vl.set_param("validation_rate_bps", 10_000)
    rec = await vl.finished()
    first = next(m for m in base.group if m != rec.executor)
    await vl.as_(base.member(first)).validate(rec.inference_id, False, 100_000)
    breaker = await vl.validation.tiebreaker_for(rec.inference_id, first)
    await vl.as_(base.member(breaker)).validate(rec.inference_id, False, 50_000)
    return rec.executor


async def test_best_reputation_reads_the_chain(chain, registry, genesis, actors, sender_for,  # type: ignore[no-untyped-def]
                                               tmp_path: Path) -> None:
    vl = await make_vledger(chain, registry, genesis, actors, sender_for)
    base = vl.base
    cheater = await _confirmed_invalid(vl)
    sloppy = next(m for m in base.group if m != cheater)
    await _miss(vl, sloppy)
    hosts = [host(m, f"http://host-{i}") for i, m in enumerate(base.group)]
    weights = ReputationWeights()
    selector = HostSelector(stats_path=tmp_path / "s.sqlite", reputation_weights=weights,
                            reputation=ChainReputation(base.inference, base.epochs, base.registry))
    selector.record_outcome(hosts[3], False, 1.0)
    ranked = await selector.rank_hosts(hosts, MODEL, "best_reputation")
    epoch = await base.epochs.current_epoch()
    stakes = {m: await base.registry.collateral_of(m) for m in base.group}
    max_stake = max(stakes.values())
    rep = {r.host.address: r for r in ranked}
    assert rep[cheater].details["invalid"] == await vl.validation.invalid_count(epoch, cheater) == 1
    stats = await base.inference.executor_stats(epoch, sloppy)
    assert (rep[sloppy].details["missed"], rep[sloppy].details["total"]) == (stats.missed, stats.total) != (0, 0)
    for m in base.group:
        s = await base.inference.executor_stats(epoch, m)
        invalid = await vl.validation.invalid_count(epoch, m)
        availability = 1 - s.missed / s.total if s.total else 1.0
        honesty = 0.0 if s.status.name == "INVALID" else 1 / (1 + invalid)
        reliability = selector.performance(m).reliability
        expected = (0.4 * availability + 0.3 * honesty + 0.1 * stakes[m] / max_stake + 0.2 * reliability) / 1.0
        assert rep[m].score == pytest.approx(expected)
        assert rep[m].details["stake"] == stakes[m]
    clean = [m for m in base.group[:3] if m not in (cheater, sloppy)]
    assert ranked[0].host.address in clean
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    # composite with reputation: the on-chain part, min-max normalised
    selector.weights = CompositeWeights(price=0, latency=0, reputation=1, reliability=0, load=0)
    composite = {r.host.address: r for r in await selector.rank_hosts(hosts, MODEL, "composite")}
    chain_scores = {m: rep[m].details["chain_reputation"] for m in base.group}
    lo, hi = min(chain_scores.values()), max(chain_scores.values())
    for m in base.group:
        assert composite[m].score == pytest.approx((chain_scores[m] - lo) / (hi - lo))
    _, best = reputation_score(await selector.reputation.of(hosts[0]), max_stake, 0.5, weights)  # type: ignore[union-attr]
    assert 0 <= best <= 1
    await selector.aclose()


# --- docs
def test_docs_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    """Every ```python block of docs/sdk/selection.md, in order, in one namespace (```py blocks are illustrative)."""
    doc = (Path(__file__).resolve().parents[3] / "docs" / "sdk" / "selection.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    assert len(blocks) == 4
    namespace: dict[str, Any] = {"__name__": "docs_selection"}
    for block in blocks:
        exec(compile(block, "docs/sdk/selection.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "price 300 wei/token > max_price 200" in out
    assert "reliability 0.333 < min_reliability 0.5" in out
