"""Sessions.complete_session: the client at any time, the host after the dispute window; settlement math."""

from __future__ import annotations

import pytest
from sessions_helpers import DEPOSIT, DISPUTE_BLOCKS, MIN_PROVEN, block, mine_until_next_block_is, split

from dinfer.chain.contracts.sessions import SessionsClient, SessionState
from dinfer.errors import TxReverted
from support import events


async def _prove(chain, sessions: SessionsClient, host_sessions: SessionsClient, job: int, tokens: int) -> None:  # type: ignore[no-untyped-def]
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 60)
    await host_sessions.submit_proof_of_work(job, tokens)


async def test_client_completes_and_settles(chain, sessions, host_sessions, job: int, actors) -> None:
    await _prove(chain, sessions, host_sessions, job, 1_234)
    receipt = await sessions.complete_session(job)
    host_earnings, fee = split(1_234)
    refund = DEPOSIT - host_earnings - fee
    assert (host_earnings, fee, refund) == (1_110_600_000_000, 123_400_000_000, 8_766_000_000_000)
    assert (await sessions.get_session(job)).state == SessionState.COMPLETED
    assert await sessions.earnings(actors.host.address) == host_earnings
    assert await sessions.treasury_balance() == fee
    assert await sessions.refunds(actors.client.address) == refund
    assert await chain.w3.eth.get_balance(sessions.address) == DEPOSIT  # nothing moves until withdrawn
    assert events(sessions.contract, receipt, "SessionSettled") == [
        {
            "job_id": job,
            "host": actors.host.address,
            "client": actors.client.address,
            "state": SessionState.COMPLETED,
            "closed_by": actors.client.address,
            "tokens_used": 1_234,
            "host_earnings": host_earnings,
            "treasury_fee": fee,
            "refund": refund,
        }
    ]


async def test_client_completes_before_any_proof(sessions, job: int, actors) -> None:
    receipt = await sessions.complete_session(job)
    assert events(sessions.contract, receipt, "SessionSettled")[0]["refund"] == DEPOSIT
    assert await sessions.refunds(actors.client.address) == DEPOSIT
    assert (await sessions.earnings(actors.host.address), await sessions.treasury_balance()) == (0, 0)


async def test_host_waits_for_the_dispute_window_after_the_last_proof(
    chain, sessions, host_sessions, job: int, actors
) -> None:
    await _prove(chain, sessions, host_sessions, job, MIN_PROVEN)
    anchor = (await sessions.get_session(job)).last_proof_block
    await mine_until_next_block_is(chain, anchor + DISPUTE_BLOCKS - 1)
    with pytest.raises(TxReverted.named("DisputeWindowOpen")):
        await host_sessions.complete_session(job)
    assert (await sessions.get_session(job)).state == SessionState.ACTIVE
    await mine_until_next_block_is(chain, anchor + DISPUTE_BLOCKS)
    receipt = await host_sessions.complete_session(job)
    assert (await block(chain))["number"] == anchor + DISPUTE_BLOCKS
    settled = events(sessions.contract, receipt, "SessionSettled")[0]
    assert (settled["state"], settled["closed_by"]) == (SessionState.COMPLETED, actors.host.address)
    assert await sessions.earnings(actors.host.address) == split(MIN_PROVEN)[0]


async def test_without_proofs_the_window_counts_from_creation(chain, sessions, host_sessions, job: int) -> None:
    created = (await sessions.get_session(job)).last_proof_block
    await mine_until_next_block_is(chain, created + DISPUTE_BLOCKS - 1)
    with pytest.raises(TxReverted.named("DisputeWindowOpen")):
        await host_sessions.complete_session(job)
    await mine_until_next_block_is(chain, created + DISPUTE_BLOCKS)
    await host_sessions.complete_session(job)
    assert (await sessions.get_session(job)).state == SessionState.COMPLETED


async def test_a_new_proof_reopens_the_window(chain, sessions, host_sessions, job: int) -> None:
    await _prove(chain, sessions, host_sessions, job, MIN_PROVEN)
    await chain.mine(DISPUTE_BLOCKS)
    await host_sessions.submit_proof_of_work(job, MIN_PROVEN)
    with pytest.raises(TxReverted.named("DisputeWindowOpen")):
        await host_sessions.complete_session(job)


@pytest.mark.parametrize("who", ["host2", "non_owner", "owner"])
async def test_outsiders_cannot_complete(chain, sessions, job: int, actors, sender_for, who: str) -> None:
    await chain.mine(DISPUTE_BLOCKS)
    outsider = SessionsClient(sessions.contract, sender_for(getattr(actors, who)))
    with pytest.raises(TxReverted.named("NotSessionParty")):
        await outsider.complete_session(job)
    assert (await sessions.get_session(job)).state == SessionState.ACTIVE


async def test_closed_and_unknown_sessions(chain, sessions, host_sessions, job: int, actors) -> None:
    await sessions.complete_session(job)
    refund = await sessions.refunds(actors.client.address)
    await chain.mine(DISPUTE_BLOCKS)
    for who in (sessions, host_sessions):
        with pytest.raises(TxReverted.named("SessionNotActive")):
            await who.complete_session(job)
    assert await sessions.refunds(actors.client.address) == refund  # never settled twice
    with pytest.raises(TxReverted.named("UnknownSession")):
        await sessions.complete_session(job + 1)
