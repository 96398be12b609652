"""Sessions.trigger_session_timeout: past max_duration, or 3 proof intervals without a proof; anyone may call."""

from __future__ import annotations

import pytest
from sessions_helpers import DEPOSIT, MODEL, PRICE, PROOF_INTERVAL, split

from dinfer.chain.contracts.sessions import SessionsClient, SessionState
from dinfer.errors import TxReverted
from support import events


@pytest.fixture
def anyone(sessions: SessionsClient, actors, sender_for) -> SessionsClient:  # type: ignore[no-untyped-def]
    return SessionsClient(sessions.contract, sender_for(actors.non_owner))


async def test_timeout_by_duration(chain, sessions: SessionsClient, host_sessions, anyone, actors) -> None:
    duration, interval = 600, 300  # 3 intervals (900 s) outlast the duration: only the duration can expire it
    receipt = await sessions.create_session(actors.host.address, MODEL, PRICE, duration, interval, deposit=DEPOSIT)
    job = sessions.job_id_of(receipt)
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 590)
    await host_sessions.submit_proof_of_work(job, 700)
    await chain.set_next_timestamp(start + duration)
    with pytest.raises(TxReverted.named("SessionNotExpired")):
        await anyone.trigger_session_timeout(job)
    assert (await sessions.get_session(job)).state == SessionState.ACTIVE
    await chain.set_next_timestamp(start + duration + 1)
    receipt = await anyone.trigger_session_timeout(job)
    host_earnings, fee = split(700)
    assert events(sessions.contract, receipt, "SessionSettled") == [
        {
            "job_id": job,
            "host": actors.host.address,
            "client": actors.client.address,
            "state": SessionState.TIMED_OUT,
            "closed_by": actors.non_owner.address,
            "tokens_used": 700,
            "host_earnings": host_earnings,
            "treasury_fee": fee,
            "refund": DEPOSIT - host_earnings - fee,
        }
    ]
    assert (await sessions.get_session(job)).state == SessionState.TIMED_OUT
    assert await sessions.earnings(actors.host.address) == host_earnings
    assert await sessions.refunds(actors.client.address) == DEPOSIT - host_earnings - fee


async def test_timeout_by_missing_proofs_since_creation(chain, sessions, anyone, job: int, actors) -> None:
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 3 * PROOF_INTERVAL)
    with pytest.raises(TxReverted.named("SessionNotExpired")):
        await anyone.trigger_session_timeout(job)
    await chain.set_next_timestamp(start + 3 * PROOF_INTERVAL + 1)
    await anyone.trigger_session_timeout(job)
    assert (await sessions.get_session(job)).state == SessionState.TIMED_OUT
    assert await sessions.refunds(actors.client.address) == DEPOSIT


async def test_a_proof_restarts_the_silence_clock(chain, sessions, host_sessions, anyone, job: int) -> None:
    start = (await sessions.get_session(job)).start_time
    proved_at = start + 3 * PROOF_INTERVAL  # the last second before the session could be timed out
    await chain.set_next_timestamp(proved_at)
    await host_sessions.submit_proof_of_work(job, 500)
    await chain.set_next_timestamp(proved_at + 3 * PROOF_INTERVAL)
    with pytest.raises(TxReverted.named("SessionNotExpired")):
        await anyone.trigger_session_timeout(job)
    await chain.set_next_timestamp(proved_at + 3 * PROOF_INTERVAL + 1)
    await anyone.trigger_session_timeout(job)
    assert (await sessions.get_session(job)).state == SessionState.TIMED_OUT


async def test_the_parties_may_trigger_it_too(chain, sessions, host_sessions, job: int, actors) -> None:
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 3 * PROOF_INTERVAL + 1)
    receipt = await host_sessions.trigger_session_timeout(job)
    assert events(sessions.contract, receipt, "SessionSettled")[0]["closed_by"] == actors.host.address


async def test_closed_and_unknown_sessions(chain, sessions, anyone, job: int, actors) -> None:
    await sessions.complete_session(job)
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 10 * PROOF_INTERVAL)
    with pytest.raises(TxReverted.named("SessionNotActive")):
        await anyone.trigger_session_timeout(job)
    assert (await sessions.get_session(job)).state == SessionState.COMPLETED
    assert await sessions.refunds(actors.client.address) == DEPOSIT
    with pytest.raises(TxReverted.named("UnknownSession")):
        await anyone.trigger_session_timeout(job + 1)
    with pytest.raises(TxReverted.named("SessionNotActive")):
        await sessions.complete_session(job)
