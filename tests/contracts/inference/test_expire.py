"""Inference.expire: only after expiration_blocks, refunds the reservation, counts a miss."""

from __future__ import annotations

import pytest
from inference_ledger import Ledger

from dinfer.chain.contracts.inference import InferenceStatus
from dinfer.errors import TxReverted
from support import events


async def test_expire_boundary_refund_and_miss(ledger: Ledger) -> None:
    rec = await ledger.record(prompt=4, max_tokens=6)
    start = (await ledger.start(rec))["blockNumber"]
    expiration = await ledger.registry.param("expiration_blocks")
    balance = await ledger.inference.balance_of(ledger.client.address)
    # the next tx lands in latest + 1: bring latest to start + expiration - 2 → tx at start + expiration - 1
    await ledger.chain.mine(expiration - 2)
    anyone = ledger.as_(ledger.non_owner)
    with pytest.raises(TxReverted.named("ExpireTooEarly")):
        await anyone.expire(rec.inference_id)
    await ledger.chain.mine(1)
    receipt = await anyone.expire(rec.inference_id)
    assert receipt["blockNumber"] == start + expiration
    assert events(ledger.inference.contract, receipt, "InferenceExpired") == [
        {"inference_id": rec.inference_id, "executor": rec.executor, "refund": 10 * ledger.price}
    ]
    assert events(ledger.inference.contract, receipt, "MissRecorded") == [
        {
            "executor": rec.executor,
            "epoch": 1,
            "missed": 1,
            "total": 1,
            "first_missed_block": receipt["blockNumber"],
        }
    ]
    assert await ledger.inference.balance_of(ledger.client.address) == balance + 10 * ledger.price
    assert (await ledger.inference.get_inference(rec.inference_id)).status == InferenceStatus.EXPIRED
    stats = await ledger.inference.executor_stats(1, rec.executor)
    assert (stats.missed, stats.total, stats.first_missed_block) == (1, 1, receipt["blockNumber"])


async def test_first_missed_block_is_kept(ledger: Ledger) -> None:
    executor = ledger.members[0].address
    recs = [await ledger.record(where=lambda e, s: e == executor) for _ in range(2)]
    await ledger.start(*recs)
    await ledger.chain.mine(await ledger.registry.param("expiration_blocks"))
    first = (await ledger.inference.expire(recs[0].inference_id))["blockNumber"]
    await ledger.chain.mine(3)
    await ledger.inference.expire(recs[1].inference_id)
    stats = await ledger.inference.executor_stats(1, executor)
    assert (stats.missed, stats.total, stats.first_missed_block) == (2, 2, first)


async def test_expire_refusals(ledger: Ledger) -> None:
    with pytest.raises(TxReverted.named("InferenceNotStarted")):
        await ledger.inference.expire(b"\x01" * 32)
    rec = await ledger.record()
    await ledger.start(rec)
    await ledger.finish(rec)
    await ledger.chain.mine(await ledger.registry.param("expiration_blocks"))
    with pytest.raises(TxReverted.named("InferenceNotStarted")):
        await ledger.inference.expire(rec.inference_id)
    again = await ledger.record()
    await ledger.start(again)
    await ledger.chain.mine(await ledger.registry.param("expiration_blocks"))
    await ledger.inference.expire(again.inference_id)
    with pytest.raises(TxReverted.named("InferenceNotStarted")):
        await ledger.inference.expire(again.inference_id)
