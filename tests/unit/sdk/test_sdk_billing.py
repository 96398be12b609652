"""Escrow, billing math, billing events and bad input of ``AsyncDinferClient`` / ``DinferClient`` on the py-evm
chain (Registry + Epochs + Inference + Sessions deployed for real). Session usage enters through the session
client's real result hook; the WebSocket path itself is exercised end to end in tests/e2e/test_sdk_client_e2e.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from sdk_chain_support import HostChain, deploy_with_host
from tests.fixtures.servers import free_port, serve_app

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.sessions import SessionsClient, SessionState
from dinfer.chain.txqueue import TxSender
from dinfer.crypto import Keypair
from dinfer.errors import ModelNotFound
from dinfer.sdk._session_wire import PromptResult, SessionKeys, Usage
from dinfer.sdk.billing import (
    CostBreakdown,
    SessionBilling,
    SessionCost,
    TokenUsage,
    UsageLedger,
    UsageRecord,
    estimate_tokens,
    heuristic_tokens,
)
from dinfer.sdk.client import (
    AsyncDinferClient,
    BadHostAddress,
    DinferClient,
    HostUnreachable,
    InsufficientDeposit,
    InsufficientFunds,
)
from dinfer.sdk.sessions import SessionClient, Settlement

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
PRICE = 10**9
"""Genesis price of MODEL (wei per token)."""
FEE_BPS = 1_000
MIN_PROVEN = 100
HOST_URL = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def _ledger_chain(_base_chain) -> HostChain:  # type: ignore[no-untyped-def]
    """The genesis chain plus Epochs/Inference/Sessions and a registered host (accounts[1]), built once per module."""
    return deploy_with_host(_base_chain, HOST_URL, ledger=True)


@pytest.fixture
async def client(chain: EthTesterBackend, _ledger_chain: HostChain, actors) -> AsyncIterator[AsyncDinferClient]:  # type: ignore[no-untyped-def]
    chain.tester.revert_to_snapshot(_ledger_chain.snapshot)
    c = AsyncDinferClient(actors.client.private_key, chain.w3, _ledger_chain.deployment)
    yield c
    await c.close()


async def session_of(client: AsyncDinferClient, host: str, deposit_tokens: int) -> SessionClient:
    """A real session job on chain and its (unconnected) session client."""
    receipt = await client.sessions.create_session(host, MODEL, PRICE, 3600, 300, deposit=deposit_tokens * PRICE)
    job = await client.sessions.get_session(client.sessions.job_id_of(receipt))
    domain = await client.receipt_domain()
    return SessionClient(client.sessions, client.key, job, url=HOST_URL, model=MODEL,
                         keys=SessionKeys(client.key.private_key, domain.chain_id, domain.sessions_contract))


async def host_proves(client: AsyncDinferClient, host: Keypair, job_id: int, claimed: int, cumulative: int) -> None:
    """The host submits a proof carrying the client's receipt for ``cumulative`` tokens."""
    domain = await client.receipt_domain()
    sender = TxSender(client.w3, host, poll_interval=0.01)
    try:
        await SessionsClient(client.sessions.contract, sender).submit_proof_of_work(
            job_id, claimed, domain.sign(job_id, cumulative, client.key.private_key))
    finally:
        await sender.close()


def result(prompt: int, completion: int, cumulative: int) -> PromptResult:
    return PromptResult(1, "answer", Usage(prompt, completion, prompt + completion), cumulative, "stop")


# ---------------------------------------------------------------- escrow


async def test_deposit_balance_withdraw_move_wei_through_the_inference_escrow(client: AsyncDinferClient) -> None:
    wallet = await client.w3.eth.get_balance(client.address)
    assert await client.balance() == 0
    assert await client.deposit(10**15) == 10**15
    assert await client.deposit(5 * 10**14) == 15 * 10**14
    assert await client.inference.balance_of(client.address) == 15 * 10**14  # what the chain says
    assert await client.withdraw(10**15) == 5 * 10**14
    assert await client.balance() == 5 * 10**14
    spent = wallet - await client.w3.eth.get_balance(client.address)
    assert 5 * 10**14 <= spent < 5 * 10**14 + 10**16  # the escrowed rest plus gas


async def test_escrow_bad_input_raises_typed_errors(client: AsyncDinferClient) -> None:
    await client.deposit(1000)
    with pytest.raises(InsufficientDeposit, match="holds 1000 wei"):
        await client.withdraw(1001)
    assert await client.balance() == 1000  # nothing moved
    with pytest.raises(ValueError, match="positive"):
        await client.withdraw(0)
    with pytest.raises(ValueError, match="positive"):
        await client.deposit(-1)
    broke = AsyncDinferClient(Keypair.generate(), client.w3, client.deployment)
    try:
        with pytest.raises(InsufficientFunds, match="fund the account"):
            await broke.deposit(10**15)
    finally:
        await broke.close()


