"""The session transport over real sockets: ``/v1/ws`` with a raw ``websockets`` client (every message and error
code, compression, cancellation, checkpoints with receipts landing on chain) and the HTTP session routes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from session_support import TINY, SessionEnv, make_env, mlnode_url
from tests.fixtures.servers import serve_app
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from dinfer.config import Settings
from dinfer.http_errors import install_error_handlers
from dinfer.node import sessions_api, ws_sessions
from dinfer.node.runtime import NodeRuntime
from dinfer.node.session_service import SessionService
from dinfer.ratelimit import RateLimiter

__all__ = ["mlnode_url"]


class _Runtime:
    """The two attributes and the one method of ``NodeRuntime`` the session routes use."""

    read_body = NodeRuntime.read_body

    def __init__(self, service: SessionService, settings: Settings) -> None:
        self.sessions = service
        self.settings = settings


@pytest.fixture
async def env(chain, registry, actors, sender_for, mlnode_url: str, tmp_path: Path) -> AsyncIterator[SessionEnv]:  # type: ignore[no-untyped-def]
    e = await make_env(chain, registry, actors, sender_for, mlnode_url, tmp_path / "node.sqlite",
                       session_proof_checkpoints=1, ws_max_frame_bytes=4096)
    from fastapi import FastAPI

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(sessions_api.router)
    app.include_router(ws_sessions.router)
    app.state.runtime = _Runtime(e.service, Settings(node=e.service.settings.model_dump()))
    async with serve_app(app) as url:
        e.extra["url"] = url
        yield e
    await e.close()


class Peer:
    """A raw WebSocket client that keeps the frames it did not wait for."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def next(self, kind: str | None = None, timeout: float = 60) -> dict[str, Any]:
        """The next frame (of ``kind``), remembering the skipped ones."""
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            self.seen.append(frame)
            if kind is None or frame["type"] == kind:
                return frame

    async def error(self, code: str) -> dict[str, Any]:
        """The next frame that is not a chunk of a generation still streaming: an ``error`` with ``code``."""
        while (frame := await self.next())["type"] == "stream_chunk":
            pass
        assert frame["type"] == "error" and frame["code"] == code, frame
        return frame


@asynccontextmanager
async def peer(env: SessionEnv, **kw: Any) -> AsyncIterator[Peer]:
    url = env.extra["url"].replace("http://", "ws://") + "/v1/ws"
    async with connect(url, compression="deflate", max_size=2**22, **kw) as ws:
        yield Peer(ws)


async def opened(env: SessionEnv, p: Peer, job: int) -> dict[str, Any]:
    await p.send(type="session_init", id="init", job_id=job, model=TINY, auth=env.auth(job))
    ack = await p.next()
    assert ack["type"] == "session_ack" and ack["id"] == "init", ack
    return ack


def prompt(env: SessionEnv, job: int, index: int, content: str, **extra: Any) -> dict[str, Any]:
    s = env.signed(job, index, content)
    return {"type": "prompt", "content": content, "message_index": index, "timestamp": s.timestamp,
            "nonce": s.nonce, "signature": s.signature, **extra}


async def busy_then_cancel(env: SessionEnv, p: Peer, job: int, first_index: int) -> dict[str, Any]:
    """A second prompt during a generation gets BUSY; ``stream_cancel`` ends the generation as "cancelled".

    The tiny random model may emit its end token early, so a try whose generation finished on its own before the
    cancel arrived is repeated with the next indexes. Returns the cancelled generation's ``stream_end``.
    """
    for attempt in range(20):
        index = first_index + 2 * attempt
        await p.send(**prompt(env, job, index, f"long {attempt}", max_tokens=300, temperature=2.0),
                     id=f"long{attempt}")
        await p.next("stream_chunk")
        await p.send(**prompt(env, job, index + 1, "meanwhile"), id=f"second{attempt}")
        await p.send(type="stream_cancel")
        ends: dict[str, dict[str, Any]] = {}
        busy = False
        while f"long{attempt}" not in ends or not (busy or f"second{attempt}" in ends):
            frame = await p.next()
            if frame["type"] == "stream_end":
                ends[frame["id"]] = frame
            elif frame["type"] == "error":
                assert frame["code"] == "BUSY" and frame["id"] == f"second{attempt}", frame
                busy = True
        if busy and ends[f"long{attempt}"]["finish_reason"] == "cancelled":
            return ends[f"long{attempt}"]
    raise AssertionError("every generation ended on its own before the cancel arrived")


