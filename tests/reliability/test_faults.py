"""Fault injection over real processes (issue #13 part 2): during a bounded run of concurrent signed requests through
the SDK, kill -9 an executor host, an ML node, the llama.cpp engine under an ML node, one RPC endpoint of the hosts'
pool, or a TA; restart what was killed; then audit the chain: every answered request FINISHED exactly once, every
other started request finished or refunded at expiry, escrow + host earnings + contract balance conserved to the
wei, and the restarted processes back in service without double finishes.

One devnet for the module (3 hosts × 1 ML node, tiny model, 0.5 s blocks, expiry 10 blocks). Fast profile: the
executor-host + ML-node kills at 40 requests / concurrency 8. Full profile (``make test-full``): every fault at 200
requests / concurrency 16. Runs start anvil: wrap them in ``flock /tmp/devnet.lock``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest
from faults_support import (
    MAX_TOKENS,
    ChainAudit,
    FaultStep,
    LoadReport,
    RpcForwarders,
    Verdict,
    admin_stats,
    audit,
    client_key,
    fault_settings,
    fund,
    kill,
    kill_engine,
    revive,
    sdk_client,
    signed_load,
    wait_drained,
    wait_mlnode_serving,
)
from tests.e2e.network import TINY, BackgroundDevnet, log_of, order_of, running, signed_chat
from tests.fixtures.tiny_gguf import write_tiny_gguf

from support import FULL_PROFILE

pytestmark = pytest.mark.e2e

FAST_TOTAL, FAST_CONCURRENCY = 40, 8
FULL_TOTAL, FULL_CONCURRENCY = 200, 16
MIN_ANSWERED = 0.8
"""Share of requests that must be answered through a fault (the SDK's TA fallback + the TA's executor fallback
absorb a single dead process; the rest is refunded)."""


@pytest.fixture(scope="module")
def fault_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundDevnet]:
    model = write_tiny_gguf(tmp_path_factory.mktemp("fault-model") / "tiny-llama.gguf")
    with running(fault_settings(tmp_path_factory.mktemp("fault-devnet"), model)) as net:
        yield net


def scenario(net: BackgroundDevnet, account: int, tas: list[int], plan: dict[int, FaultStep],
             restore: Callable[[], Awaitable[None]], *, total: int, concurrency: int) -> tuple[LoadReport, Verdict]:
    """Fund a fresh client, run the load with ``plan``'s faults, ``restore``, drain the hosts' queues, settle
    (expire what is left) and audit."""

    async def main() -> tuple[LoadReport, Verdict]:
        client = sdk_client(net, client_key(net, account))
        try:
            chain = ChainAudit(client, [h["address"] for h in net.info.hosts])
            from_block = await chain.head()
            before = await chain.balances()
            deposit = await fund(client)
            report = await signed_load(client, [net.host(i)["url"] for i in tas], total=total,
                                       concurrency=concurrency, faults=plan, deadline_s=300)
            await restore()
            await wait_drained(net, timeout=90)
            ledger = await chain.settle(from_block, timeout=120)
            verdict = audit(report, ledger, before, await chain.balances(), deposit)
        finally:
            await client.close()
        print(f"\n{verdict} in {report.wall_s:.1f} s; first errors: {report.errors[:3]}")
        return report, verdict

    return asyncio.run(main())


def _size() -> tuple[int, int]:
    return (FULL_TOTAL, FULL_CONCURRENCY) if FULL_PROFILE else (FAST_TOTAL, FAST_CONCURRENCY)


def _check(report: LoadReport, verdict: Verdict) -> None:
    verdict.check()
    assert report.unsent == 0, f"{report.unsent} requests not sent within the load's time bound"
    assert len(report.answered) >= MIN_ANSWERED * report.sent, report.errors[:5]


def test_executor_host_and_mlnode_killed_under_load(fault_net: BackgroundDevnet) -> None:
    """host2 (an executor only: the load's TAs are host0/host1) dies a quarter in; host1's ML node dies halfway.
    The TAs fall back to the next executor and record reassigns; then both come back and serve again."""
    net = fault_net
    total, concurrency = _size()
    ml = net.host(1)["mlnodes"][0]
    plan = {total // 4: lambda: kill(net, "host2"), total // 2: lambda: kill(net, ml["node_id"])}

    async def restore() -> None:
        await revive(net, "host2")
        await revive(net, ml["node_id"])
        await wait_mlnode_serving(ml["url"])

    report, verdict = scenario(net, 0, [0, 1], plan, restore, total=total, concurrency=concurrency)
    _check(report, verdict)
    assert verdict.reassigned >= 1, "no reassign recorded although an executor was dead"
    assert asyncio.run(admin_stats(net.host(1)))["mlnode_recoveries"] >= 1  # host1 reloaded its restarted ML node


@pytest.mark.slow
def test_engine_subprocess_killed_under_load(fault_net: BackgroundDevnet) -> None:
    """The llama.cpp server under host0's ML node dies: the node goes FAILED, the TAs fall back, the host reloads."""
    net = fault_net
    total, concurrency = _size()
    ml = net.host(0)["mlnodes"][0]
    killed: list[int] = []

    async def kill_it() -> None:
        killed.append(await kill_engine(ml["url"]))

    async def restore() -> None:
        await wait_mlnode_serving(ml["url"], not_pid=killed[0])

    report, verdict = scenario(net, 1, [0, 1, 2], {total // 3: kill_it}, restore, total=total,
                               concurrency=concurrency)
    _check(report, verdict)
    assert asyncio.run(admin_stats(net.host(0)))["mlnode_recoveries"] >= 1  # FAILED → reloaded by host0


@pytest.mark.slow
def test_one_rpc_endpoint_killed_under_load(fault_net: BackgroundDevnet) -> None:
    """Every host's RPC pool is two forwarders to anvil; one dies a third in: the pools carry on with the other."""
    net = fault_net
    total, concurrency = _size()
    forwarders = RpcForwarders(net)
    forwarders.start()
    try:
        forwarders.route_hosts()

        async def restore() -> None:
            await forwarders.restart_one()

        report, verdict = scenario(net, 2, [0, 1, 2], {total // 3: forwarders.kill_one}, restore, total=total,
                                   concurrency=concurrency)
        _check(report, verdict)
        assert len(report.answered) == report.sent, report.errors[:5]  # the pool hides a dead endpoint entirely
    finally:
        forwarders.route_hosts(direct=True)
        forwarders.stop()


@pytest.mark.slow
def test_ta_killed_under_load_the_sdk_retries_another_ta(fault_net: BackgroundDevnet) -> None:
    """host0 (TA of a third of the requests, and an executor) dies a third in: the SDK re-signs those requests
    for the next TA; host0 comes back and recovers its records from SQLite."""
    net = fault_net
    total, concurrency = _size()

    async def restore() -> None:
        await revive(net, "host0")

    report, verdict = scenario(net, 3, [0, 1, 2], {total // 3: lambda: kill(net, "host0")}, restore, total=total,
                               concurrency=concurrency)
    _check(report, verdict)


def _signed_for(key: str, ta: str, group: dict[str, object], first: str, n: int,
                tag: str) -> list[tuple[bytes, dict[str, str]]]:
    """``n`` distinct signed requests for ``ta`` whose executor order starts with ``first``."""
    out = []
    for k in range(2000):
        body, headers = signed_chat(key, ta, f"{tag} {k}", max_tokens=MAX_TOKENS)
        if order_of(headers, group)[0] == first:
            out.append((body, headers))
            if len(out) == n:
                return out
    raise AssertionError(f"fewer than {n} requests drawn {first} first")


async def _answer_then_kill(net: BackgroundDevnet, ta: int, executor: int, victim: str, key: str,
                            report: LoadReport) -> None:
    """Send a few requests through TA ``ta`` to ``executor`` at once; kill -9 ``victim`` the moment all answered."""
    host = net.host(ta)
    async with httpx.AsyncClient(timeout=60) as http:
        group = next(g for g in (await http.get(f"{host['url']}/v1/epochs/current")).json()["groups"]
                     if g["model"] == TINY)
        requests = _signed_for(key, host["address"], group, net.host(executor)["address"], 3, f"kill {victim}")
        replies = await asyncio.gather(*(http.post(f"{host['url']}/v1/chat/completions", content=b, headers=h)
                                         for b, h in requests))
    await kill(net, victim)
    for r in replies:
        assert r.status_code == 200, r.text
        report.answered.append(r.headers["x-dinfer-inference-id"])
        report.latencies_s.append(r.elapsed.total_seconds())


@pytest.mark.slow
def test_answers_given_right_before_a_kill_are_still_finished(fault_net: BackgroundDevnet) -> None:
    """kill -9 an executor host right after it answered (its finish records wait in memory for their starts), then
    a TA right after it answered (its start batch waits up to ``batch_max_delay_s``): the SQLite outbox makes each
    restarted host submit what it owed, so every answered request is FINISHED exactly once and its executor paid."""
    net = fault_net

    async def main() -> Verdict:
        client = sdk_client(net, client_key(net, 4))
        try:
            chain = ChainAudit(client, [h["address"] for h in net.info.hosts])
            from_block = await chain.head()
            before = await chain.balances()
            deposit = await fund(client)
            report = LoadReport()
            await _answer_then_kill(net, 0, 2, "host2", client.key.private_key, report)  # executor dies
            await _answer_then_kill(net, 1, 0, "host1", client.key.private_key, report)  # TA dies
            await revive(net, "host2")
            await revive(net, "host1")
            await wait_drained(net, timeout=90)
            ledger = await chain.settle(from_block, timeout=120)
            return audit(report, ledger, before, await chain.balances(), deposit)
        finally:
            await client.close()

    verdict = asyncio.run(main())
    print(f"\n{verdict}")
    verdict.check()
    assert verdict.answered == 6 and verdict.expired == 0
    # the killed executor did owe finishes (without the outbox they died with it and the answers were refunded)
    assert "left over from before the restart queued again" in log_of(net, "host2")