def test_sync_client_runs_the_same_calls_on_its_own_loop(chain: EthTesterBackend, _ledger_chain: HostChain,
                                                         actors) -> None:  # type: ignore[no-untyped-def]
    chain.tester.revert_to_snapshot(_ledger_chain.snapshot)
    with DinferClient(actors.client.private_key, chain.w3, _ledger_chain.deployment) as sync:
        assert sync.address == actors.client.address
        assert sync.deposit(10**12) == 10**12
        assert sync.withdraw(4 * 10**11) == 6 * 10**11
        assert sync.balance() == 6 * 10**11
        with pytest.raises(InsufficientDeposit):
            sync.withdraw(10**12)
        assert sync.estimate_tokens("12345678").tokens == 2
    with pytest.raises(Exception, match="exactly one of w3 or rpc_url"):
        DinferClient(actors.client.private_key, deployment=_ledger_chain.deployment)


# ---------------------------------------------------------------- hosts and sessions: bad input


async def test_bad_hosts_raise_typed_actionable_errors(client: AsyncDinferClient) -> None:
    with pytest.raises(BadHostAddress, match="not a host URL"):
        await client.resolve_host("127.0.0.1:9000")
    with pytest.raises(BadHostAddress, match="not a host URL"):
        await client.chat(MODEL, [{"role": "user", "content": "hi"}], host="ftp://example.org")
    with pytest.raises(BadHostAddress, match="not a registered host"):
        await client.resolve_host(Keypair.generate().address)
    with pytest.raises(HostUnreachable, match="cannot reach host"):
        await client.chat(MODEL, [{"role": "user", "content": "hi"}], host=f"http://127.0.0.1:{free_port()}")
    async with serve_app(FastAPI()) as not_dinfer:  # a real web server that is not a dinfer node
        with pytest.raises(BadHostAddress, match="not a dinfer host node"):
            await client.chat(MODEL, [{"role": "user", "content": "hi"}], host=not_dinfer)


async def test_open_session_checks_deposit_model_and_funds_before_any_transaction(
        client: AsyncDinferClient, actors) -> None:  # type: ignore[no-untyped-def]
    nonce = await client.w3.eth.get_transaction_count(client.address)
    with pytest.raises(InsufficientDeposit, match=f"deposit at least {MIN_PROVEN * PRICE} wei"):
        await client.open_session(HOST_URL, MODEL, deposit=(MIN_PROVEN - 1) * PRICE)
    with pytest.raises(ModelNotFound, match="not a governance model"):
        await client.open_session(HOST_URL, "no/such-model", deposit=10**18)
    assert await client.governance_price(MODEL) == PRICE
    broke = AsyncDinferClient(Keypair.generate(), client.w3, client.deployment)
    try:
        with pytest.raises(InsufficientFunds):
            await broke.open_session(HOST_URL, MODEL, deposit=MIN_PROVEN * PRICE)
    finally:
        await broke.close()
    # a registered host whose URL answers nothing: refused before a job is created
    with pytest.raises(HostUnreachable):
        await client.open_session(actors.host.address, MODEL, deposit=MIN_PROVEN * PRICE)
    assert await client.w3.eth.get_transaction_count(client.address) == nonce
    assert await client.sessions.next_job_id() == 1


# ---------------------------------------------------------------- billing math and events


def test_cost_breakdown_is_the_contracts_settlement_split() -> None:
    cost = CostBreakdown(tokens=1234, price_per_token=PRICE, treasury_fee_bps=FEE_BPS)
    assert cost.cost == 1234 * PRICE
    assert cost.treasury_fee == 1234 * PRICE * FEE_BPS // 10_000
    assert cost.host_share + cost.treasury_fee == cost.cost
    odd = CostBreakdown(tokens=7, price_per_token=3, treasury_fee_bps=3333)  # rounding goes to the host
    assert (odd.cost, odd.treasury_fee, odd.host_share) == (21, 6, 15)


async def test_session_usage_cost_and_remaining_tokens(client: AsyncDinferClient, actors) -> None:  # type: ignore[no-untyped-def]
    session = await session_of(client, actors.host.address, deposit_tokens=1_000)
    billing = client.billing(session)
    assert client.billing(session) is billing  # one tracker per session
    session._notify_result(result(30, 20, 50))
    session._notify_result(result(70, 10, 130))
    usage = client.get_token_usage(session)
    assert usage == TokenUsage(prompt_tokens=100, completion_tokens=30, prompts=2)
    assert usage.total_tokens == 130
    assert await client.get_remaining_tokens(session) == 1_000 - 130

    cost = await client.get_session_cost(session)
    assert cost.used == CostBreakdown(130, PRICE, FEE_BPS) and cost.proven.tokens == 0
    assert cost.unproven_tokens == 130 and cost.refund_if_settled_now == 1_000 * PRICE

    # the host proves 120 tokens: the chain's figures move, the tracked usage does not
    await host_proves(client, actors.host, session.job_id, 120, 120)
    cost = await client.get_session_cost(session)
    assert cost.proven == CostBreakdown(120, PRICE, FEE_BPS) and cost.proof_count == 1
    assert cost.unproven_tokens == 10 and cost.refund_if_settled_now == (1_000 - 120) * PRICE

    # settling pays exactly what get_session_cost predicted
    await client.sessions.complete_session(session.job_id)
    settled = Settlement.of(await client.sessions.get_session(session.job_id))
    assert settled.state == SessionState.COMPLETED
    assert (settled.cost, settled.host_earnings, settled.treasury_fee, settled.refund) == (
        cost.proven.cost, cost.proven.host_share, cost.proven.treasury_fee, cost.refund_if_settled_now)
    assert await client.withdraw_refund() == settled.refund


