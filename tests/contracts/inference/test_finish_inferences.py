"""Inference.finish_inferences: charge, refund, earnings, duplicates, wrong finisher, alternative finisher."""

from __future__ import annotations

import pytest
from inference_ledger import Ledger

from dinfer.chain.contracts.inference import FinishRecord, InferenceStatus
from dinfer.errors import TxReverted
from support import events


def reasons(ledger: Ledger, receipt) -> list[str]:  # type: ignore[no-untyped-def]
    return [e["reason"] for e in events(ledger.inference.contract, receipt, "RecordRejected")]


async def test_finish_charges_and_refunds(ledger: Ledger) -> None:
    rec = await ledger.record(prompt=10, max_tokens=20)
    await ledger.start(rec)
    balance = await ledger.inference.balance_of(ledger.client.address)
    receipt = await ledger.as_(ledger.member(rec.executor)).finish_inferences(
        [FinishRecord(rec.inference_id, 12, 7, b"\x11" * 32)]
    )
    cost, refund = 19 * ledger.price, 11 * ledger.price
    assert events(ledger.inference.contract, receipt, "InferenceFinished") == [
        {
            "inference_id": rec.inference_id,
            "executor": rec.executor,
            "prompt_tokens": 12,
            "completion_tokens": 7,
            "response_hash": b"\x11" * 32,
        }
    ]
    assert await ledger.inference.balance_of(ledger.client.address) == balance + refund
    assert await ledger.inference.earnings(rec.executor) == cost
    info = await ledger.inference.get_inference(rec.inference_id)
    assert (info.status, info.prompt_tokens, info.completion_tokens, info.cost) == (
        InferenceStatus.FINISHED,
        12,
        7,
        cost,
    )


async def test_duplicate_finish_is_a_noop_event(ledger: Ledger) -> None:
    rec = await ledger.record()
    await ledger.start(rec)
    await ledger.finish(rec)
    earned = await ledger.inference.earnings(rec.executor)
    balance = await ledger.inference.balance_of(ledger.client.address)
    receipt = await ledger.finish(rec, completion=9)
    assert events(ledger.inference.contract, receipt, "DuplicateFinish") == [
        {"inference_id": rec.inference_id, "sender": rec.executor}
    ]
    assert events(ledger.inference.contract, receipt, "InferenceFinished") == []
    assert ledger.inference.outcome(receipt, "finish").duplicates == (rec.inference_id,)
    assert await ledger.inference.earnings(rec.executor) == earned
    assert await ledger.inference.balance_of(ledger.client.address) == balance


async def test_bad_finishes_rejected_without_effect(ledger: Ledger) -> None:
    rec = await ledger.record(prompt=5, max_tokens=5)
    await ledger.start(rec)
    other = next(m for m in ledger.members if m.address != rec.executor)
    receipt = await ledger.as_(other).finish_inferences([FinishRecord(rec.inference_id, 1, 1)])
    assert reasons(ledger, receipt) == ["NotExecutor"]
    receipt = await ledger.as_(ledger.non_owner).finish_inferences([FinishRecord(rec.inference_id, 1, 1)])
    assert reasons(ledger, receipt) == ["NotExecutor"]
    executor = ledger.as_(ledger.member(rec.executor))
    receipt = await executor.finish_inferences([FinishRecord(b"\x42" * 32, 1, 1), FinishRecord(rec.inference_id, 6, 5)])
    assert reasons(ledger, receipt) == ["UnknownInference", "TokensExceedReserve"]
    assert (await ledger.inference.get_inference(rec.inference_id)).status == InferenceStatus.STARTED
    assert await ledger.inference.earnings(rec.executor) == 0
    with pytest.raises(TxReverted.named("EmptyBatch")):
        await executor.finish_inferences([])


