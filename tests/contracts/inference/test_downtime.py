"""Downtime slashing: ACTIVE only, after the grace window, when MissedStatTest fails, once per epoch."""

from __future__ import annotations

from inference_ledger import COLLATERAL, Ledger

from dinfer.chain.contracts.epochs import MemberStatus
from dinfer.chain.contracts.inference import StartRecord
from support import events


async def failing_misses(
    ledger: Ledger, executor: str, total: int = 3, misses: int = 2, pending: int = 0
) -> tuple[list[StartRecord], int]:
    """Give ``executor`` ``total`` MissedStatTest trials, ``misses`` of them missed; returns (records, first miss
    block). ``recs[:misses]`` expired, ``recs[misses:total]`` finished, ``recs[total:]`` (``pending`` more) still
    STARTED: a running inference is no trial until it finishes or is missed.

    With p0 = 0.10 and alpha = 0.05, 2 misses out of 3 fail MissedStatTest (critical value 2).
    """
    recs = [await ledger.record(where=lambda e, s: e == executor) for _ in range(total + pending)]
    await ledger.start(*recs)
    for rec in recs[misses:total]:
        await ledger.finish(rec)
    await ledger.chain.mine(await ledger.registry.param("expiration_blocks"))
    first = 0
    for rec in recs[:misses]:
        receipt = await ledger.inference.expire(rec.inference_id)
        first = first or receipt["blockNumber"]
    return recs, first


async def test_grace_window_boundary(ledger: Ledger) -> None:
    executor = ledger.members[0].address
    _, first = await failing_misses(ledger, executor)
    assert await ledger.inference.missed_stat_test_fails(2, 3)
    grace = await ledger.registry.param("downtime_grace_blocks")
    latest = (await ledger.block())["number"]
    await ledger.chain.mine(first + grace - 2 - latest)  # next tx mined at first + grace - 1
    receipt = await ledger.inference.report_downtime(executor)
    assert receipt["blockNumber"] == first + grace - 1
    assert events(ledger.inference.contract, receipt, "ExecutorSlashed") == []
    assert await ledger.registry.collateral_of(executor) == COLLATERAL
    receipt = await ledger.inference.report_downtime(executor)  # mined at first + grace
    assert receipt["blockNumber"] == first + grace
    fraction = await ledger.registry.param("slash_fraction_downtime_bps")
    amount = COLLATERAL * fraction // 10_000
    assert events(ledger.inference.contract, receipt, "ExecutorSlashed") == [
        {"executor": executor, "epoch": 1, "amount": amount, "missed": 2, "total": 3}
    ]
    assert events(ledger.epochs.contract, receipt, "StatusChanged") == [
        {"epoch": 1, "member": executor, "status": MemberStatus.INACTIVE}
    ]
    assert await ledger.registry.collateral_of(executor) == COLLATERAL - amount
    stats = await ledger.inference.executor_stats(1, executor)
    assert stats.slashed and stats.status == MemberStatus.INACTIVE


async def test_slash_on_expire_and_never_twice(ledger: Ledger) -> None:
    executor = ledger.members[0].address
    recs, _ = await failing_misses(ledger, executor, total=3, misses=1, pending=3)
    await ledger.chain.mine(await ledger.registry.param("downtime_grace_blocks"))
    receipt = await ledger.inference.expire(recs[3].inference_id)  # 2 of 4: passes the test (critical 3)
    assert events(ledger.inference.contract, receipt, "ExecutorSlashed") == []
    receipt = await ledger.inference.expire(recs[4].inference_id)  # 3 of 5: fails (critical 3) → slash
    assert len(events(ledger.inference.contract, receipt, "ExecutorSlashed")) == 1
    collateral = await ledger.registry.collateral_of(executor)
    # even if governance re-activates it, a second slash in the same epoch never happens
    await ledger.epochs.governance_set_status(executor, MemberStatus.ACTIVE)
    receipt = await ledger.inference.expire(recs[5].inference_id)
    assert events(ledger.inference.contract, receipt, "ExecutorSlashed") == []
    await ledger.inference.report_downtime(executor)
    assert await ledger.registry.collateral_of(executor) == collateral


async def test_no_slash_when_not_active_or_test_passes(ledger: Ledger) -> None:
    a, b = ledger.members[0].address, ledger.members[1].address
    await failing_misses(ledger, a)
    await ledger.epochs.governance_set_status(a, MemberStatus.INACTIVE)
    recs, _ = await failing_misses(ledger, b, total=10, misses=3, pending=1)  # 3 of 10 passes (critical 4)
    await ledger.chain.mine(await ledger.registry.param("downtime_grace_blocks"))
    for who in (a, b):
        receipt = await ledger.inference.report_downtime(who)
        assert events(ledger.inference.contract, receipt, "ExecutorSlashed") == []
        assert await ledger.registry.collateral_of(who) == COLLATERAL
    await ledger.inference.expire(recs[10].inference_id)  # 4 of 11 fails (critical 4) → slash now
    assert (await ledger.inference.executor_stats(1, b)).slashed
    assert await ledger.registry.collateral_of(b) < COLLATERAL


async def test_epoch_switch_resets_stats_and_status(ledger: Ledger) -> None:
    executor = ledger.members[0].address
    recs, _ = await failing_misses(ledger, executor, total=3, misses=2, pending=1)
    await ledger.chain.mine(await ledger.registry.param("downtime_grace_blocks"))
    await ledger.inference.report_downtime(executor)
    assert (await ledger.inference.executor_stats(1, executor)).slashed
    await ledger.epochs.add_group(2, ledger.model, [m.address for m in ledger.members], ledger.weights)
    await ledger.epochs.advance_epoch()
    fresh = await ledger.inference.executor_stats(2, executor)
    assert (fresh.missed, fresh.total, fresh.first_missed_block, fresh.slashed) == (0, 0, 0, False)
    assert fresh.status == MemberStatus.ACTIVE
    # an old epoch's inference expiring now counts in epoch 1 and cannot slash anyone in epoch 2
    collateral = await ledger.registry.collateral_of(executor)
    await ledger.inference.expire(recs[3].inference_id)
    assert (await ledger.inference.executor_stats(1, executor)).missed == 3
    assert (await ledger.inference.executor_stats(2, executor)).missed == 0
    # epoch 2: the executor can be slashed again (once)
    _, _ = await failing_misses(ledger, executor)
    await ledger.chain.mine(await ledger.registry.param("downtime_grace_blocks"))
    receipt = await ledger.inference.report_downtime(executor)
    assert events(ledger.inference.contract, receipt, "ExecutorSlashed")[0]["epoch"] == 2
    assert await ledger.registry.collateral_of(executor) < collateral
