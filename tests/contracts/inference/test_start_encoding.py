"""The start batch encoding (models listed once, packed record `meta`, skipped lists concatenated per batch):
mixed models and skipped lists land on the right records, a malformed batch reverts whole, and the Python
encoder refuses what the contract has no room for."""

from __future__ import annotations

import dataclasses

import pytest
from eth_utils import keccak
from inference_ledger import Ledger

from dinfer.chain.contracts.epochs import MemberStatus
from dinfer.chain.contracts.inference import (
    MAX_BATCH_SKIPPED,
    MAX_SKIP,
    MAX_START_BATCH,
    InferenceStatus,
    StartRecord,
    start_batch_args,
    start_chunks,
)
from dinfer.errors import TxReverted
from support import events

OTHER_MODEL = keccak(b"dinfer/tiny-random-llama")  # priced by the genesis, but no epoch group


def rejected(ledger: Ledger, receipt) -> dict[bytes, str]:  # type: ignore[no-untyped-def]
    return {bytes(e["inference_id"]): e["reason"] for e in events(ledger.inference.contract, receipt, "RecordRejected")}


async def test_models_and_skipped_lists_reach_their_records(ledger: Ledger) -> None:
    down = ledger.members[0].address
    await ledger.epochs.governance_set_status(down, MemberStatus.INACTIVE)
    skip_a = await ledger.record(where=lambda e, s: s == [down])
    plain = await ledger.record(where=lambda e, s: not s)
    other = await ledger.record(model=OTHER_MODEL, skipped=[])
    unknown = await ledger.record(model=b"\x07" * 32, skipped=[])
    skip_b = await ledger.record(where=lambda e, s: s == [down])
    models, _, skipped = start_batch_args([skip_a, plain, other, unknown, skip_b])
    assert models == [ledger.model, OTHER_MODEL, b"\x07" * 32] and skipped == [down, down]
    receipt = await ledger.start(skip_a, plain, other, unknown, skip_b)
    assert rejected(ledger, receipt) == {other.inference_id: "NoEpochGroup", unknown.inference_id: "UnknownModel"}
    for rec in (skip_a, plain, skip_b):
        info = await ledger.inference.get_inference(rec.inference_id)
        assert (info.status, info.executor, info.skipped) == (InferenceStatus.STARTED, rec.executor, rec.skipped)
        assert (info.model_key, info.reserved_tokens) == (ledger.model, rec.prompt_tokens_est + rec.max_tokens)


async def test_malformed_batches_revert_whole(ledger: Ledger) -> None:
    rec = await ledger.record()
    models, records, skipped = start_batch_args([rec])
    fn = ledger.inference.contract.functions.start_inferences
    body, r, s, meta = records[0]
    ta = ledger.sender_for(ledger.ta)
    stranger = ledger.non_owner.address
    cases = [
        ("BadSkippedList", models, [(body, r, s, meta | 1 << 248)], []),  # claims a skipped member not sent
        ("BadSkippedList", models, records, [stranger]),  # a skipped member no record claims
        ("BadSkippedList", models, [(body, r, s, meta | (MAX_SKIP + 1) << 248)], [stranger] * (MAX_SKIP + 1)),
        ("BadModelSlot", models, [(body, r, s, meta | 1 << 240)], []),
        ("BadModelSlot", [], records, []),
    ]
    for reason, m, recs, skips in cases:
        with pytest.raises(TxReverted.named(reason)):
            await ta.transact(fn(m, recs, skips))
    assert (await ledger.inference.get_inference(rec.inference_id)).status == InferenceStatus.NONE
    await ta.transact(fn(models, records, skipped))  # the well-formed batch still starts
    assert (await ledger.inference.get_inference(rec.inference_id)).status == InferenceStatus.STARTED


async def test_out_of_range_fields_are_rejected_by_name(ledger: Ledger) -> None:
    now = (await ledger.block())["timestamp"]
    far = await ledger.record(timestamp=2**41)  # past the 40-bit field: saturated, then FutureTimestamp
    huge = dataclasses.replace(await ledger.record(), prompt_tokens_est=2**32, max_tokens=2**32)
    ok = await ledger.record(timestamp=now)
    receipt = await ledger.start(far, huge, ok)
    assert rejected(ledger, receipt) == {far.inference_id: "FutureTimestamp", huge.inference_id: "BadTokenCount"}
    assert (await ledger.inference.get_inference(ok.inference_id)).status == InferenceStatus.STARTED


def _rec(i: int, skips: int) -> StartRecord:
    sig = i.to_bytes(32, "big") + bytes(31) + b"\x01" + b"\x1b"
    return StartRecord(bytes(32), 1, sig, bytes(32), "0x" + "11" * 20, tuple(f"0x{j:040x}" for j in range(skips)))


def test_encoder_limits_and_chunks() -> None:
    with pytest.raises(ValueError, match="skips 33"):
        start_batch_args([_rec(0, MAX_SKIP + 1)])
    with pytest.raises(ValueError, match="at most 64"):
        start_batch_args([_rec(i, 0) for i in range(MAX_START_BATCH + 1)])
    crowded = [_rec(i, MAX_SKIP) for i in range(MAX_BATCH_SKIPPED // MAX_SKIP + 1)]
    with pytest.raises(ValueError, match="skipped members in one start batch"):
        start_batch_args(crowded)
    chunks = start_chunks(crowded + [_rec(i, 0) for i in range(100)])
    assert [len(c) for c in chunks] == [8, 64, 37]
    assert [r for c in chunks for r in c] == crowded + [_rec(i, 0) for i in range(100)]
    for chunk in chunks:
        start_batch_args(chunk)  # every chunk fits