async def test_billing_events_fire_on_usage_low_balance_and_proofs(client: AsyncDinferClient, actors) -> None:  # type: ignore[no-untyped-def]
    session = await session_of(client, actors.host.address, deposit_tokens=300)
    billing = SessionBilling(session, low_balance_tokens=100, ledger=client.usage)
    client._billing[session] = billing
    usages, lows, proofs = [], [], []
    billing.on_usage(usages.append)
    billing.on_low_balance(lows.append)
    billing.on_proof(proofs.append)
    billing.on_usage(lambda e: 1 / 0)  # a broken callback is logged, never breaks the stream or the others

    session._notify_result(result(100, 50, 150))
    assert [(e.usage.total_tokens, e.remaining_tokens) for e in usages] == [(150, 150)] and lows == []
    session._notify_result(result(60, 40, 250))
    assert [e.remaining_tokens for e in usages] == [150, 50]
    assert [(e.job_id, e.remaining_tokens, e.threshold) for e in lows] == [(session.job_id, 50, 100)]
    session._notify_result(result(20, 10, 280))
    assert len(lows) == 1  # fired once

    await host_proves(client, actors.host, session.job_id, 250, 250)
    assert [p.cumulative_tokens for p in await client.poll_proofs(session)] == [250]
    assert await client.poll_proofs(session) == []  # already seen
    assert [p.cumulative_tokens for p in proofs] == [250]

    billing.detach()
    session._notify_result(result(1, 1, 282))
    assert len(usages) == 3


async def test_usage_statistics_and_breakdown_across_sessions_and_requests(client: AsyncDinferClient,
                                                                           actors) -> None:  # type: ignore[no-untyped-def]
    session = await session_of(client, actors.host.address, deposit_tokens=1_000)
    client.billing(session)
    session._notify_result(result(40, 20, 60))
    session._notify_result(result(80, 40, 180))
    client.usage.add(UsageRecord(10, 5, price_per_token=7, inference_id="0xabc"))  # a per-request inference
    stats = client.usage_stats()
    assert (stats.prompts, stats.prompt_tokens, stats.completion_tokens, stats.total_tokens) == (3, 130, 65, 195)
    assert stats.avg_tokens_per_prompt == pytest.approx(65.0)
    sess = client.usage_stats(kind="session")
    assert (sess.prompts, sess.total_tokens, sess.avg_prompt_tokens, sess.avg_completion_tokens) == (2, 180, 60, 30)
    assert sess.cost == 180 * PRICE and sess.treasury_fee == 180 * PRICE * FEE_BPS // 10_000
    assert sess.host_share == sess.cost - sess.treasury_fee
    req = client.usage_stats(kind="request")
    assert (req.cost, req.treasury_fee, req.host_share) == (105, 0, 105)  # Inference.vy takes no fee
    assert client.usage_stats(job_id=session.job_id) == sess
    assert client.billing(session).stats() == sess
    assert UsageLedger().stats().avg_tokens_per_prompt == 0.0
    with pytest.raises(ValueError, match="kind must be"):
        client.usage_stats(kind="sessions")


def test_session_cost_of_a_chain_record() -> None:
    from dinfer.chain.contracts.sessions import Session

    job = Session(3, "0x" + "1" * 40, "0x" + "2" * 40, b"\0" * 32, PRICE, 500 * PRICE, FEE_BPS, 3600, 300, 0, 0, 0,
                  200, 2, SessionState.ACTIVE)
    cost = SessionCost.of(job, used_tokens=260)
    assert cost.max_tokens == 500 and cost.unproven_tokens == 60
    assert cost.proven.cost == 200 * PRICE and cost.refund_if_settled_now == 300 * PRICE
    assert SessionCost.of(job, used_tokens=100).unproven_tokens == 0


# ---------------------------------------------------------------- token estimates


@pytest.mark.parametrize(("text", "tokens"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("é" * 4, 2)])
def test_heuristic_is_ceil_of_utf8_bytes_over_four(text: str, tokens: int) -> None:
    assert heuristic_tokens(text) == tokens


async def test_estimate_falls_back_to_the_heuristic_without_a_tokenizer() -> None:
    estimate = await estimate_tokens("Hello there, world")
    assert (estimate.tokens, estimate.exact, estimate.source) == (5, False, "heuristic")
    chat = await estimate_tokens([{"role": "user", "content": "abcd"}, {"role": "user", "content": "efgh"}])
    assert chat.tokens == 2 and not chat.exact
    async with serve_app(FastAPI()) as no_route:  # answers 404 on /v1/tokenize
        assert not (await estimate_tokens("abcdefgh", url=no_route)).exact
    assert (await estimate_tokens("abcdefgh", url=f"http://127.0.0.1:{free_port()}", timeout=2)).tokens == 2
