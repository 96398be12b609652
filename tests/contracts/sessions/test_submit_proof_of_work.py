"""Sessions.submit_proof_of_work with unsigned claims: the time bound, the minimum, the deposit cap, access."""

from __future__ import annotations

import pytest
from sessions_helpers import DEPOSIT, MAX_TOKENS, MIN_PROVEN, MODEL, PRICE, RATE, block

from dinfer.chain.contracts.sessions import SessionsClient
from dinfer.errors import TxReverted
from support import events


async def test_unsigned_claim_records_proof(chain, sessions, host_sessions: SessionsClient, job: int, actors) -> None:
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 1)
    receipt = await host_sessions.submit_proof_of_work(job, 2 * RATE)
    mined = await block(chain)
    session = await sessions.get_session(job)
    assert (session.cumulative_tokens, session.proof_count) == (2 * RATE, 1)
    assert (session.last_proof_time, session.last_proof_block) == (start + 1, mined["number"])
    assert events(sessions.contract, receipt, "ProofOfWork") == [
        {
            "job_id": job,
            "host": actors.host.address,
            "tokens_claimed": 2 * RATE,
            "cumulative_tokens": 2 * RATE,
            "signed": False,
        }
    ]


async def test_time_bound_boundary_counts_cumulative_tokens(chain, sessions, host_sessions, job: int) -> None:
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 1)
    with pytest.raises(TxReverted.named("ClaimAboveTimeBound")):
        await host_sessions.submit_proof_of_work(job, 2 * RATE + 1)
    await host_sessions.submit_proof_of_work(job, 2 * RATE - 500)  # lands at start + 1: bound 2000
    await chain.set_next_timestamp(start + 2)  # bound 4000, cumulative 1500
    before = await sessions.get_session(job)
    with pytest.raises(TxReverted.named("ClaimAboveTimeBound")):
        await host_sessions.submit_proof_of_work(job, 2_501)
    assert await sessions.get_session(job) == before
    await host_sessions.submit_proof_of_work(job, 2_500)
    assert await sessions.get_token_usage(job) == 4 * RATE


async def test_elapsed_time_is_capped_at_max_duration(chain, sessions: SessionsClient, host_sessions, actors) -> None:
    duration = 10
    deposit = 3 * DEPOSIT  # 30_000 tokens: above the capped bound, so the bound is what refuses
    receipt = await sessions.create_session(actors.host.address, MODEL, PRICE, duration, duration, deposit=deposit)
    job = sessions.job_id_of(receipt)
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 1_000)  # long past max_duration: bound stays 2 × RATE × 10
    with pytest.raises(TxReverted.named("ClaimAboveTimeBound")):
        await host_sessions.submit_proof_of_work(job, 2 * RATE * duration + 1)
    await host_sessions.submit_proof_of_work(job, 2 * RATE * duration)
    assert await sessions.get_token_usage(job) == 2 * RATE * duration


async def test_min_proven_tokens_per_submission(chain, sessions, host_sessions, job: int) -> None:
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 5)
    with pytest.raises(TxReverted.named("BelowMinProvenTokens")):
        await host_sessions.submit_proof_of_work(job, MIN_PROVEN - 1)
    with pytest.raises(TxReverted.named("BelowMinProvenTokens")):
        await host_sessions.submit_proof_of_work(job, 0)
    assert await sessions.get_proof_count(job) == 0
    await host_sessions.submit_proof_of_work(job, MIN_PROVEN)
    assert (await sessions.get_proof_count(job), await sessions.get_token_usage(job)) == (1, MIN_PROVEN)


async def test_claims_are_capped_by_the_deposit(chain, sessions, host_sessions, job: int) -> None:
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 100)  # time bound 200_000 ≫ MAX_TOKENS: only the deposit limits
    for too_many in (MAX_TOKENS + 1, 2**256 - 1):
        with pytest.raises(TxReverted.named("ClaimExceedsDeposit")):
            await host_sessions.submit_proof_of_work(job, too_many)
    await host_sessions.submit_proof_of_work(job, MAX_TOKENS - MIN_PROVEN + 1)
    before = await sessions.get_session(job)
    with pytest.raises(TxReverted.named("ClaimExceedsDeposit")):
        await host_sessions.submit_proof_of_work(job, MIN_PROVEN)
    assert await sessions.get_session(job) == before
    # the last MIN_PROVEN - 1 tokens cannot be claimed: every submission carries at least min_proven_tokens
    assert await sessions.get_remaining_tokens(job) == MIN_PROVEN - 1
    with pytest.raises(TxReverted.named("BelowMinProvenTokens")):
        await host_sessions.submit_proof_of_work(job, MIN_PROVEN - 1)


async def test_claim_may_use_the_whole_deposit(chain, sessions, host_sessions, job: int) -> None:
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 100)
    await host_sessions.submit_proof_of_work(job, MAX_TOKENS)
    assert (await sessions.get_token_usage(job), await sessions.get_remaining_tokens(job)) == (MAX_TOKENS, 0)
    with pytest.raises(TxReverted.named("ClaimExceedsDeposit")):
        await host_sessions.submit_proof_of_work(job, MIN_PROVEN)


@pytest.mark.parametrize("who", ["client", "host2", "non_owner"])
async def test_only_the_assigned_host(chain, sessions, job: int, actors, sender_for, who: str) -> None:
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 5)
    intruder = SessionsClient(sessions.contract, sender_for(getattr(actors, who)))
    with pytest.raises(TxReverted.named("NotSessionHost")):
        await intruder.submit_proof_of_work(job, MIN_PROVEN)
    assert await sessions.get_proof_count(job) == 0


async def test_unknown_and_closed_sessions(chain, sessions, host_sessions, job: int) -> None:
    with pytest.raises(TxReverted.named("UnknownSession")):
        await host_sessions.submit_proof_of_work(job + 1, MIN_PROVEN)
    with pytest.raises(TxReverted.named("UnknownSession")):
        await host_sessions.submit_proof_of_work(0, MIN_PROVEN)
    await sessions.complete_session(job)
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 5)
    with pytest.raises(TxReverted.named("SessionNotActive")):
        await host_sessions.submit_proof_of_work(job, MIN_PROVEN)
    assert await sessions.get_token_usage(job) == 0


async def test_proof_count_and_window_anchor_follow_each_proof(chain, sessions, host_sessions, job: int) -> None:
    start = (await sessions.get_session(job)).start_time
    for i in range(1, 4):
        await chain.set_next_timestamp(start + 10 * i)
        receipt = await host_sessions.submit_proof_of_work(job, 1_000)
        mined = await block(chain)
        session = await sessions.get_session(job)
        assert (session.proof_count, session.cumulative_tokens) == (i, 1_000 * i)
        assert (session.last_proof_time, session.last_proof_block) == (start + 10 * i, mined["number"])
        assert events(sessions.contract, receipt, "ProofOfWork")[0]["cumulative_tokens"] == 1_000 * i


async def test_bounds_follow_live_governance_parameters(chain, sessions, host_sessions, registry, job: int) -> None:
    await registry.propose_param("expected_tokens_per_sec", 20)
    await registry.propose_param("min_proven_tokens", 150)
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 5)  # bound 2 × 20 × 5 = 200
    with pytest.raises(TxReverted.named("BelowMinProvenTokens")):
        await host_sessions.submit_proof_of_work(job, 149)
    with pytest.raises(TxReverted.named("ClaimAboveTimeBound")):
        await host_sessions.submit_proof_of_work(job, 201)
    await host_sessions.submit_proof_of_work(job, 200)
    assert await sessions.get_token_usage(job) == 200
