"""Settlement of an epoch inside switch_epoch: R × w / W, zero for INVALID and for a failed MissedStatTest, the
coverage bonus only with every model covered, a pool that runs out mid-settlement, and the pull withdrawal."""

from __future__ import annotations

import pytest
from epochs_helpers import TINY, switch_next

from contracts.inference.inference_ledger import Ledger, make_ledger
from dinfer.chain.contracts.epochs import Coverage, EpochsClient, MemberStatus, model_key
from dinfer.errors import TxReverted
from support import events

BPS = 10_000


@pytest.fixture
async def ledger(chain, registry, genesis, actors, sender_for) -> Ledger:  # type: ignore[no-untyped-def]
    """Epochs + PoC + Inference; epoch 1's SmolLM group is four hosts weighted 40/30/20/10."""
    return await make_ledger(chain, registry, genesis, actors, sender_for)


async def expire_two_misses(ledger: Ledger, executor: str) -> None:
    """Two inferences assigned to ``executor`` that expire: 2 missed of 2 fails the MissedStatTest."""
    records = [await ledger.record(where=lambda e, s: e == executor) for _ in range(2)]
    await ledger.start(*records)
    await ledger.chain.mine(await ledger.registry.param("expiration_blocks"))
    for rec in records:
        await ledger.inference.expire(rec.inference_id)


async def test_invalid_and_missed_get_nothing_the_others_exact_shares(ledger: Ledger) -> None:
    epochs, m = ledger.epochs, ledger.group
    # m0 also serves the tiny model: the only participant covering both governance models of epoch 1
    await epochs.add_group(1, model_key(TINY), [m[0]], [50])
    await epochs.governance_set_status(m[1], MemberStatus.INVALID)
    await expire_two_misses(ledger, m[2])
    stats = await ledger.inference.executor_stats(1, m[2])
    assert (stats.missed, stats.total) == (2, 2) and await ledger.inference.missed_stat_test_fails(2, 2)
    # m3 finished its only inference: 0 missed of 1 passes
    done = await ledger.record(where=lambda e, s: e == m[3])
    await ledger.start(done)
    await ledger.finish(done)
    reward = await ledger.registry.param("epoch_reward_wei")
    bonus = await ledger.registry.param("coverage_bonus_bps")
    funded = await epochs.fund_rewards(3 * reward)
    assert events(epochs.contract, funded, "RewardsFunded") == [
        {"funder": ledger.owner.address, "amount": 3 * reward, "pool": 3 * reward}
    ]
    assert [await epochs.participant_weight(1, p) for p in m] == [90, 30, 20, 10]
    assert await epochs.participant_coverage(1, m[0]) == Coverage(2, 2)
    assert await epochs.participant_coverage(1, m[3]) == Coverage(1, 2)

    receipt = await switch_next(epochs, ledger.registry, ledger.chain)
    total = 150
    paid = [reward * 90 // total * (BPS + bonus) // BPS, 0, 0, reward * 10 // total]
    assert events(epochs.contract, receipt, "RewardSettled") == [
        {"epoch": 1, "participant": m[0], "weight": 90, "amount": paid[0], "missed_test_failed": False,
         "coverage_bonus": True},
        {"epoch": 1, "participant": m[1], "weight": 30, "amount": 0, "missed_test_failed": False,
         "coverage_bonus": False},
        {"epoch": 1, "participant": m[2], "weight": 20, "amount": 0, "missed_test_failed": True,
         "coverage_bonus": False},
        {"epoch": 1, "participant": m[3], "weight": 10, "amount": paid[3], "missed_test_failed": False,
         "coverage_bonus": False},
    ]
    assert [await epochs.rewards_of(p) for p in m] == paid
    assert await epochs.reward_pool() == 3 * reward - sum(paid)
    assert await ledger.chain.w3.eth.get_balance(epochs.address) == 3 * reward

    # pull withdrawal: event, exact balance change, nothing twice, nothing for the zeroed participants
    payee = EpochsClient(epochs.contract, ledger.sender_for(ledger.members[3]))
    before = await ledger.chain.w3.eth.get_balance(m[3])
    r = await payee.withdraw_rewards()
    assert events(epochs.contract, r, "RewardsWithdrawn") == [{"participant": m[3], "amount": paid[3]}]
    fee = r["gasUsed"] * r["effectiveGasPrice"]
    assert await ledger.chain.w3.eth.get_balance(m[3]) == before + paid[3] - fee
    assert await epochs.rewards_of(m[3]) == 0
    with pytest.raises(TxReverted.named("NothingToWithdraw")):
        await payee.withdraw_rewards()
    for zeroed in (ledger.members[1], ledger.members[2]):
        with pytest.raises(TxReverted.named("NothingToWithdraw")):
            await EpochsClient(epochs.contract, ledger.sender_for(zeroed)).withdraw_rewards()
    assert await ledger.chain.w3.eth.get_balance(epochs.address) == 3 * reward - paid[3]


async def test_pool_runs_out_mid_settlement(ledger: Ledger) -> None:
    epochs, m = ledger.epochs, ledger.group
    await ledger.registry.propose_param("coverage_bonus_bps", BPS)  # every participant covers the one model: ×2
    pool = 10**15
    assert pool < await ledger.registry.param("epoch_reward_wei")  # R = the whole pool
    await epochs.fund_rewards(pool)
    receipt = await switch_next(epochs, ledger.registry, ledger.chain)
    settled = events(epochs.contract, receipt, "RewardSettled")
    # shares 40/30/20/10 % doubled: 80 % in full, 60 % capped at the 20 % left, then nothing
    assert [(e["participant"], e["amount"], e["coverage_bonus"]) for e in settled] == [
        (m[0], pool * 8 // 10, True),
        (m[1], pool * 2 // 10, True),
        (m[2], 0, True),
        (m[3], 0, True),
    ]
    assert await epochs.reward_pool() == 0
    assert [await epochs.rewards_of(p) for p in m] == [pool * 8 // 10, pool * 2 // 10, 0, 0]
    # an empty pool pays nothing at the next settlement either (epoch 2 has no PoC participants: no events)
    receipt = await switch_next(epochs, ledger.registry, ledger.chain)
    assert events(epochs.contract, receipt, "RewardSettled") == []
    assert await ledger.chain.w3.eth.get_balance(epochs.address) == pool


async def test_fund_rewards_refuses_zero(ledger: Ledger) -> None:
    with pytest.raises(TxReverted.named("ZeroAmount")):
        await ledger.epochs.fund_rewards(0)
    assert await ledger.epochs.reward_pool() == 0
