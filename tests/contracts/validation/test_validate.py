"""Validation.validate: sampling on chain vs the spec formula, validator pay, and every named revert."""

from __future__ import annotations

import os

import pytest
from validation_helpers import VLedger, rate_of, sampled

from dinfer.chain.contracts.epochs import MemberStatus
from dinfer.chain.contracts.inference import ValidationOutcome
from dinfer.errors import TxReverted
from dinfer.validation import NEW_EXECUTOR_INFERENCES, REPUTATION_FACTOR
from support import events


async def test_sampling_matches_the_spec_formula(vl: VLedger) -> None:
    """Per-validator rate = base split over the other members, ×2 for a new executor (all are new here)."""
    records = [await vl.finished() for _ in range(8)]
    picked = 0
    for rec in records:
        rate = await rate_of(vl, rec.inference_id)
        info = await vl.base.inference.get_inference(rec.inference_id)
        base = await vl.base.registry.param("validation_rate_bps")
        assert rate == min(10_000, base * REPUTATION_FACTOR // (len(vl.base.group) - 1))
        assert (await vl.base.inference.executor_stats(info.epoch, info.executor)).total < NEW_EXECUTOR_INFERENCES
        for member in vl.base.group:
            expected = sampled(rec.inference_id, member, rate)
            picked += expected
            assert await vl.validation.is_selected(rec.inference_id, member) == expected
    assert 0 < picked < len(records) * len(vl.base.group)  # both outcomes occur
    rid = records[0].inference_id
    assert not sampled(rid, vl.base.group[0], 0) and sampled(rid, vl.base.group[0], 10_000)
    await vl.set_param("validation_rate_bps", 10_000)  # audit: every member, every inference
    assert all([await vl.validation.is_selected(r.inference_id, m) for r in records[:2] for m in vl.base.group])


async def test_selected_validator_is_paid_and_unselected_one_refused(vl: VLedger) -> None:
    base = vl.base
    share = await base.registry.param("validator_share_bps")
    for _ in range(40):  # an inference with one sampled and one unsampled non-executor member
        rec = await vl.finished()
        rate = await rate_of(vl, rec.inference_id)
        others = [m for m in base.group if m != rec.executor]
        chosen = [m for m in others if sampled(rec.inference_id, m, rate)]
        left = [m for m in others if not sampled(rec.inference_id, m, rate)]
        if chosen and left:
            break
    else:
        pytest.fail("no inference with both a sampled and an unsampled validator")
    info = await base.inference.get_inference(rec.inference_id)
    with pytest.raises(TxReverted.named("NotSelected")):
        await vl.as_(base.member(left[0])).validate(rec.inference_id, True, 990_000)
    validator = chosen[0]
    before_v = await base.inference.earnings(validator)
    before_e = await base.inference.earnings(rec.executor)
    receipt = await vl.as_(base.member(validator)).validate(rec.inference_id, True, 990_000)
    fee = info.cost * share // 10_000
    assert fee > 0
    [ev] = events(vl.validation.contract, receipt, "Validated")
    assert ev["validator"] == validator and ev["ok"] and ev["score_ppm"] == 990_000 and ev["fee"] == fee
    assert await base.inference.earnings(validator) == before_v + fee
    assert await base.inference.earnings(rec.executor) == before_e - fee
    state = await vl.validation.validation_of(rec.inference_id)
    assert state.outcome == ValidationOutcome.NONE and state.validations == 1
    assert await vl.validation.has_validated(rec.inference_id, validator)


async def test_named_reverts(vl: VLedger) -> None:
    base = vl.base
    await vl.set_param("validation_rate_bps", 10_000)
    window = await base.registry.param("validation_window_blocks")
    validator = base.members[0]
    with pytest.raises(TxReverted.named("UnknownInference")):
        await vl.as_(validator).validate(os.urandom(32), True, 1)
    started = await base.record(where=lambda e, s: e != validator.address)
    await base.start(started)
    with pytest.raises(TxReverted.named("NotFinished")):
        await vl.as_(validator).validate(started.inference_id, True, 1)
    rec = await vl.finished()
    executor = base.member(rec.executor)
    with pytest.raises(TxReverted.named("SelfValidation")):
        await vl.as_(executor).validate(rec.inference_id, True, 1)
    other = next(m for m in base.members if m.address != rec.executor)
    with pytest.raises(TxReverted.named("ScoreAbove1e6")):
        await vl.as_(other).validate(rec.inference_id, True, 1_000_001)
    with pytest.raises(TxReverted.named("NotSelected")):  # not a member of the epoch group
        await vl.as_(base.non_owner).validate(rec.inference_id, True, 1)
    await vl.as_(other).validate(rec.inference_id, True, 1)
    with pytest.raises(TxReverted.named("AlreadyValidated")):
        await vl.as_(other).validate(rec.inference_id, False, 1)
    late = next(m for m in base.members if m.address not in (rec.executor, other.address))
    finish_block = (await base.inference.get_inference(rec.inference_id)).start_block
    await base.chain.mine(finish_block + window - await base.chain.w3.eth.block_number)
    with pytest.raises(TxReverted.named("ValidationWindowClosed")):  # the call's block is finish + window + 1
        await vl.as_(late).validate(rec.inference_id, True, 1)


async def test_window_anchor_is_the_finish_block(vl: VLedger) -> None:
    base = vl.base
    await vl.set_param("validation_rate_bps", 10_000)
    window = await base.registry.param("validation_window_blocks")
    rec = await base.record()
    await base.start(rec)
    await base.chain.mine(5)
    receipt = await base.finish(rec)
    assert (await base.inference.get_inference(rec.inference_id)).start_block == receipt["blockNumber"]
    await base.chain.mine(receipt["blockNumber"] + window - 1 - await base.chain.w3.eth.block_number)
    other = next(m for m in base.members if m.address != rec.executor)
    last = await vl.as_(other).validate(rec.inference_id, True, 1)  # mined at finish + window: still open
    assert last["blockNumber"] == receipt["blockNumber"] + window


async def test_inactive_member_is_not_selected(vl: VLedger) -> None:
    base = vl.base
    await vl.set_param("validation_rate_bps", 10_000)
    rec = await vl.finished()
    other = next(m for m in base.members if m.address != rec.executor)
    await base.epochs.governance_set_status(other.address, MemberStatus.INACTIVE)
    with pytest.raises(TxReverted.named("NotSelected")):
        await vl.as_(other).validate(rec.inference_id, True, 1)
