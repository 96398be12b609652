"""Session SDK and ``dinfer session`` CLI against the shared devnet (real anvil, host nodes, ML nodes).

Every test uses a fresh client account funded from the demo client, so balances and refunds are exact (wei).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from network import TINY, BackgroundDevnet

from dinfer.chain.backends import connect
from dinfer.chain.contracts.sessions import SessionsClient, SessionState
from dinfer.chain.deploy import bind
from dinfer.chain.txqueue import TxSender
from dinfer.config import NodeSettings
from dinfer.crypto import Keypair
from dinfer.retry import RetryPolicy
from dinfer.sdk._session_wire import SessionKeys, signed_auth
from dinfer.sdk.sessions import SessionClient, SessionError, SessionOptions, SyncSessionClient

pytestmark = pytest.mark.e2e

ETH = 10**18
PRICE = 100_000_000  # the tiny model's governance price (genesis/devnet.toml)
DEPOSIT = 10**15  # 10 million tokens at PRICE
CHECKPOINT = 100
PROOF_EVERY = NodeSettings.model_fields["session_proof_checkpoints"].default
MIN_PROVEN = 100


@dataclass
class Env:
    net: BackgroundDevnet
    client: Keypair
    sessions: SessionsClient
    """Acts as ``client``."""
    senders: list[TxSender]

    def host(self, i: int) -> dict[str, Any]:
        return self.net.host(i)


@pytest.fixture
async def env(network: BackgroundDevnet) -> AsyncIterator[Env]:
    w3 = connect([network.info.rpc_url])
    bank = TxSender(w3, Keypair.from_private_key(network.info.demo_client_key), poll_interval=0.1)
    client = Keypair.generate()
    await bank.transact({"to": client.address, "value": ETH}, gas=21_000)
    sender = TxSender(w3, client, poll_interval=0.1)
    contract = bind(w3, "Sessions", network.info.contracts.address("Sessions"))
    e = Env(network, client, SessionsClient(contract, sender), [bank, sender])
    yield e
    for s in e.senders:
        await s.close()
    await w3.provider.disconnect()


async def host_view(url: str, sessions: SessionsClient, client: Keypair, host: str, job_id: int) -> dict[str, Any]:
    domain = await sessions.receipt_domain()
    auth = signed_auth(SessionKeys(client.private_key, domain.chain_id, domain.sessions_contract), job_id, host)
    async with httpx.AsyncClient(timeout=30) as http:
        token = (await http.post(f"{url}/v1/sessions/{job_id}/token", json=auth)).json()["token"]
        r = await http.get(f"{url}/v1/sessions/{job_id}", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def wait_for(check: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await check():
            return value
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what} not reached within {timeout} s")


def expected_final_proof(proven: int, billed: int, receipt: int) -> int:
    """The chain total after the host's closing proof (docs/sessions.md: receipt first, else unsigned claim)."""
    if receipt - proven >= MIN_PROVEN:
        return receipt
    if billed - proven >= MIN_PROVEN:
        return billed
    return proven


# ---------------------------------------------------------------- SDK


async def test_sdk_streams_signs_receipts_and_proves_checkpoints_on_chain(env: Env) -> None:
    host = env.host(0)
    session = await SessionClient.open(env.sessions, env.client, host=host["address"], model=TINY, deposit=DEPOSIT)
    assert session.ack is not None and session.ack.resumed is False and session.ack.cumulative_tokens == 0
    assert session.ack.checkpoint_tokens == CHECKPOINT
    assert session.url == host["url"]
    billed = 0
    turns = 0
    # Every generation that crosses a multiple of checkpoint_tokens is a checkpoint; a proof is due every
    # PROOF_EVERY checkpoints: keep chatting until the chain shows the first one.
    while turns < 40 and await env.sessions.get_proof_count(session.job_id) == 0:
        stream = session.send_prompt(f"Tell me about the number {turns}", max_tokens=6)
        chunks = [c async for c in stream]
        result = stream.result
        assert result is not None and result.content == "".join(chunks)
        assert result.usage.completion_tokens >= 1 and result.usage.prompt_tokens >= 1
        billed += result.usage.total_tokens
        assert result.cumulative_tokens == billed  # the host's running total is exactly the sum of usages
        turns += 1
        if len(session.receipts.signed) >= PROOF_EVERY:
            await wait_for(lambda: env.sessions.get_proof_count(session.job_id), 60, "the checkpoint proof")
    assert len(session.history) == 2 * turns

    signed = [r.cumulative_tokens for r in session.receipts.signed]
    assert signed and signed == sorted(signed) and signed[-1] <= billed
    chain_total = await env.sessions.get_token_usage(session.job_id)
    assert chain_total in signed, "the checkpoint proof carries one of the client's receipts"
    assert chain_total >= PROOF_EVERY * CHECKPOINT  # due after PROOF_EVERY checkpoints, each ≥ one multiple
    view = await host_view(host["url"], env.sessions, env.client, host["address"], session.job_id)
    assert view["cumulative_tokens"] == billed and view["last_receipt_tokens"] == signed[-1]
    assert view["proofs"] and all(p["signed"] for p in view["proofs"])
    assert await env.sessions.get_proof_count(session.job_id) == len(view["proofs"])

    # the socket's JWT can be swapped for a fresh one at any time
    reply = await session._request({"type": "token_refresh", "token": session._token}, expect="token")
    assert reply["token"] and reply["expires_at"] >= session.ack.expires_at
    assert await session.ping() < 5

    closed = await session.end()
    assert closed.job_id == session.job_id and closed.cumulative_tokens == billed
    final = expected_final_proof(chain_total, billed, signed[-1])
    assert closed.proven_tokens == final == await env.sessions.get_token_usage(session.job_id)
    assert not session.connected

    settlement = await session.complete()
    assert settlement.state == SessionState.COMPLETED and settlement.tokens_used == final
    assert settlement.refund == DEPOSIT - final * PRICE
    assert await session.withdraw_refund() == settlement.refund


