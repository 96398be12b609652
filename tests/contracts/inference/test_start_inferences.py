"""Inference.start_inferences: signatures, time window, replay, balance, model, executor order, batches."""

from __future__ import annotations

import pytest
from inference_ledger import Ledger

from dinfer.chain.contracts.epochs import MemberStatus
from dinfer.chain.contracts.inference import InferenceStatus
from dinfer.crypto import SECP256K1_N
from dinfer.errors import TxReverted
from support import events


async def rejected(ledger: Ledger, receipt) -> list[tuple[bytes, str]]:  # type: ignore[no-untyped-def]
    found = events(ledger.inference.contract, receipt, "RecordRejected")
    return [(bytes(e["inference_id"]), e["reason"]) for e in found]


async def test_start_reserves_and_records(ledger: Ledger) -> None:
    rec = await ledger.record(prompt=10, max_tokens=20)
    before = await ledger.inference.balance_of(ledger.client.address)
    receipt = await ledger.start(rec)
    assert await rejected(ledger, receipt) == []
    (ev,) = events(ledger.inference.contract, receipt, "InferenceStarted")
    reserve = 30 * ledger.price
    assert ev == {"inference_id": rec.inference_id, "client": ledger.client.address, "executor": rec.executor}
    assert await ledger.inference.balance_of(ledger.client.address) == before - reserve
    info = await ledger.inference.get_inference(rec.inference_id)
    assert info.status == InferenceStatus.STARTED and not info.reassigned
    assert (info.client, info.ta, info.executor, info.model_key) == (
        ledger.client.address,
        ledger.ta.address,
        rec.executor,
        ledger.model,
    )
    assert (info.reserved_tokens, info.reserved, info.price_per_token, info.cost) == (30, reserve, ledger.price, 0)
    assert info.start_block == receipt["blockNumber"] and info.epoch == 1
    # a running inference is no MissedStatTest trial yet; its finish is one
    stats = await ledger.inference.executor_stats(1, rec.executor)
    assert (stats.total, stats.missed, stats.slashed, stats.status) == (0, 0, False, MemberStatus.ACTIVE)
    await ledger.finish(rec)
    assert (await ledger.inference.executor_stats(1, rec.executor)).total == 1


async def test_unknown_inference_query_is_empty(ledger: Ledger) -> None:
    info = await ledger.inference.get_inference(bytes(32))
    assert info.status == InferenceStatus.NONE and info.reserved == 0


async def test_only_registered_hosts_start(ledger: Ledger) -> None:
    rec = await ledger.record(ta=ledger.non_owner)
    with pytest.raises(TxReverted.named("NotHost")):
        await ledger.start(rec, ta=ledger.non_owner)
    with pytest.raises(TxReverted.named("EmptyBatch")):
        await ledger.as_(ledger.ta).start_inferences([])


async def test_replay_refused_forever(ledger: Ledger) -> None:
    rec = await ledger.record()
    await ledger.start(rec)
    balance = await ledger.inference.balance_of(ledger.client.address)
    receipt = await ledger.start(rec)
    assert await rejected(ledger, receipt) == [(rec.inference_id, "DuplicateInference")]
    assert await ledger.inference.balance_of(ledger.client.address) == balance
    await ledger.finish(rec)
    assert await rejected(ledger, await ledger.start(rec)) == [(rec.inference_id, "DuplicateInference")]


