"""``AsyncDinferClient`` / ``DinferClient`` against the shared devnet (real anvil, host nodes, ML nodes): signed
per-request chat (plain and streaming with usage), a session opened through the client whose tracked billing
matches the chain's settlement, proof history verified against the client's receipts, and bad input.

Every test uses a fresh client account funded from the demo client, so balances are exact (wei).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from network import TINY, BackgroundDevnet, wait_status
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from tests.fixtures.servers import free_port

from dinfer.chain.backends import connect
from dinfer.chain.contracts.sessions import SessionState
from dinfer.chain.txqueue import TxSender
from dinfer.crypto import Keypair
from dinfer.sdk.client import (
    AsyncDinferClient,
    BadHostAddress,
    DinferClient,
    HostUnreachable,
    InsufficientDeposit,
)
from dinfer.sdk.proofs import ProofRecord

pytestmark = pytest.mark.e2e

ETH = 10**18
PRICE = 100_000_000  # the tiny model's governance price (genesis/devnet.toml)
ESCROW = 10**16
SESSION_DEPOSIT = 10**15
HELLO = [{"role": "user", "content": "Say hello"}]


def devnet_json(network: BackgroundDevnet) -> Path:
    return network.net.info_path


def funded_key(network: BackgroundDevnet) -> Keypair:
    """A fresh account with 1 ETH from the demo client (its own rate-limit bucket, exact balances)."""
    key = Keypair.generate()

    async def fund() -> None:
        w3 = connect([network.info.rpc_url])
        bank = TxSender(w3, Keypair.from_private_key(network.info.demo_client_key), poll_interval=0.1)
        try:
            await bank.transact({"to": key.address, "value": ETH}, gas=21_000)
        finally:
            await bank.close()
            await w3.provider.disconnect()

    network.run(fund())
    return key


@pytest.fixture
async def client(network: BackgroundDevnet) -> AsyncIterator[AsyncDinferClient]:
    c = AsyncDinferClient.from_devnet(devnet_json(network), funded_key(network))
    yield c
    await c.close()


async def eventually(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last})")


# ---------------------------------------------------------------- per-request


async def test_per_request_chat_plain_and_streaming_is_signed_billed_and_recorded(
        client: AsyncDinferClient, network: BackgroundDevnet) -> None:
    host = network.host(0)
    assert await client.deposit(ESCROW) == ESCROW

    reply = await client.chat(TINY, HELLO, host=host["url"], max_tokens=8)
    assert isinstance(reply, ChatCompletion) and reply.choices[0].message.role == "assistant"
    assert reply.usage is not None and reply.usage.prompt_tokens >= 1 and reply.usage.completion_tokens >= 1
    plain = client.last_request
    assert plain is not None and plain.price_per_token == PRICE and plain.inference_id.startswith("0x")

    stream = await client.chat(TINY, HELLO, host=host["address"], max_tokens=8, stream=True)  # by address too
    chunks = [chunk async for chunk in stream]
    assert chunks and all(isinstance(c, ChatCompletionChunk) for c in chunks)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens >= 1  # include_usage: the last chunk carries usage
    assert all(c.usage is None for c in chunks[:-1])
    streamed = client.last_request
    assert streamed is not None and streamed.inference_id != plain.inference_id

    # the ledger holds both, and the chain charged exactly tokens × price for each
    records = client.usage.records
    assert [r.inference_id for r in records] == [plain.inference_id, streamed.inference_id]
    assert [r.total_tokens for r in records] == [reply.usage.total_tokens, usage.total_tokens]
    for record in records:
        done = await asyncio.to_thread(wait_status, host["url"], record.inference_id, "FINISHED")
        assert done["cost_wei"] == record.cost.cost == record.total_tokens * PRICE
    spent = client.usage_stats(kind="request").cost
    await eventually(lambda: _balance_is(client, ESCROW - spent), "the escrow to be charged exactly")

    # the official client, pre-wired to sign
    oa = await client.openai_client(network.host(1)["url"])
    again = await oa.chat.completions.create(model=TINY, messages=HELLO, max_tokens=4)
    assert again.usage.total_tokens >= 2


async def _balance_is(client: AsyncDinferClient, wei: int) -> bool:
    return await client.balance() == wei


def test_sync_client_streams_and_refuses_bad_input(network: BackgroundDevnet) -> None:
    key = funded_key(network)
    with DinferClient.from_devnet(devnet_json(network), key) as client:
        url = network.host(2)["url"]
        # no escrow yet: the TA refuses with 402, the client raises a typed error that says what to do
        with pytest.raises(InsufficientDeposit, match="deposit"):
            client.chat(TINY, HELLO, host=url, max_tokens=8)
        client.deposit(ESCROW)
        chunks = list(client.chat(TINY, HELLO, host=url, max_tokens=8, stream=True))
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert isinstance(text, str)
        oa = client.openai_client(url)
        assert oa.chat.completions.create(model=TINY, messages=HELLO, max_tokens=4).usage.total_tokens >= 2
        with pytest.raises(HostUnreachable, match="cannot reach host"):
            client.chat(TINY, HELLO, host=f"http://127.0.0.1:{free_port()}", max_tokens=4)
        with pytest.raises(BadHostAddress, match="not a registered host"):
            client.chat(TINY, HELLO, host=Keypair.generate().address, max_tokens=4)
        assert len(client.usage.records) == 1  # the refused request bills nothing; openai_client() bypasses the ledger


# ---------------------------------------------------------------- sessions and billing


async def test_session_through_the_client_bills_what_the_chain_settles(
        client: AsyncDinferClient, network: BackgroundDevnet) -> None:
    host = network.host(1)
    deposit_tokens = SESSION_DEPOSIT // PRICE
    session = await client.open_session(host["url"], TINY, SESSION_DEPOSIT, low_balance_tokens=deposit_tokens - 1)
    assert session.session.price_per_token == PRICE  # the governance price by default
    billing = client.billing(session)
    usages: list[Any] = []
    lows: list[Any] = []
    proofs: list[ProofRecord] = []
    billing.on_usage(usages.append)
    billing.on_low_balance(lows.append)
    billing.on_proof(proofs.append)

    estimate = await client.estimate_tokens("Tell me a story", TINY, host=host["mlnodes"][0]["url"])
    assert estimate.exact and estimate.tokens >= 1  # the ML node's tokenizer
    via_host = await client.estimate_tokens("Tell me a story", TINY, host=host["url"])  # the host asks its ML node
    assert via_host.exact and via_host.tokens == estimate.tokens

    turns = 0
    while client.get_token_usage(session).total_tokens < 250 and turns < 30:
        result = await session.ask(f"Number {turns}?", max_tokens=6)
        turns += 1
        usage = client.get_token_usage(session)
        assert usage.total_tokens == result.cumulative_tokens  # the client's count is the host's running total
        assert usages[-1].remaining_tokens == deposit_tokens - usage.total_tokens
    usage = client.get_token_usage(session)
    assert usage.prompts == turns == len(usages) and len(lows) == 1
    assert usage.total_tokens >= 250 and session.receipts.signed  # checkpoints were signed along the way

    closed = await session.end()  # the host proves the rest
    assert closed.cumulative_tokens == usage.total_tokens
    cost = await client.get_session_cost(session)
    assert cost.used.tokens == usage.total_tokens
    assert cost.proven.tokens == closed.proven_tokens == await client.sessions.get_token_usage(session.job_id)
    assert 0 < cost.proven.tokens <= usage.total_tokens
    assert await client.get_remaining_tokens(session) == deposit_tokens - usage.total_tokens

    history = await client.get_proof_history(session)
    assert history and history[-1].cumulative_tokens == cost.proven.tokens
    assert sum(p.tokens_claimed for p in history) == cost.proven.tokens and len(history) == cost.proof_count
    checks = await client.verify_proof_history(session)
    assert all(check.ok for _, check in checks), [check.reason for _, check in checks]
    assert any(p.signed for p in history)
    assert [p.uid for p in await client.poll_proofs(session)] == [p.uid for p in history] == [p.uid for p in proofs]

    settlement = await session.complete()
    assert settlement.state == SessionState.COMPLETED and settlement.tokens_used == cost.proven.tokens
    assert (settlement.cost, settlement.host_earnings, settlement.treasury_fee, settlement.refund) == (
        cost.proven.cost, cost.proven.host_share, cost.proven.treasury_fee, cost.refund_if_settled_now)
    stats = client.usage_stats(job_id=session.job_id)
    assert stats.total_tokens == usage.total_tokens and stats.prompts == turns
    assert stats.avg_tokens_per_prompt == pytest.approx(usage.total_tokens / turns)
    assert await client.withdraw_refund() == settlement.refund


def test_sync_session_through_the_client(network: BackgroundDevnet) -> None:
    with DinferClient.from_devnet(devnet_json(network), funded_key(network)) as client:
        session = client.open_session(network.host(2)["url"], TINY, SESSION_DEPOSIT)
        chunks = list(session.stream("Hello", max_tokens=4))
        assert session.last_result is not None and "".join(chunks) == session.last_result.content
        second = session.ask("Again", max_tokens=4)
        usage = client.get_token_usage(session)
        assert usage.total_tokens == second.cumulative_tokens and usage.prompts == 2
        assert session.end().cumulative_tokens == usage.total_tokens
        cost = client.get_session_cost(session)
        settled = session.complete()
        assert settled.state == SessionState.COMPLETED and settled.refund == cost.refund_if_settled_now
        session.close()
        assert client.withdraw_refund() == settled.refund


async def test_session_bad_input(client: AsyncDinferClient, network: BackgroundDevnet) -> None:
    with pytest.raises(InsufficientDeposit, match="deposit at least"):
        await client.open_session(network.host(0)["url"], TINY, deposit=PRICE * 10)
    with pytest.raises(HostUnreachable):
        await client.open_session(f"http://127.0.0.1:{free_port()}", TINY, SESSION_DEPOSIT)
    async with httpx.AsyncClient() as http:  # an ML node is a web server but not a host node
        assert (await http.get(f"{network.host(0)['mlnodes'][0]['url']}/v1/identity")).status_code == 404
    with pytest.raises(BadHostAddress, match="not a dinfer host node"):
        await client.open_session(network.host(0)["mlnodes"][0]["url"], TINY, SESSION_DEPOSIT)
    assert await client.sessions.refunds(client.address) == 0  # nothing was escrowed by the refusals


# ---------------------------------------------------------------- docs


def test_docs_client_page_runs(network: BackgroundDevnet, capsys: pytest.CaptureFixture[str]) -> None:
    """Every ```python block of docs/sdk/client.md, in order, in one namespace (```py blocks are illustrative)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "sdk" / "client.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    assert len(blocks) >= 6
    host = network.host(0)
    namespace: dict[str, Any] = {"DEVNET_JSON": devnet_json(network), "KEY": funded_key(network).private_key,
                                 "HOST": host["url"], "MLNODE": host["mlnodes"][0]["url"], "MODEL": TINY}
    for block in blocks:
        exec(compile(block, "docs/sdk/client.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "tokens:" in out and "refund:" in out and "deposit at least" in out
    assert "BadHostAddress" in out and "HostUnreachable" in out
    kinds = [e[0] for e in namespace["events"]]
    assert kinds.count("usage") == 3 and kinds.count("low balance") == 1
    assert kinds.count("proof") == len(namespace["history"])