async def test_streaming_session_with_compression_ping_and_refresh(env: SessionEnv) -> None:
    job = await env.new_job()
    async with peer(env) as p:
        assert [type(e).__name__ for e in p.ws.protocol.extensions] == ["PerMessageDeflate"]
        ack = await opened(env, p, job)
        await p.send(**prompt(env, job, 0, "hello", max_tokens=8), id="p0")
        chunks = []
        while (frame := await p.next())["type"] == "stream_chunk":
            assert frame["id"] == "p0" and frame["message_index"] == 0
            chunks.append(frame["content"])
        assert frame["type"] == "stream_end" and frame["finish_reason"] == "length"
        assert 0 < frame["usage"]["completion_tokens"] <= 8 and len(chunks) == frame["usage"]["completion_tokens"]
        assert frame["cumulative_tokens"] == frame["usage"]["total_tokens"]
        await p.send(**prompt(env, job, 1, "again", max_tokens=3, stream=False), id="p1")
        resp = await p.next()
        assert resp["type"] == "response" and 0 < resp["usage"]["completion_tokens"] <= 3 and resp["content"]
        assert resp["cumulative_tokens"] == frame["cumulative_tokens"] + resp["usage"]["total_tokens"]
        await p.send(type="ping", id="k")
        assert await p.next() == {"type": "pong", "id": "k"}
        await p.send(type="token_refresh", id="t", token=ack["token"])
        tok = await p.next()
        assert tok["type"] == "token" and env.service.verify_token(tok["token"], job)["job"] == job
        await p.send(type="token_refresh", token="garbage")
        await p.error("UNAUTHORIZED")
        await p.send(type="ping")  # still open after an error once initialised
        assert (await p.next())["type"] == "pong"


async def test_every_error_code_before_and_during_a_session(env: SessionEnv, actors) -> None:  # type: ignore[no-untyped-def]
    job = await env.new_job()
    async with peer(env) as p:
        await p.ws.send("{not json")
        await p.error("BAD_MESSAGE")
        await p.send(type="dance")
        await p.error("BAD_MESSAGE")
        await p.send(type="session_init", job_id="one", model=TINY, auth={})
        await p.error("BAD_MESSAGE")
        await p.send(**prompt(env, job, 0, "hi"))
        await p.error("NOT_INITIALIZED")
        await p.send(type="session_init", job_id=job + 50, model=TINY, auth=env.auth(job + 50))
        await p.error("SESSION_NOT_FOUND")
        await p.send(type="session_init", job_id=job, model="HuggingFaceTB/SmolLM2-135M-Instruct",
                     auth=env.auth(job), id="m")
        assert (await p.error("MODEL_MISMATCH"))["id"] == "m"
        await p.send(type="session_resume", job_id=job, model=TINY, auth=env.auth(job))
        await p.error("BAD_MESSAGE")  # resume needs the history
        await opened(env, p, job)
        await p.send(**prompt(env, job, 0, "hi", max_tokens=2))
        end = await p.next("stream_end")
        await p.send(**prompt(env, job, 0, "hi", max_tokens=2))
        await p.error("REPLAY")
        cancelled = await busy_then_cancel(env, p, job, 1)
        status = await env.service.status(job)
        assert status["cumulative_tokens"] == cancelled["cumulative_tokens"] > end["cumulative_tokens"]
        env.service.limiter = RateLimiter(per_minute=1)
        env.service.limiter.charge(env.client.address, 5)
        await p.send(**prompt(env, job, 103, "z"))
        limited = await p.error("RATE_LIMITED")
        assert limited["retry_after_s"] > 0
        env.service.limiter = RateLimiter(per_minute=10**6)
        env.broker.set_enabled("ml0", False)
        await p.send(**prompt(env, job, 104, "z"))
        await p.error("ENGINE_UNAVAILABLE")
        env.broker.set_enabled("ml0", True)
        await p.send(type="receipt", job_id=job, cumulative_tokens=10**6, signature=env.receipt(job, 10**6))
        await p.error("BAD_MESSAGE")  # above what was billed
        await p.send(type="receipt", job_id=job, cumulative_tokens=5, signature=env.receipt(job, 5, actors.non_owner))
        await p.error("UNAUTHORIZED")
    small = await env.new_job(deposit_tokens=200)
    async with peer(env) as p:
        await opened(env, p, small)
        await p.send(**prompt(env, small, 0, "hi", max_tokens=200))
        await p.next("stream_end")
        await p.send(**prompt(env, small, 1, "hi"))
        await p.error("TOKEN_LIMIT_EXCEEDED")