async def test_resume_on_a_second_host_carries_the_history(env: Env) -> None:
    first, second = env.host(1), env.host(2)
    session = await SessionClient.open(env.sessions, env.client, host=first["address"], model=TINY, deposit=DEPOSIT)
    one = await session.send_prompt("My name is Ada.", max_tokens=4)
    two = await session.send_prompt("What is my name?", max_tokens=4, stream=False)
    assert two.cumulative_tokens == one.usage.total_tokens + two.usage.total_tokens
    history = session.history.context()
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    first_job = session.job_id
    await session.close()  # the first host's socket is gone

    ack = await session.resume_on(second["url"])
    assert ack.resumed is True and ack.cumulative_tokens == 0 and ack.context_tokens > 0
    assert session.previous_jobs == [first_job] and session.job_id != first_job
    moved = await env.sessions.get_session(session.job_id)
    assert moved.host == second["address"] and moved.client == env.client.address
    assert moved.deposit == DEPOSIT and moved.price_per_token == PRICE
    view = await host_view(second["url"], env.sessions, env.client, second["address"], session.job_id)
    assert view["context_messages"] == 4 and view["cumulative_tokens"] == 0

    three = await session.send_prompt("And again?", max_tokens=4)
    assert three.cumulative_tokens == three.usage.total_tokens
    # the rebuilt context went into the prompt: more prompt tokens than the bare message alone
    assert three.usage.prompt_tokens > one.usage.prompt_tokens
    view = await host_view(second["url"], env.sessions, env.client, second["address"], session.job_id)
    assert view["context_messages"] == 6

    # the same job on its own host again: session_resume keeps billing where it was
    await session.close()
    again = await session.resume_on(second["url"])
    assert again.resumed is True and again.cumulative_tokens == three.cumulative_tokens
    await session.end()
    for job in (first_job, session.job_id):
        assert (await session.complete(job)).state == SessionState.COMPLETED


async def test_sdk_refusals(env: Env) -> None:
    host = env.host(0)
    # a deposit of exactly the minimum proof: the first prompt (context + answer) does not fit
    small = await SessionClient.open(env.sessions, env.client, host=host["address"], model=TINY,
                                     deposit=MIN_PROVEN * PRICE)
    with pytest.raises(SessionError) as refused:
        await small.send_prompt("x " * 60, max_tokens=16)  # ~120 tokens: fits the window, not the deposit
    assert refused.value.code == "TOKEN_LIMIT_EXCEEDED", refused.value
    assert small.connected and len(small.history) == 0  # refused prompts bill nothing and keep the socket
    await small.close()

    # another client's job: refused locally before any socket opens
    stranger = Keypair.generate()
    with pytest.raises(Exception, match="belongs to client"):
        await SessionClient.attach(env.sessions, stranger, small.job_id)

    # the job's host is host 0: host 1 answers SESSION_NOT_FOUND and the client does not retry it
    with pytest.raises(SessionError) as wrong_host:
        await SessionClient.attach(env.sessions, env.client, small.job_id, url=env.host(1)["url"])
    assert wrong_host.value.code == "SESSION_NOT_FOUND"


