"""Disputes: a failed validation, the deterministic tie-breaker, refund + invalid count + INVALID + slash at the
threshold, liar marks, and the debt an executor owes when it already withdrew its earnings."""

from __future__ import annotations

import pytest
from validation_helpers import VLedger, rate_of, sampled, tiebreaker

from dinfer.chain.contracts.epochs import MemberStatus
from dinfer.chain.contracts.inference import InferenceStatus, ValidationOutcome
from dinfer.errors import TxReverted
from dinfer.validation import REPUTATION_FACTOR
from support import events


async def open_dispute(vl: VLedger, rec) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """The first non-executor member fails the inference; returns (first validator, tie-breaker)."""
    base = vl.base
    first = next(m for m in base.group if m != rec.executor)
    receipt = await vl.as_(base.member(first)).validate(rec.inference_id, False, 100_000)
    [opened] = events(vl.validation.contract, receipt, "DisputeOpened")
    expected = tiebreaker(base, rec.inference_id, rec.executor, first, [True] * len(base.group))
    assert expected is not None and opened["tiebreaker"] == expected and opened["validator"] == first
    [ev] = events(vl.validation.contract, receipt, "Validated")
    assert ev["fee"] == 0  # the opener is paid only when the tie-breaker confirms
    state = await vl.validation.validation_of(rec.inference_id)
    assert state.outcome == ValidationOutcome.DISPUTED and state.first_invalid == first
    assert state.tiebreaker == expected and state.dispute_block == receipt["blockNumber"]
    assert await vl.validation.tiebreaker_for(rec.inference_id, first) == expected
    return first, expected


async def test_confirmed_invalid_refunds_counts_invalidates_and_slashes(vl: VLedger) -> None:
    base = vl.base
    await vl.set_param("validation_rate_bps", 10_000)
    await vl.set_param("invalid_threshold", 1)
    share = await base.registry.param("validator_share_bps")
    fraction = await base.registry.param("slash_fraction_invalid_bps")
    rec = await vl.finished(prompt=10, completion=5)
    info = await base.inference.get_inference(rec.inference_id)
    first, breaker = await open_dispute(vl, rec)
    client_before = await base.inference.balance_of(base.client.address)
    earned_before = await base.inference.earnings(rec.executor)
    collateral_before = await base.registry.collateral_of(rec.executor)
    receipt = await vl.as_(base.member(breaker)).validate(rec.inference_id, False, 50_000)
    fee = info.cost * share // 10_000
    assert (await base.inference.get_inference(rec.inference_id)).status == InferenceStatus.INVALIDATED
    assert await base.inference.balance_of(base.client.address) == client_before + info.cost
    assert earned_before == info.cost  # the refund takes all of it: both fees become the executor's debt
    assert await base.inference.earnings(rec.executor) == 0
    assert await base.inference.debt_of(rec.executor) == 2 * fee
    assert await base.inference.owed(rec.executor, first) == (0, fee)
    assert await base.inference.owed(rec.executor, breaker) == (0, fee)
    assert await vl.validation.invalid_count(1, rec.executor) == 1
    assert await vl.validation.invalid_slashed(1, rec.executor)
    assert await base.epochs.status_of(1, rec.executor) == MemberStatus.INVALID
    slashed = collateral_before * fraction // 10_000
    assert await base.registry.collateral_of(rec.executor) == collateral_before - slashed
    [resolved] = events(vl.validation.contract, receipt, "DisputeResolved")
    assert resolved["confirmed_invalid"] and resolved["tiebreaker"] == breaker
    [inv] = events(base.inference.contract, receipt, "InferenceInvalidated")
    assert inv["refund"] == info.cost and inv["client"] == base.client.address
    [sl] = events(vl.validation.contract, receipt, "InvalidSlashed")
    assert sl["amount"] == slashed and sl["executor"] == rec.executor
    assert (await vl.validation.validation_of(rec.inference_id)).outcome == ValidationOutcome.CONFIRMED_INVALID
    with pytest.raises(TxReverted.named("NotFinished")):  # INVALIDATED: no more validations
        await vl.as_(base.member(breaker)).validate(rec.inference_id, False, 1)