async def test_unauthorized_init_closes_and_big_frames_close_1009(env: SessionEnv, actors) -> None:  # type: ignore[no-untyped-def]
    job = await env.new_job()
    async with peer(env) as p:
        await p.send(type="session_init", job_id=job, model=TINY, auth=env.auth(job, key=actors.non_owner))
        await p.error("UNAUTHORIZED")
        with pytest.raises(ConnectionClosed) as closed:
            await p.next()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    async with peer(env) as p:
        await p.send(type="ping", pad="x" * 5000)
        await p.error("FRAME_TOO_LARGE")
        with pytest.raises(ConnectionClosed) as closed:
            await p.next()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_checkpoints_receipts_and_proofs_land_on_chain(env: SessionEnv) -> None:
    job = await env.new_job()
    async with peer(env) as p:
        await opened(env, p, job)
        receipts: list[int] = []
        index = 0
        while len(receipts) < 2:
            await p.send(**prompt(env, job, index, f"tell me more {index}", max_tokens=40))
            index += 1
            while (frame := await p.next())["type"] != "stream_end":
                if frame["type"] == "receipt_request":
                    assert frame["job_id"] == job
                    receipts.append(frame["cumulative_tokens"])
                    await p.send(type="receipt", job_id=job, cumulative_tokens=frame["cumulative_tokens"],
                                 signature=env.receipt(job, frame["cumulative_tokens"]))
            await asyncio.sleep(0)
        assert receipts[0] >= 100 and receipts[1] // 100 > receipts[0] // 100
        # session_proof_checkpoints = 1: each receipt is claimed on chain with the client's signature.
        for _ in range(100):
            if len(await env.store.proofs(job)) == len(receipts):
                break
            await asyncio.sleep(0.05)
        assert await env.client_sessions.get_token_usage(job) == receipts[-1]
        proofs = await env.store.proofs(job)
        assert [pr["cumulative_tokens"] for pr in proofs] == receipts and all(pr["signed"] for pr in proofs)
        await p.send(type="session_end", id="end")
        closed = await p.next()
        status = await env.service.status(job)
        assert closed == {"type": "session_closed", "id": "end", "job_id": job,
                          "cumulative_tokens": status["cumulative_tokens"], "proven_tokens": status["proven_tokens"]}
        with pytest.raises(ConnectionClosed) as end:
            await p.next()
        assert end.value.rcvd is not None and end.value.rcvd.code == 1000
    assert status["proven_tokens"] == await env.client_sessions.get_token_usage(job)
    assert status["state"] == "ENDED"


async def test_http_token_chat_and_status_share_the_session(env: SessionEnv) -> None:
    job = await env.new_job()
    base = env.extra["url"]
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        r = await http.post(f"/v1/sessions/{job}/token", json=env.auth(job))
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        assert r.json()["expires_at"] > time.time()
        auth = {"authorization": f"Bearer {token}"}
        chat = await http.post(f"/v1/sessions/{job}/chat", json={"content": "hi", "max_tokens": 5}, headers=auth)
        assert chat.status_code == 200, chat.text
        body = chat.json()
        assert body["object"] == "chat.completion" and 0 < body["usage"]["completion_tokens"] <= 5
        assert body["dinfer"] == {"job_id": job, "cumulative_tokens": body["usage"]["total_tokens"]}
        status = (await http.get(f"/v1/sessions/{job}", headers=auth)).json()
        assert (status["cumulative_tokens"], status["context_messages"], status["model"]) == (
            body["usage"]["total_tokens"], 2, TINY)
        # Same session over the WebSocket with the JWT: billing continues from the HTTP total.
        async with peer(env) as p:
            await p.send(type="session_init", job_id=job, model=TINY, auth={"jwt": token})
            ack = await p.next()
            assert ack["cumulative_tokens"] == status["cumulative_tokens"] and ack["context_tokens"] > 0
        replaced = await http.post(f"/v1/sessions/{job}/chat", headers=auth,
                                   json={"messages": [{"role": "user", "content": "fresh"}], "max_tokens": 2})
        assert replaced.status_code == 200
        assert (await http.get(f"/v1/sessions/{job}", headers=auth)).json()["context_messages"] == 2
        # Refusals with their HTTP statuses and codes.
        assert (await http.get(f"/v1/sessions/{job}")).status_code == 401
        bad = await http.post(f"/v1/sessions/{job}/chat", headers={"authorization": "Bearer nope"},
                              json={"content": "x"})
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "UNAUTHORIZED"
        both = await http.post(f"/v1/sessions/{job}/chat", headers=auth, json={"content": "x", "messages": []})
        assert both.status_code == 400
        stale = await http.post(f"/v1/sessions/{job}/token", json=env.auth(job, timestamp=1))
        assert stale.status_code == 401
        missing = await http.post(f"/v1/sessions/{job + 9}/token", json=env.auth(job + 9))
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "SESSION_NOT_FOUND"
        other = await env.new_job()
        cross = await http.get(f"/v1/sessions/{other}", headers=auth)
        assert cross.status_code == 401
