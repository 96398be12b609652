"""Session proofs on a real chain: final unsigned claim, restarts that neither lose nor double-claim, a bad
receipt retried unsigned, and resuming a conversation on a second host."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from session_support import TINY, SessionEnv, build_service, make_env, mlnode_url

from dinfer.node.session_service import SessionService

__all__ = ["mlnode_url"]


@pytest.fixture
async def env(chain, registry, actors, sender_for, mlnode_url: str, tmp_path: Path) -> AsyncIterator[SessionEnv]:  # type: ignore[no-untyped-def]
    e = await make_env(chain, registry, actors, sender_for, mlnode_url, tmp_path / "node.sqlite",
                       session_proof_checkpoints=1000)
    yield e
    await e.close()


async def bill(env: SessionEnv, job: int, at_least: int, service: SessionService | None = None) -> int:
    """Run prompts (no receipts) until ``at_least`` tokens are billed; returns the cumulative total."""
    svc = service or env.service
    client = (await svc.open(job, TINY, env.auth(job), None, resumed=False)).client
    total, index = 0, (await env.store.get(job)).last_message_index + 1  # type: ignore[union-attr]
    while total < at_least:
        gen = await svc.generate(job, client, content=f"q{index}", signed=env.signed(job, index, f"q{index}"),
                                 max_tokens=40)
        total, index = gen.cumulative_tokens, index + 1
    return total


async def later(env: SessionEnv, seconds: int = 30) -> None:
    """Move block time forward so the unsigned time bound covers what was served."""
    await env.chain.set_next_timestamp(int(time.time()) + seconds)
    await env.chain.mine()


async def test_final_unsigned_claim_and_restart_never_double_claims(env: SessionEnv, registry, actors,  # type: ignore[no-untyped-def]
                                                                    mlnode_url: str, tmp_path: Path) -> None:
    job = await env.new_job()
    billed = await bill(env, job, 150)
    await later(env)
    closed = await env.service.end(job)
    assert closed == {"job_id": job, "cumulative_tokens": billed, "proven_tokens": billed}
    assert await env.client_sessions.get_token_usage(job) == billed
    assert [(p["cumulative_tokens"], p["signed"]) for p in await env.store.proofs(job)] == [(billed, False)]
    await env.service.close()
    # Restart on the same SQLite file: the counts come back, nothing is claimed again.
    again = await build_service(env.chain, registry, actors, env.host_sessions, env.client_sessions, mlnode_url,
                                Path(env.store.node_store.path))
    try:
        ack = (await again.service.open(job, TINY, env.auth(job), None, resumed=False)).ack
        assert ack["cumulative_tokens"] == billed
        outcome = await again.service.submitter.submit(job)
        assert outcome.plan is None and outcome.proven_tokens == billed
        # More work after the restart is claimed from the chain's count, exactly once.
        more = await bill(env, job, billed + 120, again.service)
        await later(env, 60)
        assert (await again.service.end(job))["proven_tokens"] == more
        assert (await again.service.end(job))["proven_tokens"] == more
        assert await env.client_sessions.get_token_usage(job) == more
        assert len(await again.store.proofs(job)) == 2
    finally:
        await again.close()


async def test_in_flight_proof_blocks_new_claims_until_settled(env: SessionEnv) -> None:
    job = await env.new_job()
    billed = await bill(env, job, 150)
    await later(env)
    # A crash right after sending: the target is recorded, the chain has not moved, the account still has a
    # pending transaction → no second claim may go out.
    await env.store.set_pending_proof(job, billed)

    async def pending() -> bool:
        return True

    env.service.submitter._has_pending_tx = pending
    outcome = await env.service.submitter.submit(job)
    assert outcome.plan is None and "in flight" in outcome.error
    assert await env.client_sessions.get_token_usage(job) == 0

    async def none() -> bool:
        return False

    env.service.submitter._has_pending_tx = none  # the transaction was dropped: the claim may be made again
    outcome = await env.service.submitter.submit(job)
    assert outcome.plan is not None and await env.client_sessions.get_token_usage(job) == billed
    # The recorded target is reached on chain: settled without any new transaction.
    await env.store.set_pending_proof(job, billed)
    env.service.submitter._has_pending_tx = pending
    assert await env.service.submitter.settle_pending(job)
    assert (await env.store.get(job)).pending_proof_target == 0  # type: ignore[union-attr]


async def test_bad_stored_receipt_is_retried_as_an_unsigned_claim(env: SessionEnv, actors) -> None:  # type: ignore[no-untyped-def]
    job = await env.new_job()
    billed = await bill(env, job, 150)
    await later(env)
    # A receipt the contract refuses (signed by someone else): InvalidReceipt, then an unsigned claim lands.
    await env.store.set_receipt(job, billed, env.receipt(job, billed, key=actors.non_owner))
    outcome = await env.service.submitter.submit(job)
    assert outcome.plan is not None and not outcome.plan.signed and outcome.proven_tokens == billed
    assert await env.client_sessions.get_token_usage(job) == billed


async def test_signed_receipt_needs_no_time_bound(env: SessionEnv) -> None:
    job = await env.new_job()
    billed = await bill(env, job, 150)
    client = (await env.store.get(job)).client  # type: ignore[union-attr]
    await env.service.receipt(job, client, billed, env.receipt(job, billed))
    outcome = await env.service.submitter.submit(job)  # same block time as the prompts: unsigned would fail
    assert outcome.plan is not None and outcome.plan.signed and outcome.proven_tokens == billed


async def test_resume_on_a_second_host_with_history(env: SessionEnv, registry, actors, sender_for,  # type: ignore[no-untyped-def]
                                                     mlnode_url: str, tmp_path: Path) -> None:
    job = await env.new_job()
    client = (await env.service.open(job, TINY, env.auth(job), None, resumed=False)).client
    first = await env.service.generate(job, client, content="remember 42", signed=env.signed(job, 0, "remember 42"),
                                       max_tokens=6)
    history = [{"role": "user", "content": "remember 42"}, {"role": "assistant", "content": first.text}]
    # The second host: its own registration, SQLite and service; the client opens a new job there.
    collateral = await registry.param("min_collateral_wei")
    await registry.with_sender(sender_for(actors.host2))._transact("register_host", "http://h2", "{}",
                                                                   value=collateral)
    host2_sessions = type(env.host_sessions)(env.host_sessions.contract, sender_for(actors.host2))
    actors2 = type(actors)(actors.owner, actors.host2, actors.host, actors.client, actors.non_owner, actors.treasury)
    other = await build_service(env.chain, registry, actors2, host2_sessions, env.client_sessions, mlnode_url,
                                tmp_path / "host2.sqlite")
    other.host = actors.host2
    try:
        job2 = await other.new_job()
        opened = await other.service.open(job2, TINY, other.auth(job2), history, resumed=True)
        assert opened.ack["resumed"] and opened.ack["cumulative_tokens"] == 0 and opened.ack["context_tokens"] > 0
        gen = await other.service.generate(job2, opened.client, content="what number?", max_tokens=3,
                                           signed=other.signed(job2, 0, "what number?"))
        assert gen.prompt_tokens > first.prompt_tokens  # the history went to the engine
        assert (await other.service.status(job2))["context_messages"] == 4
        assert (await env.service.status(job))["cumulative_tokens"] == first.cumulative_tokens  # untouched
    finally:
        await other.close()
