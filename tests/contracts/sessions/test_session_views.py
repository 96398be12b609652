"""Sessions views: get_session, get_token_usage, get_remaining_tokens, get_proof_count, and the client helpers."""

from __future__ import annotations

import pytest
from sessions_helpers import DEPOSIT, MAX_TOKENS, PRICE

from dinfer.chain.contracts.sessions import SessionsClient, SessionState
from dinfer.errors import ChainError, TxReverted


async def test_usage_remaining_and_proof_count_follow_proofs(chain, sessions, host_sessions, job: int) -> None:
    assert (await sessions.get_token_usage(job), await sessions.get_remaining_tokens(job)) == (0, MAX_TOKENS)
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 2)
    await host_sessions.submit_proof_of_work(job, 1_500)
    await host_sessions.submit_proof_of_work(job, 2_000)
    assert await sessions.get_token_usage(job) == 3_500
    assert await sessions.get_remaining_tokens(job) == MAX_TOKENS - 3_500
    assert await sessions.get_proof_count(job) == 2
    session = await sessions.get_session(job)
    assert (session.max_tokens, session.cost) == (MAX_TOKENS, 3_500 * PRICE)


async def test_remaining_tokens_round_down_and_drop_to_zero_when_closed(sessions: SessionsClient, actors) -> None:
    receipt = await sessions.create_session(
        actors.host.address, "dinfer/tiny-random-llama", PRICE, 3_600, 300, deposit=DEPOSIT + PRICE - 1
    )
    job = sessions.job_id_of(receipt)
    assert await sessions.get_remaining_tokens(job) == MAX_TOKENS  # a partial token's wei is refunded, not claimable
    await sessions.complete_session(job)
    assert await sessions.get_remaining_tokens(job) == 0
    assert (await sessions.get_session(job)).state == SessionState.COMPLETED
    assert await sessions.refunds(actors.client.address) == DEPOSIT + PRICE - 1


@pytest.mark.parametrize("view", ["get_session", "get_token_usage", "get_remaining_tokens", "get_proof_count"])
async def test_unknown_session(sessions: SessionsClient, job: int, view: str) -> None:
    for missing in (0, job + 1, 2**256 - 1):
        with pytest.raises(TxReverted.named("UnknownSession")):
            await getattr(sessions, view)(missing)


async def test_client_helpers(chain, sessions: SessionsClient, registry, job: int, actors) -> None:
    assert await sessions.registry_address() == registry.address
    domain = await sessions.receipt_domain()
    proof = domain.sign(job, 700, actors.client.private_key)
    assert domain.recover(job, 700, proof) == actors.client.address
    with pytest.raises(ChainError):
        sessions.job_id_of(await sessions.complete_session(job))  # a receipt without SessionCreated
