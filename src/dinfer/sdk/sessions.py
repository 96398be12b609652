"""Session jobs from Python: pay one host for a conversation over a WebSocket (``SessionClient``).

The client escrows a deposit on chain (``Sessions.create_session``), then talks to the host's ``/v1/ws`` socket:
signed ``session_init``, signed ``prompt``s streamed back chunk by chunk, and a signed EIP-712 receipt every
time the host asks (``receipt_request``: every ``checkpoint_tokens``), which is what lets the host prove the tokens
on chain. The client keeps the conversation, so ``resume_on`` can carry it to another host.

Example:
    >>> session = await SessionClient.open(sessions, client_key, host=host_address, model=MODEL,
    ...                                    deposit=10**16)                                   # doctest: +SKIP
    >>> async for text in session.send_prompt("Name three colours"):
    ...     print(text, end="")
    >>> await session.end()          # the host proves the last tokens
    >>> await session.complete()     # settle on chain: host paid, the rest refunded
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from dinfer.chain.contracts.epochs import model_key
from dinfer.chain.contracts.sessions import Session, SessionsClient, SessionState
from dinfer.crypto import Keypair, checksum, sign_receipt
from dinfer.errors import ConfigError
from dinfer.retry import RetryPolicy
from dinfer.sdk._session_chain import Settlement, create_job, host_url, identity_address, model_of
from dinfer.sdk._session_sync import SyncSessionClient
from dinfer.sdk._session_wire import (
    MAX_FRAME_BYTES,
    TRANSIENT_CODES,
    Conversation,
    PromptResult,
    ReceiptGuard,
    SessionAck,
    SessionClosed,
    SessionDisconnected,
    SessionError,
    SessionKeys,
    SignedReceipt,
    Usage,
    http_url,
    prompt_frame,
    refresh_delay,
    signed_auth,
    ws_url,
)

__all__ = [
    "PromptResult", "PromptStream", "SessionAck", "SessionClient", "SessionClosed", "SessionDisconnected",
    "SessionError", "SessionOptions", "Settlement", "SignedReceipt", "SyncSessionClient", "Usage", "create_job",
    "host_url", "identity_address", "model_of",
]

log = logging.getLogger(__name__)

_CLOSED = object()
"""Put on every waiting reply queue when the socket's reader stops."""


@dataclass(frozen=True)
class SessionOptions:
    """How a ``SessionClient`` talks to hosts (one object instead of a dozen keyword arguments)."""

    compression: bool = True
    """Offer permessage-deflate (the host uses it when offered)."""
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(min_backoff=0.2, max_backoff=5.0, max_retries=5))
    """Reconnects after a dropped socket and re-sends of prompts refused as RATE_LIMITED/ENGINE_UNAVAILABLE/BUSY."""
    open_timeout_s: float = 10.0
    reply_timeout_s: float = 300.0
    """Longest silence while a reply is awaited (a generation streams within this)."""
    end_timeout_s: float = 120.0
    """``session_end`` waits this long for the host's final proof and ``session_closed``."""
    refresh_margin_s: float = 60.0
    """Refresh the JWT this long before it expires."""


class PromptStream:
    """One prompt's answer: iterate for text chunks, or ``await`` it for the final ``PromptResult``.

    Example:
        >>> stream = session.send_prompt("Hello")               # doctest: +SKIP
        >>> async for text in stream:
        ...     print(text, end="")
        >>> stream.result.usage.total_tokens
    """

    def __init__(self) -> None:
        self._chunks: Any = None
        self.result: PromptResult | None = None

    def __aiter__(self) -> PromptStream:
        return self

    async def __anext__(self) -> str:
        return await self._chunks.__anext__()

    async def collect(self) -> PromptResult:
        """Read to the end; the final result (text, usage, cumulative tokens, finish reason)."""
        async for _ in self:
            pass
        assert self.result is not None
        return self.result

    async def aclose(self) -> None:
        """Stop reading early: the host is told to cancel and the partial answer is kept in the history."""
        await self._chunks.aclose()

    def __await__(self) -> Generator[Any, None, PromptResult]:
        return self.collect().__await__()


