"""Inference.reassign: TA fallback to the next ACTIVE member; the failed executor gets a miss."""

from __future__ import annotations

import pytest
from inference_ledger import Ledger

from dinfer.chain.contracts.epochs import MemberStatus
from dinfer.chain.contracts.inference import InferenceStatus, ReassignRecord
from dinfer.errors import TxReverted
from support import events


def reasons(ledger: Ledger, receipt) -> list[str]:  # type: ignore[no-untyped-def]
    return [e["reason"] for e in events(ledger.inference.contract, receipt, "RecordRejected")]


async def test_reassign_moves_executor_and_pay(ledger: Ledger) -> None:
    rec = await ledger.record()
    await ledger.start(rec)
    nxt = await ledger.next_after(rec.inference_id, rec.executor)
    assert nxt is not None
    receipt = await ledger.as_(ledger.ta).reassign([ReassignRecord(rec.inference_id, rec.executor, nxt)])
    assert events(ledger.inference.contract, receipt, "InferenceReassigned") == [
        {"inference_id": rec.inference_id, "failed_executor": rec.executor, "next_executor": nxt}
    ]
    assert events(ledger.inference.contract, receipt, "MissRecorded")[0]["executor"] == rec.executor
    info = await ledger.inference.get_inference(rec.inference_id)
    assert info.executor == nxt and info.reassigned and info.start_block == receipt["blockNumber"]
    assert (await ledger.inference.executor_stats(1, rec.executor)).missed == 1
    assert (await ledger.inference.executor_stats(1, nxt)).total == 0  # a trial of nxt once it resolves
    assert reasons(ledger, await ledger.finish(rec)) == ["ExecutorReassigned"]
    await ledger.finish(rec, executor=nxt, prompt=10, completion=10)
    assert (await ledger.inference.executor_stats(1, nxt)).total == 1
    assert await ledger.inference.earnings(nxt) == 20 * ledger.price
    assert await ledger.inference.earnings(rec.executor) == 0
    assert (await ledger.inference.get_inference(rec.inference_id)).status == InferenceStatus.FINISHED


async def test_reassign_refusals(ledger: Ledger) -> None:
    rec = await ledger.record()
    await ledger.start(rec)
    nxt = await ledger.next_after(rec.inference_id, rec.executor)
    assert nxt is not None
    wrong_next = next(m.address for m in ledger.members if m.address not in (rec.executor, nxt))
    ta = ledger.as_(ledger.ta)
    receipt = await ta.reassign(
        [
            ReassignRecord(rec.inference_id, nxt, rec.executor),
            ReassignRecord(rec.inference_id, rec.executor, wrong_next),
            ReassignRecord(b"\x05" * 32, rec.executor, nxt),
        ]
    )
    assert reasons(ledger, receipt) == ["NotCurrentExecutor", "WrongNextExecutor", "InferenceNotStarted"]
    other_ta = ledger.as_(ledger.members[3])  # a registered host, but not this inference's TA
    receipt = await other_ta.reassign([ReassignRecord(rec.inference_id, rec.executor, nxt)])
    assert reasons(ledger, receipt) == ["NotTA"]
    for m in ledger.members:
        if m.address != rec.executor:
            await ledger.epochs.governance_set_status(m.address, MemberStatus.INACTIVE)
    receipt = await ta.reassign([ReassignRecord(rec.inference_id, rec.executor, nxt)])
    assert reasons(ledger, receipt) == ["NoActiveExecutor"]
    info = await ledger.inference.get_inference(rec.inference_id)
    assert info.executor == rec.executor and not info.reassigned
    assert (await ledger.inference.executor_stats(1, rec.executor)).missed == 0
    with pytest.raises(TxReverted.named("EmptyBatch")):
        await ta.reassign([])
