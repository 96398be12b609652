"""SessionService over real parts: auth (signed + JWT), replay checks, generation on a real ML node, billing,
BUSY, cancellation (upstream closed, shared state intact), rate and token limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from session_support import PRICE, TINY, SessionEnv, make_env, mlnode_url

from dinfer.crypto import Keypair
from dinfer.node.session_service import Code, SessionError

__all__ = ["mlnode_url"]


@pytest.fixture
async def env(chain, registry, actors, sender_for, mlnode_url: str, tmp_path: Path) -> AsyncIterator[SessionEnv]:  # type: ignore[no-untyped-def]
    e = await make_env(chain, registry, actors, sender_for, mlnode_url, tmp_path / "node.sqlite")
    yield e
    await e.close()


async def expect(code: Code, coro: Any) -> SessionError:
    with pytest.raises(SessionError) as info:
        await coro
    assert info.value.code == code, info.value
    return info.value


async def test_open_with_signed_auth_acks_with_a_jwt(env: SessionEnv) -> None:
    job = await env.new_job()
    opened = await env.service.open(job, TINY, env.auth(job), None, resumed=False)
    ack = opened.ack
    assert (ack["job_id"], ack["model"], ack["cumulative_tokens"], ack["resumed"]) == (job, TINY, 0, False)
    assert ack["checkpoint_tokens"] == 100 and ack["max_tokens"] == 100_000 and ack["context_tokens"] == 0
    claims = env.service.verify_token(ack["token"], job)
    assert claims["sub"] == env.client.address and claims["host"] == env.host.address
    assert ack["expires_at"] - int(time.time()) in range(895, 901)
    again = await env.service.open(job, TINY, {"jwt": ack["token"]}, None, resumed=False)  # JWT works too
    assert again.client == env.client.address


async def test_auth_refusals(env: SessionEnv, actors) -> None:  # type: ignore[no-untyped-def]
    job = await env.new_job()
    svc = env.service
    await expect(Code.UNAUTHORIZED, svc.open(job, TINY, env.auth(job, key=actors.non_owner), None, resumed=False))
    await expect(Code.UNAUTHORIZED, svc.open(job, TINY, env.auth(job, timestamp=int(time.time()) - 500), None,
                                             resumed=False))
    bad = env.auth(job)
    bad["signature"] = bad["signature"][:-4] + "0000"
    await expect(Code.UNAUTHORIZED, svc.open(job, TINY, bad, None, resumed=False))
    await expect(Code.BAD_MESSAGE, svc.open(job, TINY, {"timestamp": "now", "signature": "0x"}, None, resumed=False))
    await expect(Code.MODEL_MISMATCH, svc.open(job, "HuggingFaceTB/SmolLM2-135M-Instruct", env.auth(job), None,
                                               resumed=False))
    await expect(Code.SESSION_NOT_FOUND, svc.open(job + 100, TINY, env.auth(job + 100), None, resumed=False))
    # A JWT for another job, an expired one, and one signed with another secret.
    other = await env.new_job()
    token, _ = svc.issue_token(env.client.address, other)
    await expect(Code.UNAUTHORIZED, svc.open(job, TINY, {"jwt": token}, None, resumed=False))
    old = jwt.encode({"sub": env.client.address, "job": job, "host": env.host.address, "iat": 1, "exp": 2},
                     svc._secret, algorithm="HS256")
    await expect(Code.UNAUTHORIZED, svc.open(job, TINY, {"jwt": old}, None, resumed=False))
    forged = jwt.encode({"sub": env.client.address, "job": job, "host": env.host.address, "iat": 1,
                         "exp": int(time.time()) + 60}, "x" * 32, algorithm="HS256")
    await expect(Code.UNAUTHORIZED, svc.open(job, TINY, {"jwt": forged}, None, resumed=False))


async def test_session_below_the_governance_price_is_refused(env: SessionEnv) -> None:
    receipt = await env.client_sessions.create_session(env.host.address, TINY, PRICE - 1, 3600, 600,
                                                       deposit=PRICE * 1000)
    job = env.client_sessions.job_id_of(receipt)
    await expect(Code.PRICE_TOO_LOW, env.service.open(job, TINY, env.auth(job), None, resumed=False))
    await expect(Code.PRICE_TOO_LOW, env.service.issue_for(job, env.auth(job)))  # the HTTP token route too
    assert await env.store.get(job) is None  # nothing recorded for a refused session


async def test_session_of_another_host_is_not_found(env: SessionEnv, registry, actors, sender_for) -> None:  # type: ignore[no-untyped-def]
    collateral = await registry.param("min_collateral_wei")
    await registry.with_sender(sender_for(actors.host2))._transact("register_host", "http://h2", "{}",
                                                                   value=collateral)
    job = await env.new_job(host=actors.host2.address)
    err = await expect(Code.SESSION_NOT_FOUND, env.service.open(job, TINY, env.auth(job), None, resumed=False))
    assert actors.host2.address in str(err)


async def test_prompt_streams_bills_usage_and_keeps_context(env: SessionEnv) -> None:
    job = await env.new_job()
    opened = await env.service.open(job, TINY, env.auth(job), None, resumed=False)
    pieces: list[str] = []

    async def sink(piece: str) -> None:
        pieces.append(piece)

    gen = await env.service.generate(job, opened.client, content="hello there", max_tokens=12, on_delta=sink,
                                     signed=env.signed(job, 0, "hello there"))
    # The ML node's count (one per streamed delta; llama.cpp merges multi-byte pieces), never above max_tokens.
    assert 0 < gen.completion_tokens <= 12 and gen.finish_reason == "length"
    assert gen.prompt_tokens > 3 and "".join(pieces) == gen.text
    assert gen.cumulative_tokens == gen.prompt_tokens + gen.completion_tokens
    status = await env.service.status(job)
    assert status["cumulative_tokens"] == gen.cumulative_tokens and status["context_messages"] == 2
    # The second prompt carries the whole conversation: its prompt is longer than the first one.
    gen2 = await env.service.generate(job, opened.client, content="more", signed=env.signed(job, 1, "more"),
                                      max_tokens=4)
    assert gen2.prompt_tokens > gen.prompt_tokens + gen.completion_tokens
    assert gen2.cumulative_tokens == gen.cumulative_tokens + gen2.prompt_tokens + gen2.completion_tokens
    assert (await env.service.status(job))["context_messages"] == 4


async def test_replay_and_signature_refusals_bill_nothing(env: SessionEnv, actors) -> None:  # type: ignore[no-untyped-def]
    job = await env.new_job()
    opened = await env.service.open(job, TINY, env.auth(job), None, resumed=False)
    svc, client = env.service, opened.client
    first = env.signed(job, 5, "hi")
    done = await svc.generate(job, client, content="hi", signed=first, max_tokens=2)
    billed = done.cumulative_tokens
    nonce = bytes.fromhex(first.nonce[2:])
    cases = [
        (Code.REPLAY, "hi", env.signed(job, 6, "hi", nonce=nonce)),  # nonce reused
        (Code.REPLAY, "hi", env.signed(job, 5, "hi")),  # index not increasing
        (Code.REPLAY, "hi", env.signed(job, 4, "hi")),
        (Code.REPLAY, "hi", env.signed(job, 7, "hi", timestamp=int(time.time()) - 1000)),  # stale
        (Code.UNAUTHORIZED, "hi", env.signed(job, 8, "hi", key=actors.non_owner)),  # not the client
        (Code.UNAUTHORIZED, "changed", env.signed(job, 9, "hi")),  # content differs from what was signed
    ]
    for code, content, signed in cases:
        await expect(code, svc.generate(job, client, content=content, signed=signed, max_tokens=2))
    bad_nonce = env.signed(job, 10, "hi")
    await expect(Code.BAD_MESSAGE, svc.generate(job, client, content="hi", max_tokens=2,
                                                signed=type(bad_nonce)(10, bad_nonce.timestamp, "0x12",
                                                                       bad_nonce.signature)))
    assert (await svc.status(job))["cumulative_tokens"] == billed
    ok = await svc.generate(job, client, content="hi", signed=env.signed(job, 11, "hi"), max_tokens=2)
    assert ok.cumulative_tokens > billed


async def test_second_generation_is_busy_and_cancel_stops_the_upstream(env: SessionEnv) -> None:
    job = await env.new_job()
    opened = await env.service.open(job, TINY, env.auth(job), None, resumed=False)
    first_piece = asyncio.Event()

    async def sink(piece: str) -> None:
        first_piece.set()
        await asyncio.sleep(0.01)

    task = asyncio.create_task(env.service.generate(job, opened.client, content="go", signed=env.signed(job, 0, "go"),
                                                    max_tokens=400, on_delta=sink))
    await asyncio.wait_for(first_piece.wait(), 30)
    await expect(Code.BUSY, env.service.generate(job, opened.client, content="x", signed=env.signed(job, 1, "x")))
    assert env.service.cancel(job)
    gen = await asyncio.wait_for(task, 30)
    assert gen.finish_reason == "cancelled" and 0 < gen.completion_tokens < 400
    assert gen.prompt_tokens > 0 and gen.cumulative_tokens == gen.prompt_tokens + gen.completion_tokens
    assert env.broker.get("ml0").dispatched == 0
    state = await _mlnode_idle(env)
    assert state["in_flight"] == 0 and state["queue_depth"] == 0
    assert not env.service.cancel(job)  # nothing runs any more
    # The session goes on: the cancelled answer is in the context, the next prompt works.
    after = await env.service.generate(job, opened.client, content="again", signed=env.signed(job, 2, "again"),
                                       max_tokens=3)
    assert after.finish_reason == "length"
    assert (await env.service.status(job))["cumulative_tokens"] == gen.cumulative_tokens + after.usage["total_tokens"]


async def _mlnode_idle(env: SessionEnv) -> dict[str, Any]:
    url = env.broker.get("ml0").client.endpoint.api_url("state")
    state: dict[str, Any] = {}
    for _ in range(100):
        state = (await env.http.get(url)).json()
        if state["in_flight"] == 0 and state["queue_depth"] == 0:
            break
        await asyncio.sleep(0.05)
    return state


async def test_concurrent_sessions_with_cancellations_keep_every_count(env: SessionEnv) -> None:
    jobs = [await env.new_job() for _ in range(4)]
    clients = {job: (await env.service.open(job, TINY, env.auth(job), None, resumed=False)).client for job in jobs}

    async def run(job: int, cancel: bool) -> tuple[int, int]:
        started = asyncio.Event()

        async def sink(piece: str) -> None:
            started.set()

        task = asyncio.create_task(env.service.generate(job, clients[job], content=f"job {job}", max_tokens=60,
                                                        signed=env.signed(job, 0, f"job {job}"), on_delta=sink))
        if cancel:
            await asyncio.wait_for(started.wait(), 60)
            env.service.cancel(job)
        gen = await asyncio.wait_for(task, 120)
        return job, gen.usage["total_tokens"]

    results = await asyncio.gather(*(run(job, i % 2 == 0) for i, job in enumerate(jobs)))
    for job, total in results:
        assert (await env.service.status(job))["cumulative_tokens"] == total
    assert env.broker.get("ml0").dispatched == 0
    assert (await _mlnode_idle(env))["in_flight"] == 0
    assert all(not env.service._job(job).busy for job in jobs)


async def test_cancelling_the_caller_task_bills_and_frees_the_job(env: SessionEnv) -> None:
    """A socket that dies mid-stream cancels the generate() task itself: billing still happens, nothing leaks."""
    job = await env.new_job()
    opened = await env.service.open(job, TINY, env.auth(job), None, resumed=False)
    got = asyncio.Event()

    async def sink(piece: str) -> None:
        got.set()
        await asyncio.sleep(0.01)  # a slow socket: the generation is surely still running when cancelled

    task = asyncio.create_task(env.service.generate(job, opened.client, content="x", signed=env.signed(job, 0, "x"),
                                                    max_tokens=300, on_delta=sink))
    await asyncio.wait_for(got.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    status = await env.service.status(job)
    assert status["cumulative_tokens"] > 0 and status["context_messages"] == 2
    assert not env.service._job(job).busy and env.broker.get("ml0").dispatched == 0


async def test_token_limit_and_context_too_large(env: SessionEnv) -> None:
    job = await env.new_job(deposit_tokens=150)
    opened = await env.service.open(job, TINY, env.auth(job), None, resumed=False)
    gen = await env.service.generate(job, opened.client, content="hi", signed=env.signed(job, 0, "hi"), max_tokens=200)
    assert gen.cumulative_tokens <= 150  # max_tokens was cut to what the deposit still pays for
    await expect(Code.TOKEN_LIMIT_EXCEEDED, env.service.generate(job, opened.client, content="hi",
                                                                 signed=env.signed(job, 1, "hi")))
    big = await env.new_job()
    await env.service.open(big, TINY, env.auth(big), None, resumed=False)
    text = "word " * 600
    await expect(Code.BAD_MESSAGE, env.service.generate(big, opened.client, content=text,
                                                        signed=env.signed(big, 0, text)))


async def test_context_is_trimmed_to_the_window(env: SessionEnv) -> None:
    job = await env.new_job()
    history = [{"role": "system", "content": "be brief"}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i} " * 3} for i in range(40)]
    opened = await env.service.open(job, TINY, env.auth(job), history, resumed=True)
    status = await env.service.status(job)
    assert 2 < status["context_messages"] < 41 and status["context_tokens"] < 512
    assert opened.ack["resumed"] and opened.ack["context_tokens"] == status["context_tokens"]
    record = await env.store.get(job)
    assert record is not None and record.context[0].content == "be brief"
    assert record.context[-1].content == history[-1]["content"]  # the newest survive


async def test_rate_limit_per_client(chain, registry, actors, sender_for, mlnode_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = await make_env(chain, registry, actors, sender_for, mlnode_url, tmp_path / "n.sqlite",
                         session_rate_limit_tokens_per_minute=120)
    try:
        job = await env.new_job()
        opened = await env.service.open(job, TINY, env.auth(job), None, resumed=False)
        await env.service.generate(job, opened.client, content="a", signed=env.signed(job, 0, "a"), max_tokens=100)
        err = await expect(Code.RATE_LIMITED, env.service.generate(job, opened.client, content="b",
                                                                   signed=env.signed(job, 1, "b"), max_tokens=4))
        assert err.retry_after_s is not None and err.retry_after_s > 0
        # The refused prompt consumed nothing: the same signed index is accepted later by another client's budget
        other = Keypair.generate()
        env.service.limiter.acquire(other.address)
        assert (await env.store.get(job)).last_message_index == 0  # type: ignore[union-attr]
    finally:
        await env.close()


async def test_engine_unavailable(env: SessionEnv) -> None:
    job = await env.new_job()
    opened = await env.service.open(job, TINY, env.auth(job), None, resumed=False)
    env.broker.set_enabled("ml0", False)
    await expect(Code.ENGINE_UNAVAILABLE, env.service.generate(job, opened.client, content="hi",
                                                               signed=env.signed(job, 0, "hi")))
    env.broker.set_enabled("ml0", True)
    assert (await env.service.status(job))["cumulative_tokens"] == 0


async def test_tokenize_route(mlnode_url: str) -> None:
    async with httpx.AsyncClient(base_url=mlnode_url) as http:
        r = await http.post("/v1/tokenize", json={"content": "hello there"})
        assert r.status_code == 200
        body = r.json()
        assert body["count"] == len(body["tokens"]) > 0 and body["context_window"] == 512
        chat = await http.post("/v1/tokenize", json={"model": TINY, "messages": [{"role": "user", "content": "hi"}]})
        assert chat.json()["count"] > body["count"] - 5 and chat.json()["tokens"] is None
        assert (await http.post("/v1/tokenize", json={})).status_code == 400
        assert (await http.post("/v1/tokenize", json={"content": "x", "model": "other"})).status_code == 404
        assert (await http.post("/v1/tokenize", content=b"{nope")).status_code == 400