async def test_finish_batch_of_many(ledger: Ledger) -> None:
    recs = [await ledger.record(where=lambda e, s: e == ledger.members[0].address) for _ in range(5)]
    await ledger.start(*recs)
    receipt = await ledger.as_(ledger.members[0]).finish_inferences(
        [FinishRecord(r.inference_id, 10, 10) for r in recs]
    )
    assert len(events(ledger.inference.contract, receipt, "InferenceFinished")) == 5
    assert await ledger.inference.earnings(ledger.members[0].address) == 5 * 20 * ledger.price


async def test_finish_after_expire_refused(ledger: Ledger) -> None:
    rec = await ledger.record()
    await ledger.start(rec)
    await ledger.chain.mine(await ledger.registry.param("expiration_blocks"))
    await ledger.inference.expire(rec.inference_id)
    assert reasons(ledger, await ledger.finish(rec)) == ["InferenceNotStarted"]
    assert await ledger.inference.earnings(rec.executor) == 0


async def test_late_finish_by_original_before_expire_is_paid(ledger: Ledger) -> None:
    rec = await ledger.record()
    await ledger.start(rec)
    await ledger.chain.mine(await ledger.registry.param("expiration_blocks") + 5)
    await ledger.finish(rec)
    assert (await ledger.inference.get_inference(rec.inference_id)).status == InferenceStatus.FINISHED


async def test_alternative_finisher_after_expiry_is_paid(ledger: Ledger) -> None:
    rec = await ledger.record()
    await ledger.start(rec)
    nxt = await ledger.next_after(rec.inference_id, rec.executor)
    assert nxt is not None
    early = await ledger.finish(rec, executor=nxt)
    assert reasons(ledger, early) == ["NotExecutor"]
    await ledger.chain.mine(await ledger.registry.param("expiration_blocks"))
    third = next(m.address for m in ledger.members if m.address not in (rec.executor, nxt))
    assert reasons(ledger, await ledger.finish(rec, executor=third)) == ["NotExecutor"]
    receipt = await ledger.finish(rec, executor=nxt, prompt=10, completion=10)
    assert events(ledger.inference.contract, receipt, "InferenceFinished")[0]["executor"] == nxt
    (miss,) = events(ledger.inference.contract, receipt, "MissRecorded")
    assert miss["executor"] == rec.executor and miss["missed"] == 1
    info = await ledger.inference.get_inference(rec.inference_id)
    assert info.executor == nxt and info.status == InferenceStatus.FINISHED
    assert await ledger.inference.earnings(nxt) == 20 * ledger.price
    assert (await ledger.inference.executor_stats(1, nxt)).total == 1
    assert reasons(ledger, await ledger.finish(rec)) == []  # the original now: a duplicate no-op
    assert await ledger.inference.earnings(rec.executor) == 0


async def test_finish_batch_across_epoch_groups(ledger: Ledger) -> None:
    """One batch may finish records of different epoch groups, where the executor sits at different positions."""
    me = ledger.members[0].address
    old = await ledger.record(where=lambda e, s: e == me)
    await ledger.start(old)
    reversed_group = list(reversed(ledger.group))
    await ledger.epochs.add_group(2, ledger.model, reversed_group, list(reversed(ledger.weights)))
    await ledger.epochs.advance_epoch()
    ledger.group, ledger.weights = reversed_group, list(reversed(ledger.weights))
    new = await ledger.record(where=lambda e, s: e == me)
    not_mine = await ledger.record(where=lambda e, s: e != me)
    await ledger.start(new, not_mine)
    receipt = await ledger.as_(ledger.members[0]).finish_inferences(
        [
            FinishRecord(old.inference_id, 1, 1),
            FinishRecord(not_mine.inference_id, 1, 1),
            FinishRecord(new.inference_id, 2, 2),
        ]
    )
    outcome = ledger.inference.outcome(receipt, "finish")
    assert outcome.applied == (old.inference_id, new.inference_id)
    assert outcome.rejected == {not_mine.inference_id: "NotExecutor"}
    assert await ledger.inference.earnings(me) == 6 * ledger.price
    assert (await ledger.inference.get_inference(new.inference_id)).epoch == 2