async def test_signature_checks(ledger: Ledger) -> None:
    good = await ledger.record()
    sig = good.signature
    high_s = sig[:32] + (SECP256K1_N - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big") + bytes([55 - sig[64]])
    bad_v = sig[:64] + bytes([29])
    garbage = bytes(32) + bytes(31) + b"\x01" + bytes([27])  # r = 0: ecrecover fails
    recs = [replace_sig(good, s) for s in (high_s, bad_v, garbage)]
    # a different TA than the one the client signed for recovers a different (unfunded) client
    other_ta = await ledger.record()
    receipt = await ledger.start(*recs, other_ta, ta=ledger.member(ledger.members[0].address))
    reasons = [r for _, r in await rejected(ledger, receipt)]
    assert reasons == ["InvalidSignature", "InvalidSignature", "InvalidSignature", "InsufficientBalance"]
    assert events(ledger.inference.contract, receipt, "InferenceStarted") == []


def replace_sig(rec, sig: bytes):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return replace(rec, signature=sig)


async def test_timestamp_window(ledger: Ledger) -> None:
    now = (await ledger.block())["timestamp"]
    window = await ledger.registry.param("request_window_seconds")
    stale = await ledger.record(timestamp=now - window - 10)
    future = await ledger.record(timestamp=now + window + 10)
    edge = await ledger.record(timestamp=now - window + 5)
    receipt = await ledger.start(stale, future, edge)
    assert await rejected(ledger, receipt) == [
        (stale.inference_id, "StaleTimestamp"),
        (future.inference_id, "FutureTimestamp"),
    ]
    assert len(events(ledger.inference.contract, receipt, "InferenceStarted")) == 1


async def test_balance_model_and_tokens(ledger: Ledger) -> None:
    broke = ledger.non_owner  # never deposited
    no_funds = await ledger.record(client=broke)
    too_big = await ledger.record(prompt=2**24 - 1, max_tokens=2**24 - 1)
    zero = await ledger.record(prompt=0, max_tokens=0)
    unknown_model = await ledger.record(model=b"\x01" * 32)
    huge = await ledger.record(prompt=10**6, max_tokens=10**6)  # 2e6 tokens × 1 gwei = 0.002 ETH: affordable
    pricey = await ledger.record(prompt=2**23, max_tokens=2**23 - 1)  # 16.7e6 × 1 gwei = 0.0168 ETH: affordable
    balance = await ledger.inference.balance_of(ledger.client.address)
    receipt = await ledger.start(no_funds, too_big, zero, unknown_model, huge, pricey)
    assert [r for _, r in await rejected(ledger, receipt)] == [
        "InsufficientBalance",
        "BadTokenCount",
        "BadTokenCount",
        "UnknownModel",
    ]
    spent = (2 * 10**6 + 2**24 - 1) * ledger.price
    assert await ledger.inference.balance_of(ledger.client.address) == balance - spent
    await ledger.as_(ledger.client).withdraw(balance - spent)
    poor = await ledger.record(prompt=1, max_tokens=1)
    assert [r for _, r in await rejected(ledger, await ledger.start(poor))] == ["InsufficientBalance"]


async def test_executor_must_be_first_active(ledger: Ledger) -> None:
    rec = await ledger.record(where=lambda e, s: True)
    others = [m.address for m in ledger.members if m.address != rec.executor]
    wrong = await ledger.record(executor=others[0], where=lambda e, s: e != others[0] and not s)
    stranger = await ledger.record(executor=ledger.non_owner.address)
    receipt = await ledger.start(wrong, stranger)
    assert [r for _, r in await rejected(ledger, receipt)] == ["WrongExecutor", "ExecutorNotInGroup"]


async def test_skipped_list_rules(ledger: Ledger) -> None:
    epoch = await ledger.epochs.current_epoch()
    down = ledger.members[0].address
    await ledger.epochs.governance_set_status(down, MemberStatus.INACTIVE)
    # the spec skips `down` when it is drawn first
    skipping = await ledger.record(where=lambda e, s: s == [down])
    assert skipping.skipped == (down,)
    missing_skip = await ledger.record(skipped=[], where=lambda e, s: s == [down])
    active_skipped = await ledger.record(
        skipped=[ledger.members[1].address], executor=ledger.members[2].address, where=lambda e, s: not s
    )
    stranger_skipped = await ledger.record(skipped=[ledger.non_owner.address], where=lambda e, s: not s)
    extra_skip = await ledger.record(skipped=[down], where=lambda e, s: not s and e != down)
    receipt = await ledger.start(skipping, missing_skip, active_skipped, stranger_skipped, extra_skip)
    assert [r for _, r in await rejected(ledger, receipt)] == [
        "WrongSkippedList",
        "SkippedExecutorActive",
        "WrongSkippedList",
        "WrongSkippedList",
    ]
    info = await ledger.inference.get_inference(skipping.inference_id)
    assert info.skipped == (down,) and info.executor == skipping.executor
    assert (await ledger.inference.executor_stats(epoch, down)).total == 0


async def test_no_active_executor_and_no_group(ledger: Ledger) -> None:
    for m in ledger.members:
        await ledger.epochs.governance_set_status(m.address, MemberStatus.INACTIVE)
    nobody = await ledger.record()
    other_model = await ledger.record(
        model=bytes.fromhex("".join(f"{b:02x}" for b in __import__("eth_utils").keccak(b"dinfer/tiny-random-llama")))
    )
    receipt = await ledger.start(nobody, other_model)
    assert [r for _, r in await rejected(ledger, receipt)] == ["NoActiveExecutor", "NoEpochGroup"]


async def test_bad_record_does_not_lose_the_batch(ledger: Ledger) -> None:
    good = [await ledger.record() for _ in range(3)]
    stale = await ledger.record(timestamp=1)
    receipt = await ledger.start(good[0], stale, good[1], good[2])
    assert await rejected(ledger, receipt) == [(stale.inference_id, "StaleTimestamp")]
    outcome = ledger.inference.outcome(receipt, "start")
    assert outcome.applied == tuple(r.inference_id for r in good)
    assert outcome.rejected == {stale.inference_id: "StaleTimestamp"} and outcome.duplicates == ()
    for rec in good:
        assert (await ledger.inference.get_inference(rec.inference_id)).status == InferenceStatus.STARTED
    assert (await ledger.inference.get_inference(stale.inference_id)).status == InferenceStatus.NONE