async def test_below_threshold_counts_without_slashing(vl: VLedger) -> None:
    base = vl.base
    await vl.set_param("validation_rate_bps", 10_000)
    assert await base.registry.param("invalid_threshold") == 3
    rec = await vl.finished()
    _, breaker = await open_dispute(vl, rec)
    collateral = await base.registry.collateral_of(rec.executor)
    await vl.as_(base.member(breaker)).validate(rec.inference_id, False, 1)
    assert await vl.validation.invalid_count(1, rec.executor) == 1
    assert not await vl.validation.invalid_slashed(1, rec.executor)
    assert await base.epochs.status_of(1, rec.executor) == MemberStatus.ACTIVE
    assert await base.registry.collateral_of(rec.executor) == collateral
    # once caught, the executor is checked twice as often again (on top of the new-executor factor)
    await vl.set_param("validation_rate_bps", 1_000)
    for _ in range(40):
        again = await vl.finished()
        if again.executor == rec.executor:
            break
    else:
        pytest.fail("the caught executor was never drawn again")
    rate = await rate_of(vl, again.inference_id)
    assert rate == min(10_000, 1_000 * REPUTATION_FACTOR**2 // (len(base.group) - 1))
    for member in base.group:
        assert await vl.validation.is_selected(again.inference_id, member) == sampled(again.inference_id, member, rate)


async def test_contradicted_invalid_marks_the_first_validator(vl: VLedger) -> None:
    base = vl.base
    await vl.set_param("validation_rate_bps", 10_000)
    share = await base.registry.param("validator_share_bps")
    rec = await vl.finished()
    info = await base.inference.get_inference(rec.inference_id)
    first, breaker = await open_dispute(vl, rec)
    with pytest.raises(TxReverted.named("AlreadyValidated")):
        await vl.as_(base.member(first)).validate(rec.inference_id, False, 1)
    receipt = await vl.as_(base.member(breaker)).validate(rec.inference_id, True, 990_000)
    [mark] = events(vl.validation.contract, receipt, "LiarMarked")
    assert mark["validator"] == first and mark["count"] == 1
    assert await vl.validation.liar_count(1, first) == 1
    assert await base.inference.earnings(first) == 0  # a contradicted opener is never paid
    assert await base.inference.earnings(breaker) == info.cost * share // 10_000
    assert (await base.inference.get_inference(rec.inference_id)).status == InferenceStatus.FINISHED
    assert await vl.validation.invalid_count(1, rec.executor) == 0
    assert (await vl.validation.validation_of(rec.inference_id)).outcome == ValidationOutcome.CONTRADICTED


async def test_tiebreaker_window_starts_at_the_dispute(vl: VLedger) -> None:
    base = vl.base
    await vl.set_param("validation_rate_bps", 10_000)
    await vl.set_param("validation_window_blocks", 3)
    rec = await vl.finished()
    _, breaker = await open_dispute(vl, rec)
    await base.chain.mine(3)
    with pytest.raises(TxReverted.named("ValidationWindowClosed")):
        await vl.as_(base.member(breaker)).validate(rec.inference_id, False, 1)


async def test_withdrawn_earnings_become_debt_settled_from_later_earnings(vl: VLedger) -> None:
    base = vl.base
    await vl.set_param("validation_rate_bps", 10_000)
    rec = await vl.finished(prompt=10, completion=5)
    info = await base.inference.get_inference(rec.inference_id)
    executor = base.member(rec.executor)
    await base.as_(executor).withdraw_earnings()
    _, breaker = await open_dispute(vl, rec)
    client_before = await base.inference.balance_of(base.client.address)
    await vl.as_(base.member(breaker)).validate(rec.inference_id, False, 1)
    assert await base.inference.balance_of(base.client.address) == client_before  # nothing to take from
    assert await base.inference.owed(rec.executor, base.client.address) == (info.cost, 0)
    debt = await base.inference.debt_of(rec.executor)
    assert debt > info.cost  # refund + the two validators' fees
    later = await base.record(where=lambda e, s: e == rec.executor, prompt=10, max_tokens=200)
    await base.start(later)
    await base.finish(later, prompt=10, completion=190)
    with pytest.raises(TxReverted.named("OutstandingDebt")):
        await base.as_(executor).withdraw_earnings()
    client_before = await base.inference.balance_of(base.client.address)
    receipt = await base.inference.settle_debt(rec.executor, base.client.address)
    [settled] = events(base.inference.contract, receipt, "DebtSettled")
    assert settled["refund"] == info.cost and settled["fee"] == 0
    assert await base.inference.balance_of(base.client.address) == client_before + info.cost
    assert await base.inference.debt_of(rec.executor) == debt - info.cost
    with pytest.raises(TxReverted.named("NothingToSettle")):
        await base.inference.settle_debt(rec.executor, base.client.address)