class SessionClient:
    """One client's conversation on one session job, over one WebSocket at a time.

    Build it with ``open`` (creates the job on chain) or ``attach`` (an existing job); both connect. Use
    ``async with`` (or ``close()``) to release the socket; ``end()`` + ``complete()`` finish the session.
    """

    def __init__(self, sessions: SessionsClient, key: Keypair, session: Session, *, url: str, model: str,
                 keys: SessionKeys, options: SessionOptions | None = None,
                 history: Conversation | None = None, first_message_index: int = 0) -> None:
        self.sessions = sessions
        self.key = key
        self.session = session
        self.url = http_url(url)
        self.model = model
        self.keys = keys
        self.options = options or SessionOptions()
        self.history = history or Conversation()
        self.ack: SessionAck | None = None
        self.receipts = ReceiptGuard(session.job_id, session.max_tokens)
        self.previous_jobs: list[int] = []
        self.result_hooks: list[Callable[[PromptResult], Any]] = []
        """Called with every generation's ``PromptResult`` (usage tracking: ``dinfer.sdk.billing``)."""
        self._message_index = first_message_index
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._routes: dict[str, asyncio.Queue[Any]] = {}
        self._ids = itertools.count(1)
        self._send_lock = asyncio.Lock()
        self._generation = asyncio.Lock()
        self._current_prompt: str | None = None
        self._token: str = ""
        self._expires_at: float = 0.0

    # ------------------------------------------------------------------ construction

    @classmethod
    async def open(cls, sessions: SessionsClient, key: Keypair, *, host: str, model: str, deposit: int,
                   price_per_token: int | None = None, max_duration: int = 3600, proof_interval: int = 600,
                   url: str | None = None, options: SessionOptions | None = None) -> SessionClient:
        """Create a session job for ``host`` on chain (escrowing ``deposit`` wei), then connect and init.

        ``price_per_token`` defaults to the governance model's price; ``url`` to the host's registered URL.

        Example:
            >>> session = await SessionClient.open(sessions, key, host=addr, model=MODEL,
            ...                                    deposit=10**16)                          # doctest: +SKIP
        """
        job_id = await create_job(sessions, host=host, model=model, deposit=deposit, price_per_token=price_per_token,
                                  max_duration=max_duration, proof_interval=proof_interval)
        client = await cls._build(sessions, key, job_id, url=url, model=model, options=options, message_index=0)
        await client.connect()
        return client

    @classmethod
    async def attach(cls, sessions: SessionsClient, key: Keypair, job_id: int, *, url: str | None = None,
                     model: str | None = None, history: list[dict[str, str]] | None = None,
                     options: SessionOptions | None = None) -> SessionClient:
        """Connect to an existing job of this client (``session_resume`` when ``history`` is given).

        The model id is looked up among the governance models when not given. Message indexes start from the
        clock (milliseconds), so they stay above whatever an earlier process of this client sent.

        Example:
            >>> session = await SessionClient.attach(sessions, key, 7)                       # doctest: +SKIP
        """
        client = await cls._build(sessions, key, job_id, url=url, model=model, options=options,
                                  message_index=int(time.time() * 1000))
        if history:
            client.history = Conversation([dict(m) for m in history])
        await client.connect(resume=bool(history))
        return client

    @classmethod
    async def _build(cls, sessions: SessionsClient, key: Keypair, job_id: int, *, url: str | None,
                     model: str | None, options: SessionOptions | None, message_index: int) -> SessionClient:
        session = await sessions.get_session(job_id)
        if checksum(session.client) != key.address:
            raise ConfigError(f"job {job_id} belongs to client {session.client}, not to {key.address}")
        if session.state != SessionState.ACTIVE:
            raise ConfigError(f"job {job_id} is {session.state.name}, not ACTIVE")
        model = model or await model_of(sessions, session)
        if model_key(model) != session.model_key:
            raise ConfigError(f"job {job_id} is not for model {model!r}")
        domain = await sessions.receipt_domain()
        keys = SessionKeys(key.private_key, domain.chain_id, domain.sessions_contract)
        url = url or await host_url(sessions, session.host)
        return cls(sessions, key, session, url=url, model=model, keys=keys, options=options,
                   first_message_index=message_index)

    @property
    def job_id(self) -> int:
        return self.session.job_id

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._reader is not None and not self._reader.done()

    # ------------------------------------------------------------------ connection

    async def connect(self, *, resume: bool = False) -> SessionAck:
        """Open the socket (retrying transient failures with backoff) and send ``session_init``/``session_resume``."""
        attempts = [0.0, *self.options.retry.delays()]
        last: Exception | None = None
        for delay in attempts:
            await asyncio.sleep(delay)
            try:
                return await self._connect_once(resume=resume)
            except SessionError as exc:
                if exc.code == "UNAUTHORIZED" and self._token:  # a JWT the host no longer takes: sign instead
                    self._token, self._expires_at = "", 0.0
                elif exc.code not in TRANSIENT_CODES:
                    raise
                last = exc
            except (OSError, TimeoutError, InvalidHandshake, SessionDisconnected) as exc:
                if isinstance(exc, InvalidStatus) and exc.response.status_code < 500:
                    raise SessionDisconnected(f"{self.url} refused the WebSocket upgrade: "
                                              f"HTTP {exc.response.status_code}") from None
                last = exc
            log.info("session %s: connecting to %s failed (%s); retrying", self.job_id, self.url, last)
        raise SessionDisconnected(f"cannot reach {ws_url(self.url)} after {len(attempts)} tries: {last}")

    async def _connect_once(self, *, resume: bool) -> SessionAck:
        await self._drop_socket()
        try:
            ws = await connect(ws_url(self.url), compression="deflate" if self.options.compression else None,
                               max_size=MAX_FRAME_BYTES, open_timeout=self.options.open_timeout_s)
        except InvalidURI as exc:
            raise ConfigError(f"bad host URL {self.url!r}: {exc}") from None
        self._ws = ws
        self._reader = asyncio.create_task(self._read_loop(ws), name=f"session-{self.job_id}-reader")
        frame: dict[str, Any] = {"type": "session_resume" if resume else "session_init", "job_id": self.job_id,
                                 "model": self.model, "auth": self._auth()}
        if resume or self.history:
            frame["conversation_context"] = self.history.context()
        try:
            reply = await self._request(frame, expect="session_ack")
        except BaseException:
            await self._drop_socket()
            raise
        self.ack = SessionAck.from_wire(reply)
        self._token, self._expires_at = self.ack.token, self.ack.expires_at
        self._message_index = max(self._message_index, int(reply.get("last_message_index", 0)))
        if self.ack.max_tokens:
            self.receipts.max_tokens = min(self.session.max_tokens, self.ack.cumulative_tokens + self.ack.max_tokens)
        if self._token and self._expires_at:
            self._refresher = asyncio.create_task(self._refresh_loop(), name=f"session-{self.job_id}-jwt")
        return self.ack

    def _auth(self) -> dict[str, Any]:
        """The saved JWT while it has a minute left on the same host, else a fresh signature."""
        if self._token and self._expires_at - time.time() > self.options.refresh_margin_s:
            return {"jwt": self._token}
        return signed_auth(self.keys, self.job_id, self.session.host)

    async def close(self) -> None:
        """Close the socket without ending the session (the host keeps the job; ``attach`` reconnects)."""
        await self._drop_socket()

    async def __aenter__(self) -> SessionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _drop_socket(self) -> None:
        tasks = [t for t in (self._refresher, self._reader) if t is not None and t is not asyncio.current_task()]
        ws, self._ws, self._reader, self._refresher = self._ws, None, None, None
        if ws is not None:
            await ws.close()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------------ frames in and out

    async def _read_loop(self, ws: ClientConnection) -> None:
        """Route every host frame to whoever waits for its ``id``; answer receipt requests at once."""
        try:
            async for raw in ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    log.warning("session %s: host sent a non-JSON frame", self.job_id)
                    continue
                if not isinstance(frame, dict):
                    continue
                if frame.get("type") == "receipt_request":
                    await self._answer_receipt(frame)
                    continue
                queue = self._routes.get(str(frame.get("id"))) if frame.get("id") is not None else None
                if queue is None and self._current_prompt is not None and frame.get("type") in (
                        "stream_chunk", "stream_end", "response", "error"):
                    queue = self._routes.get(self._current_prompt)  # a host that does not echo ids
                if queue is not None:
                    queue.put_nowait(frame)
                elif frame.get("type") == "error":
                    log.warning("session %s: host error %s: %s", self.job_id, frame.get("code"), frame.get("message"))
        except ConnectionClosed:
            pass
        finally:
            for queue in self._routes.values():
                queue.put_nowait(_CLOSED)

    async def _send(self, frame: dict[str, Any]) -> None:
        data = json.dumps(frame, separators=(",", ":"))
        if len(data.encode()) > MAX_FRAME_BYTES:
            raise SessionError("FRAME_TOO_LARGE", f"frame of {len(data.encode())} bytes exceeds {MAX_FRAME_BYTES}")
        ws = self._ws
        if ws is None or not self.connected:
            raise SessionDisconnected(f"session {self.job_id}: not connected to {self.url}")
        async with self._send_lock:
            try:
                await ws.send(data)
            except ConnectionClosed as exc:
                raise SessionDisconnected(f"session {self.job_id}: socket closed ({exc})") from None

    def _route(self, prefix: str) -> tuple[str, asyncio.Queue[Any]]:
        frame_id = f"{prefix}{next(self._ids)}"
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._routes[frame_id] = queue
        return frame_id, queue

    async def _next(self, queue: asyncio.Queue[Any], timeout: float, partial: str = "") -> dict[str, Any]:
        try:
            item = await asyncio.wait_for(queue.get(), timeout)
        except TimeoutError:
            await self._drop_socket()
            raise SessionDisconnected(f"session {self.job_id}: no reply from {self.url} in {timeout:.0f} s",
                                      partial=partial) from None
        if item is _CLOSED:
            raise SessionDisconnected(f"session {self.job_id}: {self.url} closed the socket", partial=partial)
        return item  # type: ignore[no-any-return]

    async def _request(self, frame: dict[str, Any], *, expect: str, timeout: float | None = None) -> dict[str, Any]:
        """Send a control frame and wait for its reply of type ``expect`` (an ``error`` reply raises)."""
        frame_id, queue = self._route(frame["type"][:2])
        try:
            await self._send({**frame, "id": frame_id})
            while True:
                reply = await self._next(queue, timeout or self.options.reply_timeout_s)
                if reply.get("type") == "error":
                    raise SessionError.from_frame(reply)
                if reply.get("type") == expect:
                    return reply
        finally:
            self._routes.pop(frame_id, None)

    async def _answer_receipt(self, frame: dict[str, Any]) -> None:
        refusal = self.receipts.refusal(frame)
        if refusal is not None:
            log.warning("session %s: not signing: %s", self.job_id, refusal)
            return
        tokens = int(frame["cumulative_tokens"])
        signature = "0x" + sign_receipt(self.keys.chain_id, self.keys.sessions_contract, self.job_id, tokens,
                                        self.keys.private_key).hex()
        if tokens > self.receipts.last_tokens:
            self.receipts.signed.append(SignedReceipt(self.job_id, tokens, signature))
        with contextlib.suppress(SessionDisconnected):
            await self._send({"type": "receipt", "job_id": self.job_id, "cumulative_tokens": tokens,
                              "signature": signature})

    async def _refresh_loop(self) -> None:
        """Swap the JWT for a fresh one shortly before it expires (reconnects then skip the signature)."""
        while True:
            await asyncio.sleep(refresh_delay(self._expires_at, time.time(), margin_s=self.options.refresh_margin_s))
            try:
                reply = await self._request({"type": "token_refresh", "token": self._token}, expect="token")
            except (SessionError, SessionDisconnected) as exc:
                log.info("session %s: token refresh failed (%s); the next connect signs again", self.job_id, exc)
                self._token, self._expires_at = "", 0.0
                return
            self._token, self._expires_at = str(reply["token"]), float(reply["expires_at"])

    # ------------------------------------------------------------------ prompts

    def send_prompt(self, content: str, *, stream: bool = True, max_tokens: int | None = None,
                    temperature: float | None = None) -> PromptStream:
        """Ask the host; iterate the result for text chunks, or ``await`` it for the ``PromptResult``.

        Prompts run one at a time. A prompt refused as busy/rate-limited/engine-unavailable, or lost with the
        socket before any text came back, is sent again (after a reconnect) under the session's ``RetryPolicy``.

        Example:
            >>> result = await session.send_prompt("Hi", max_tokens=32)                       # doctest: +SKIP
            >>> result.content, result.usage.total_tokens, result.cumulative_tokens
        """
        sink = PromptStream()
        sink._chunks = self._generate(content, stream, max_tokens, temperature, sink)
        return sink

    async def ask(self, content: str, **kwargs: Any) -> PromptResult:
        """``send_prompt`` read to the end."""
        return await self.send_prompt(content, **kwargs).collect()

    async def _generate(self, content: str, stream: bool, max_tokens: int | None, temperature: float | None,
                        sink: PromptStream) -> AsyncIterator[str]:
        async with self._generation:
            attempts = 0
            while True:
                if not self.connected:
                    await self.connect(resume=self.ack is not None)
                self._message_index += 1
                frame_id, queue = self._route("p")
                self._current_prompt = frame_id
                parts: list[str] = []
                sent = finished = False
                try:
                    await self._send(prompt_frame(self.keys, self.job_id, self._message_index, content, stream=stream,
                                                  max_tokens=max_tokens, temperature=temperature, frame_id=frame_id))
                    sent = True
                    while True:
                        reply = await self._next(queue, self.options.reply_timeout_s, "".join(parts))
                        kind = reply.get("type")
                        if kind == "stream_chunk":
                            text = str(reply.get("content") or "")
                            parts.append(text)
                            if text:
                                yield text
                        elif kind in ("stream_end", "response"):
                            finished = True
                            answer = str(reply["content"]) if kind == "response" else "".join(parts)
                            result = PromptResult.from_wire(reply, answer)
                            self.history.add_turn(content, answer)
                            sink.result = result
                            self._notify_result(result)
                            if kind == "response" and answer:
                                yield answer
                            return
                        elif kind == "error":
                            finished = True
                            raise SessionError.from_frame(reply)
                except SessionDisconnected:
                    finished = True
                    if parts or attempts >= self.options.retry.max_retries:
                        raise
                    attempts += 1
                    await asyncio.sleep(self.options.retry.delay(attempts))
                except SessionError as exc:
                    if parts or exc.code not in TRANSIENT_CODES or attempts >= self.options.retry.max_retries:
                        raise
                    attempts += 1
                    await asyncio.sleep(exc.retry_after_s or self.options.retry.delay(attempts))
                finally:
                    if sent and not finished:  # the caller stopped reading: cancel, keep the partial answer
                        await self._cancel_and_drain(queue, content, parts)
                    self._current_prompt = None
                    self._routes.pop(frame_id, None)

    async def _cancel_and_drain(self, queue: asyncio.Queue[Any], content: str, parts: list[str]) -> None:
        with contextlib.suppress(SessionDisconnected, SessionError):
            await self._send({"type": "stream_cancel"})
            while True:
                reply = await self._next(queue, min(self.options.reply_timeout_s, 30.0))
                if reply.get("type") == "stream_chunk":
                    parts.append(str(reply.get("content") or ""))
                elif reply.get("type") in ("stream_end", "response", "error"):
                    if reply.get("type") != "error":  # a cancelled generation is billed too
                        self._notify_result(PromptResult.from_wire(reply, "".join(parts)))
                    break
        self.history.add_turn(content, "".join(parts))

    def _notify_result(self, result: PromptResult) -> None:
        """Run ``result_hooks``; a failing hook is logged and never breaks the prompt stream."""
        for hook in list(self.result_hooks):
            try:
                hook(result)
            except Exception:
                log.exception("session %s: result hook %r failed", self.job_id, hook)

    async def cancel(self) -> None:
        """Stop the running generation (its tokens so far are billed; its stream ends with ``cancelled``)."""
        await self._send({"type": "stream_cancel"})

    async def ping(self) -> float:
        """Round trip to the host in seconds."""
        started = time.perf_counter()
        await self._request({"type": "ping"}, expect="pong", timeout=self.options.open_timeout_s)
        return time.perf_counter() - started

    # ------------------------------------------------------------------ ending and moving

    async def end(self) -> SessionClosed:
        """Tell the host the conversation is over: it submits its final proof and closes the socket."""
        if not self.connected:
            await self.connect(resume=self.ack is not None)
        try:
            reply = await self._request({"type": "session_end"}, expect="session_closed",
                                        timeout=self.options.end_timeout_s)
        finally:
            await self._drop_socket()
        return SessionClosed.from_wire(reply)

    async def complete(self, job_id: int | None = None) -> Settlement:
        """Settle a job of this client on chain (``complete_session``): the host is paid, the rest refunded."""
        job = self.job_id if job_id is None else job_id
        await self.sessions.complete_session(job)
        return Settlement.of(await self.sessions.get_session(job))

    async def withdraw_refund(self) -> int:
        """Pull every settled refund of this client; the amount in wei (0 when there is none)."""
        amount = await self.sessions.refunds(self.key.address)
        if amount:
            await self.sessions.withdraw_refund()
        return amount

    async def resume_on(self, url: str, *, job_id: int | None = None, deposit: int | None = None) -> SessionAck:
        """Carry the conversation to the host at ``url`` with ``session_resume`` and the local history.

        The same job is kept when ``url`` serves this job's host. A job is bound to one host on chain, so another
        host needs its own job: ``job_id`` (an ACTIVE job of this client for that host), or a new one created with
        this job's terms and ``deposit`` (default: the same deposit). The previous job stays open: ``end``/``complete``
        it (``complete(job_id)`` with an id from ``previous_jobs``).

        Example:
            >>> await session.resume_on("http://127.0.0.1:9010")                          # doctest: +SKIP
        """
        await self._drop_socket()
        target = await identity_address(url)
        if target == checksum(self.session.host):
            self.url = http_url(url)
            return await self.connect(resume=True)
        old = self.session
        if job_id is None:
            job_id = await create_job(self.sessions, host=target, model=self.model,
                                      deposit=old.deposit if deposit is None else deposit,
                                      price_per_token=old.price_per_token, max_duration=old.max_duration,
                                      proof_interval=old.proof_interval)
        session = await self.sessions.get_session(job_id)
        if checksum(session.host) != target or checksum(session.client) != self.key.address:
            raise ConfigError(f"job {job_id} is not a session of {self.key.address} with host {target}")
        if session.state != SessionState.ACTIVE or session.model_key != model_key(self.model):
            raise ConfigError(f"job {job_id} is not an ACTIVE session for {self.model}")
        self.previous_jobs.append(old.job_id)
        self.session, self.url = session, http_url(url)
        self.receipts = ReceiptGuard(job_id, session.max_tokens)
        self._token, self._expires_at, self.ack = "", 0.0, None
        return await self.connect(resume=True)