async def test_prompt_after_a_host_restart_reconnects_and_resumes(env: Env) -> None:
    host = env.host(0)
    options = SessionOptions(retry=RetryPolicy(min_backoff=0.5, max_backoff=2.0, max_retries=90))
    session = await SessionClient.open(env.sessions, env.client, host=host["address"], model=TINY, deposit=DEPOSIT,
                                       options=options)
    first = await session.ask("Hello", max_tokens=4)
    env.net.kill("host0")

    async def dropped() -> bool:
        return not session.connected

    await wait_for(dropped, 30, "the client to notice the dropped socket")
    revive = asyncio.create_task(asyncio.to_thread(env.net.revive, "host0"))
    try:
        second = await session.ask("Still there?", max_tokens=4)  # reconnects with backoff, then session_resume
    finally:
        await revive
    assert session.ack is not None and session.ack.resumed is True
    assert session.ack.cumulative_tokens == first.cumulative_tokens  # the host's SQLite kept the billing
    assert second.cumulative_tokens == first.cumulative_tokens + second.usage.total_tokens
    assert len(session.history) == 4
    await session.end()
    await session.complete()


def test_sync_client_for_scripts(network: BackgroundDevnet) -> None:
    host = network.host(1)
    with SyncSessionClient.open(network.info.rpc_url, network.info.contracts.address("Sessions"),
                                network.info.demo_client_key, host=host["address"], model=TINY,
                                deposit=DEPOSIT) as session:
        chunks = list(session.stream("Hello", max_tokens=4))
        assert session.last_result is not None and "".join(chunks) == session.last_result.content
        second = session.ask("Again", max_tokens=4)
        assert second.cumulative_tokens == session.last_result.usage.total_tokens + second.usage.total_tokens
        assert session.end().cumulative_tokens == second.cumulative_tokens
        settled = session.complete()
        assert settled.state == SessionState.COMPLETED and settled.job_id == session.job_id


# ---------------------------------------------------------------- CLI


def dinfer_session(net: BackgroundDevnet, key: str, *args: str, input: str = "") -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "dinfer.cli", "session", *args, "--deployment", str(net.net.info_path), "--key", key,
         "--json"], capture_output=True, text=True, timeout=180, input=input)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return dict(json.loads(proc.stdout))


async def test_cli_open_chat_status_close_settles_exactly(env: Env) -> None:
    host = env.host(2)
    key = env.client.private_key
    opened = await asyncio.to_thread(dinfer_session, env.net, key, "open", "--url", host["url"], "--deposit",
                                     "0.001", "--model", TINY)
    job = int(opened["job_id"])
    assert opened["host"] == host["address"] and opened["deposit_wei"] == 10**15
    assert opened["price_per_token"] == PRICE and opened["max_tokens"] == 10**15 // PRICE

    prompts = [f"Turn {i}: " + "tell me a long story about lighthouses and the sea " * 4 for i in range(3)]
    chat = await asyncio.to_thread(dinfer_session, env.net, key, "chat", str(job), *(a for p in prompts
                                   for a in ("-m", p)), "--max-tokens", "8")
    assert [t["prompt"] for t in chat["turns"]] == prompts
    # interactive mode reads one prompt per line from stdin until EOF
    typed = await asyncio.to_thread(dinfer_session, env.net, key, "chat", str(job), "--max-tokens", "4",
                                    input="One more line\n")
    assert [t["prompt"] for t in typed["turns"]] == ["One more line"]
    turns = chat["turns"] + typed["turns"]
    billed = turns[-1]["cumulative_tokens"]
    assert billed == sum(t["usage"]["total_tokens"] for t in turns)

    status = await asyncio.to_thread(dinfer_session, env.net, key, "status", str(job))
    assert status["chain"]["state"] == "ACTIVE" and status["chain"]["host"] == host["address"]
    assert status["host"]["cumulative_tokens"] == billed and status["host"]["model"] == TINY

    earnings_before = await env.sessions.earnings(host["address"])
    treasury_before = await env.sessions.treasury_balance()
    closed = await asyncio.to_thread(dinfer_session, env.net, key, "close", str(job), "--withdraw")
    session = await env.sessions.get_session(job)
    assert closed["state"] == "COMPLETED" == session.state.name
    tokens = session.cumulative_tokens
    assert closed["tokens_used"] == tokens == closed["proven_by_host"]
    assert tokens == expected_final_proof(0, billed, typed["last_receipt_tokens"] or chat["last_receipt_tokens"])
    assert tokens >= MIN_PROVEN  # the conversation was long enough for a receipt-backed closing proof
    cost = tokens * PRICE
    fee = cost * session.treasury_fee_bps // 10_000
    assert closed["refund"] == 10**15 - cost == closed["withdrawn_wei"]
    assert await env.sessions.earnings(host["address"]) - earnings_before == cost - fee == closed["host_earnings"]
    assert await env.sessions.treasury_balance() - treasury_before == fee == closed["treasury_fee"]
    assert await env.sessions.refunds(env.client.address) == 0  # pulled exactly once


def test_cli_errors_are_one_line(network: BackgroundDevnet) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dinfer.cli", "session", "status", "999999", "--deployment",
         str(network.net.info_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "UnknownSession" in proc.stderr, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "dinfer.cli", "session", "open", "--deposit", "-1", "--deployment",
                           str(network.net.info_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "amount must be positive" in proc.stderr
