"""Session role of the host node: authentication (signed auth, JWT), prompt replay checks, the server-side
context, generation on this host's ML nodes, billing, checkpoints and proofs — everything except the transport.

The WebSocket route (``ws_sessions``) and the HTTP routes (``sessions_api``) call the same methods, so both paths
bill identically. Per job, one generation runs at a time (a second one gets ``BUSY``) and every change of the
job's SQLite record happens under the job's lock.

Errors are ``SessionError(code)`` with the protocol's codes (docs/protocol.md, WebSocket section).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import orjson
from eth_utils import keccak

from dinfer import crypto, sse
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.contracts.sessions import Session, SessionsClient, SessionState
from dinfer.config import NodeSettings, ProtocolParams
from dinfer.errors import ChainError, CryptoError, DinferError, EngineFailed, NodeError, NotServing, TxReverted
from dinfer.mlnode.metering import chunk_tokens
from dinfer.node.broker import Broker
from dinfer.node.checkpoints import ProofOutcome, ProofSubmitter, proof_due
from dinfer.node.session_context import ContextTooLarge, Tokenizer, estimate_prompt_tokens, trim
from dinfer.node.session_store import JWT_SECRET_KEY, ContextEntry, SessionRecord, SessionStore
from dinfer.ratelimit import RateLimiter

if TYPE_CHECKING:
    from dinfer.node.runtime import NodeRuntime

log = logging.getLogger(__name__)

ROLES = frozenset({"system", "user", "assistant"})


class Code(enum.StrEnum):
    """Error codes of the session protocol."""

    BAD_MESSAGE = "BAD_MESSAGE"
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"
    UNAUTHORIZED = "UNAUTHORIZED"
    NOT_INITIALIZED = "NOT_INITIALIZED"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    MODEL_MISMATCH = "MODEL_MISMATCH"
    PRICE_TOO_LOW = "PRICE_TOO_LOW"
    TOKEN_LIMIT_EXCEEDED = "TOKEN_LIMIT_EXCEEDED"
    RATE_LIMITED = "RATE_LIMITED"
    REPLAY = "REPLAY"
    BUSY = "BUSY"
    ENGINE_UNAVAILABLE = "ENGINE_UNAVAILABLE"
    INTERNAL = "INTERNAL"


class SessionError(DinferError):
    """A refusal of the session protocol; ``code`` is one of ``Code``."""

    def __init__(self, code: Code, message: str, *, retry_after_s: float | None = None) -> None:
        self.code = code
        self.retry_after_s = retry_after_s
        super().__init__(message)


Notifier = Callable[[dict[str, Any]], Awaitable[None]]
"""Sends a host → client message to one attached socket."""
DeltaSink = Callable[[str], Awaitable[None]]
"""Receives each piece of generated text (the WebSocket sends ``stream_chunk``)."""


@dataclass(frozen=True)
class SignedPrompt:
    """The client's signature fields of one WebSocket ``prompt``."""

    message_index: int
    timestamp: int
    nonce: str
    signature: str


@dataclass
class Generation:
    """One generation's result (also what a cancelled one produced)."""

    message_index: int | None
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    cumulative_tokens: int = 0

    @property
    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


@dataclass
class _Job:
    """In-memory companions of one job's SQLite record."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    busy: bool = False
    cancel: asyncio.Event | None = None
    notifiers: set[Notifier] = field(default_factory=set)
    receipt: asyncio.Condition = field(default_factory=asyncio.Condition)


@dataclass(frozen=True)
class Opened:
    """A session opened on a socket (``session_init`` / ``session_resume``)."""

    job_id: int
    client: str
    model: str
    ack: dict[str, Any]


class SessionService:
    """Host-side sessions; one per node (``NodeRuntime.sessions``)."""

    def __init__(self, *, settings: NodeSettings, address: str, chain_id: int, sessions: SessionsClient,
                 registry: RegistryClient, store: SessionStore, broker: Broker, tokenizer: Tokenizer,
                 submitter: ProofSubmitter, jwt_secret: str, ttft_timeout: float | None = None) -> None:
        self.settings = settings
        self.address = crypto.checksum(address)
        self.chain_id = chain_id
        self.sessions = sessions
        self.registry = registry
        self.store = store
        self.broker = broker
        self.tokenizer = tokenizer
        self.submitter = submitter
        self._secret = jwt_secret
        self.ttft_timeout = ttft_timeout or settings.ttft_timeout_s
        self.limiter = RateLimiter(per_minute=settings.session_rate_limit_tokens_per_minute)
        self._jobs: dict[int, _Job] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._params: tuple[float, ProtocolParams] | None = None

    @classmethod
    async def create(cls, **kwargs: Any) -> SessionService:
        """Build the service: its JWT secret (random once per node, kept in SQLite) and the restart clean-up."""
        store: SessionStore = kwargs["store"]
        await store.node_store.kv_set_if_absent(JWT_SECRET_KEY, secrets.token_hex(32))
        secret = await store.node_store.kv_get(JWT_SECRET_KEY)
        assert secret is not None
        service = cls(jwt_secret=secret, **kwargs)
        for record in await store.pending_jobs():
            service._spawn(service._settle_after_restart(record.job_id), f"session-{record.job_id}-settle")
        return service

    async def close(self) -> None:
        """Cancel running generations and background proofs (their state is already in SQLite)."""
        for job in self._jobs.values():
            if job.cancel is not None:
                job.cancel.set()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _job(self, job_id: int) -> _Job:
        return self._jobs.setdefault(job_id, _Job())

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def params(self) -> ProtocolParams:
        """Registry parameters, re-read at most every 30 s."""
        if self._params is None or time.monotonic() - self._params[0] > 30:
            self._params = (time.monotonic(), await self.registry.params())
        return self._params[1]

    # ------------------------------------------------------------ authentication

    def issue_token(self, client: str, job_id: int) -> tuple[str, int]:
        """A JWT for ``client`` on ``job_id`` at this host, and its expiry (unix seconds)."""
        now = int(time.time())
        exp = now + self.settings.session_jwt_ttl_s
        claims = {"sub": client, "job": job_id, "host": self.address, "iat": now, "exp": exp}
        return jwt.encode(claims, self._secret, algorithm="HS256"), exp

    def verify_token(self, token: str, job_id: int | None = None) -> dict[str, Any]:
        """The claims of a valid, unexpired JWT issued by this host (for ``job_id`` when given)."""
        try:
            claims: dict[str, Any] = jwt.decode(token, self._secret, algorithms=["HS256"],
                                                options={"require": ["sub", "job", "host", "iat", "exp"]})
        except jwt.ExpiredSignatureError:
            raise SessionError(Code.UNAUTHORIZED, "session token expired; refresh it or sign a new auth") from None
        except jwt.InvalidTokenError as exc:
            raise SessionError(Code.UNAUTHORIZED, f"invalid session token: {exc}") from None
        if claims["host"] != self.address:
            raise SessionError(Code.UNAUTHORIZED, "session token was issued by another host")
        if job_id is not None and claims["job"] != job_id:
            raise SessionError(Code.UNAUTHORIZED, f"session token is for job {claims['job']}, not {job_id}")
        return claims

    async def _chain_session(self, job_id: int) -> Session:
        try:
            session = await self.sessions.get_session(job_id)
        except TxReverted as exc:
            raise SessionError(Code.SESSION_NOT_FOUND, f"no session job {job_id} on chain ({exc.reason})") from None
        if session.state != SessionState.ACTIVE:
            raise SessionError(Code.SESSION_NOT_FOUND, f"session job {job_id} is {session.state.name}, not ACTIVE")
        if crypto.checksum(session.host) != self.address:
            raise SessionError(Code.SESSION_NOT_FOUND, f"session job {job_id} belongs to host {session.host}")
        return session

    async def authenticate(self, job_id: int, auth: dict[str, Any]) -> Session:
        """Check ``auth`` (``{timestamp, signature}`` or ``{jwt}``) against the session on chain."""
        session = await self._chain_session(job_id)
        if "jwt" in auth:
            claims = self.verify_token(str(auth["jwt"]), job_id)
            signer = str(claims["sub"])
        else:
            timestamp, signature = _int(auth.get("timestamp"), "auth.timestamp"), _sig(auth.get("signature"))
            await self._check_window(timestamp, Code.UNAUTHORIZED)
            try:
                signer = crypto.recover_session_auth(self.chain_id, self.sessions.address, job_id, self.address,
                                                     timestamp, signature)
            except CryptoError as exc:
                raise SessionError(Code.UNAUTHORIZED, f"bad auth signature: {exc}") from None
        if crypto.checksum(signer) != crypto.checksum(session.client):
            raise SessionError(Code.UNAUTHORIZED, f"{signer} is not the client of session job {job_id}")
        return session

    async def _check_window(self, timestamp: int, code: Code) -> None:
        window = (await self.params()).request_window_seconds
        skew = abs(int(time.time()) - timestamp)
        if skew > window:
            raise SessionError(code, f"timestamp is {skew} s away from this host's clock (window {window} s)")

    async def model_of(self, session: Session) -> str:
        """The governance model id whose ``keccak256`` the session stores."""
        for model in await self.registry.get_governance_models():
            if keccak(model.id.encode()) == session.model_key:
                return model.id
        raise SessionError(Code.MODEL_MISMATCH, f"session job {session.job_id} is for a model this chain lost")

    async def issue_for(self, job_id: int, auth: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/sessions/{job}/token``: a JWT for a signed auth (the job's record is created on first use)."""
        session = await self.authenticate(job_id, auth)
        model = await self.model_of(session)
        await self._check_price(job_id, session, model)
        await self._record_for(session, model)
        token, exp = self.issue_token(crypto.checksum(session.client), job_id)
        return {"token": token, "expires_at": exp}

    async def refresh(self, token: str, job_id: int) -> dict[str, Any]:
        claims = self.verify_token(token, job_id)
        new, exp = self.issue_token(str(claims["sub"]), job_id)
        return {"token": new, "expires_at": exp}

    # ------------------------------------------------------------ opening a session

    async def _record_for(self, session: Session, model: str) -> SessionRecord:
        record = await self.store.create_if_absent(session.job_id, crypto.checksum(session.client), self.address,
                                                   model)
        if record.state != "ACTIVE":
            await self.store.set_state(session.job_id, "ACTIVE")
        # The chain is the truth for what was claimed; billing never restarts below it (lost SQLite, other copy).
        if session.cumulative_tokens != record.proven_tokens:
            await self.store.set_proven(session.job_id, session.cumulative_tokens)
        if session.cumulative_tokens > record.cumulative_tokens:
            await self.store.add_tokens(session.job_id, session.cumulative_tokens - record.cumulative_tokens)
        fresh = await self.store.get(session.job_id)
        assert fresh is not None
        return fresh

    async def _check_price(self, job_id: int, session: Session, model: str) -> None:
        """The contract takes the client's price as offered; this host serves no session below the model's
        governance price (its floor)."""
        try:
            floor = (await self.registry.get_governance_model(model)).price_per_token
        except TxReverted:
            raise SessionError(Code.MODEL_MISMATCH, f"{model!r} is not a governance model") from None
        if session.price_per_token < floor:
            raise SessionError(Code.PRICE_TOO_LOW, f"session job {job_id} pays {session.price_per_token} wei/token, "
                                                   f"below this host's floor of {floor} (the governance price of "
                                                   f"{model!r}); open a new session at that price or more")

    async def open(self, job_id: int, model: str, auth: dict[str, Any], context: list[dict[str, Any]] | None, *,
                   resumed: bool) -> Opened:
        """``session_init`` / ``session_resume``: authenticate, check the model, (re)build the context."""
        session = await self.authenticate(job_id, auth)
        if keccak(model.encode()) != session.model_key:
            raise SessionError(Code.MODEL_MISMATCH, f"session job {job_id} is not for model {model!r}")
        await self._check_price(job_id, session, model)
        await self.submitter.settle_pending(job_id)
        record = await self._record_for(session, model)
        job = self._job(job_id)
        async with job.lock:
            if context is not None:
                entries = await self._entries(model, _messages(context))
                try:
                    window = await self.tokenizer.context_window(model)
                except (NodeError, OSError) as exc:
                    raise SessionError(Code.ENGINE_UNAVAILABLE, f"no ML node can serve {model!r}: {exc}") from None
                entries = self._fit(entries, reserve=1, window=window)
                await self.store.set_context(job_id, entries)
            record = await self.store.get(job_id) or record
        client = crypto.checksum(session.client)
        token, exp = self.issue_token(client, job_id)
        ack = {"job_id": job_id, "token": token, "expires_at": exp, "model": model,
               "cumulative_tokens": record.cumulative_tokens,
               "checkpoint_tokens": (await self.params()).checkpoint_tokens,
               "context_tokens": record.context_tokens, "last_message_index": record.last_message_index,
               "max_tokens": max(0, session.max_tokens - max(record.cumulative_tokens, session.cumulative_tokens)),
               "resumed": resumed}
        return Opened(job_id, client, model, ack)

    def attach(self, job_id: int, notifier: Notifier) -> None:
        self._job(job_id).notifiers.add(notifier)

    def detach(self, job_id: int, notifier: Notifier) -> None:
        """A socket closed: cancel its generation; with no socket left, claim what is claimable."""
        job = self._job(job_id)
        job.notifiers.discard(notifier)
        if not job.notifiers:
            if job.cancel is not None:
                job.cancel.set()
            self._spawn(self._proof(job_id, final=True), f"session-{job_id}-close-proof")

    # ------------------------------------------------------------ prompts

    async def _entries(self, model: str, messages: list[dict[str, str]]) -> list[ContextEntry]:
        try:
            counts = [await self.tokenizer.count(model, m["content"]) for m in messages]
        except (NodeError, OSError) as exc:
            raise SessionError(Code.ENGINE_UNAVAILABLE, f"cannot count tokens: {exc}") from None
        return [ContextEntry(m["role"], m["content"], n) for m, n in zip(messages, counts, strict=True)]

    def _fit(self, entries: list[ContextEntry], *, reserve: int, window: int | None = None) -> list[ContextEntry]:
        try:
            return trim(entries, window=window or self.settings.session_context_window_default, reserve=reserve,
                        max_messages=self.settings.session_max_context_messages)
        except ContextTooLarge as exc:
            raise SessionError(Code.BAD_MESSAGE, str(exc)) from None

    async def check_prompt(self, job_id: int, client: str, content: str, signed: SignedPrompt) -> None:
        """Replay checks of a signed prompt that do not consume anything (timestamp, signature, index)."""
        await self._check_window(signed.timestamp, Code.REPLAY)
        nonce = _nonce(signed.nonce)
        try:
            signer = crypto.recover_prompt_signer(job_id, signed.message_index, signed.timestamp, nonce, content,
                                                  _sig(signed.signature))
        except CryptoError as exc:
            raise SessionError(Code.UNAUTHORIZED, f"bad prompt signature: {exc}") from None
        if crypto.checksum(signer) != crypto.checksum(client):
            raise SessionError(Code.UNAUTHORIZED, f"prompt signed by {signer}, not the session's client")
        record = await self.store.get(job_id)
        if record is not None and signed.message_index <= record.last_message_index:
            raise SessionError(Code.REPLAY, f"message_index {signed.message_index} is not above the last accepted "
                                            f"one ({record.last_message_index})")

    async def generate(self, job_id: int, client: str, *, content: str | None = None,
                       messages: list[dict[str, Any]] | None = None, signed: SignedPrompt | None = None,
                       max_tokens: int | None = None, temperature: float | None = None,
                       on_delta: DeltaSink | None = None) -> Generation:
        """Run one prompt of the session: checks, context, generation, billing, checkpoint.

        ``content`` is appended to the server-side context (``messages`` replaces it). ``signed`` is required on
        the WebSocket and absent on HTTP (JWT only). ``cancel(job_id)`` stops it; the tokens produced are billed.
        """
        job = self._job(job_id)
        if job.busy:
            raise SessionError(Code.BUSY, f"a generation is already running on session job {job_id}")
        job.busy, job.cancel = True, asyncio.Event()  # a cancel during the checks is honoured too
        try:
            return await self._generate(job_id, job, client, content, messages, signed, max_tokens, temperature,
                                        on_delta)
        finally:
            job.busy, job.cancel = False, None

    def cancel(self, job_id: int) -> bool:
        """Stop the job's running generation; False when none runs."""
        job = self._jobs.get(job_id)
        if job is None or job.cancel is None:
            return False
        job.cancel.set()
        return True

    async def _generate(self, job_id: int, job: _Job, client: str, content: str | None,
                        messages: list[dict[str, Any]] | None, signed: SignedPrompt | None, max_tokens: int | None,
                        temperature: float | None, on_delta: DeltaSink | None) -> Generation:
        if signed is not None:
            assert content is not None
            await self.check_prompt(job_id, client, content, signed)
        session = await self._chain_session(job_id)
        record = await self.store.get(job_id)
        if record is None:
            raise SessionError(Code.NOT_INITIALIZED, f"session job {job_id} was not opened on this host")
        model = record.model
        limit = min(max_tokens or self.settings.max_tokens_default, self.settings.max_tokens_limit)
        try:
            window = await self.tokenizer.context_window(model)
        except (NodeError, OSError) as exc:
            raise SessionError(Code.ENGINE_UNAVAILABLE, f"no ML node can serve {model!r}: {exc}") from None
        if messages is not None:
            entries = await self._entries(model, _messages(messages))
        else:
            entries = record.context + await self._entries(model, [{"role": "user", "content": content or ""}])
        if not entries:
            raise SessionError(Code.BAD_MESSAGE, "nothing to answer: send content or messages")
        remaining = session.max_tokens - max(record.cumulative_tokens, session.cumulative_tokens)
        entries = self._fit(entries, reserve=min(limit, max(1, remaining)), window=window)
        prompt_est = estimate_prompt_tokens(entries)
        if remaining - prompt_est < 1:
            raise SessionError(Code.TOKEN_LIMIT_EXCEEDED, f"the deposit of session job {job_id} covers {remaining} "
                               f"more tokens; this prompt needs about {prompt_est} plus the answer")
        limit = min(limit, remaining - prompt_est)
        wait = self.limiter.acquire(client, cost=min(prompt_est, self.limiter.capacity))
        if wait > 0:
            raise SessionError(Code.RATE_LIMITED, f"token rate limit of {client} reached; retry in {wait:.1f} s",
                               retry_after_s=round(wait, 3))
        async with job.lock:
            if signed is not None:
                if not await self.store.use_nonce(job_id, signed.nonce):
                    raise SessionError(Code.REPLAY, f"nonce {signed.nonce} was already used on job {job_id}")
                if not await self.store.advance_message_index(job_id, signed.message_index):
                    raise SessionError(Code.REPLAY, f"message_index {signed.message_index} is not above the last "
                                                    "accepted one")
        assert job.cancel is not None
        gen = Generation(signed.message_index if signed else None)
        body = {"model": model, "messages": [e.as_message() for e in entries], "max_tokens": limit, "stream": True,
                "stream_options": {"include_usage": True}}
        if temperature is not None:
            body["temperature"] = temperature
        pump = asyncio.create_task(self._pump(model, orjson.dumps(body), gen, on_delta))
        stopper = asyncio.create_task(job.cancel.wait())
        try:
            await asyncio.wait({pump, stopper}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pump.cancel()
            stopper.cancel()
            await asyncio.shield(self._finish_cancelled(job_id, job, client, model, entries, gen, pump))
            raise
        stopper.cancel()
        if not pump.done():  # stream_cancel / socket closed: close the ML node's stream, bill what came
            await self._finish_cancelled(job_id, job, client, model, entries, gen, pump)
            return gen
        exc = pump.exception()
        if exc is not None and gen.completion_tokens == 0:
            raise _engine_error(exc)
        if exc is not None:
            log.warning("session %d: generation failed after %d tokens: %r", job_id, gen.completion_tokens, exc)
            gen.finish_reason = "error"
        if gen.prompt_tokens == 0:  # the stream ended without usage (error after tokens): count it exactly
            gen.prompt_tokens = await self._prompt_tokens(model, entries, prompt_est)
        await self._bill(job_id, job, client, entries, gen)
        return gen

    async def _pump(self, model: str, body: bytes, gen: Generation, on_delta: DeltaSink | None) -> None:
        """Stream one chat completion from the least busy ML node into ``gen`` (and ``on_delta``)."""
        async with self.broker.dispatch(model) as node, node.client.open_inference(
                "chat/completions", body, ttft_timeout=self.ttft_timeout) as resp:
            if resp.status >= 400:
                detail = (await resp.read())[:300].decode(errors="replace")
                raise EngineFailed(f"ML node {node.node_id} answered {resp.status}: {detail}",
                                   status=resp.status)
            async for event in sse.events(resp.chunks()):
                data = event.data
                if not isinstance(data, dict):
                    continue
                if "error" in data:
                    raise EngineFailed(f"ML node {node.node_id}: {data['error']}")
                if data.get("usage"):
                    gen.prompt_tokens = int(data["usage"].get("prompt_tokens", 0))
                    gen.completion_tokens = int(data["usage"].get("completion_tokens", gen.completion_tokens))
                    continue
                for choice in data.get("choices") or []:
                    piece = str((choice.get("delta") or {}).get("content") or "")
                    gen.completion_tokens += chunk_tokens("chat", data)
                    gen.finish_reason = choice.get("finish_reason") or gen.finish_reason
                    if piece:
                        gen.text += piece
                        if on_delta is not None:
                            await on_delta(piece)

    async def _finish_cancelled(self, job_id: int, job: _Job, client: str, model: str, entries: list[ContextEntry],
                                gen: Generation, pump: asyncio.Task[None]) -> None:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump  # leaves the async-with blocks: the upstream response is closed, the broker slot freed
        gen.finish_reason = "cancelled"
        if gen.completion_tokens == 0 and not gen.text:
            gen.prompt_tokens = 0  # nothing generated, nothing billed; the prompt leaves the context too
            record = await self.store.get(job_id)
            gen.cumulative_tokens = record.cumulative_tokens if record else 0
            return
        gen.prompt_tokens = await self._prompt_tokens(model, entries, estimate_prompt_tokens(entries))
        await self._bill(job_id, job, client, entries, gen)

    async def _prompt_tokens(self, model: str, entries: list[ContextEntry], fallback: int) -> int:
        try:
            return await self.tokenizer.prompt_tokens(model, [e.as_message() for e in entries])
        except (NodeError, OSError) as exc:
            log.warning("prompt token count unavailable (%s); billing the estimate %d", exc, fallback)
            return fallback

    async def _bill(self, job_id: int, job: _Job, client: str | None, entries: list[ContextEntry],
                    gen: Generation) -> None:
        """Context + billing + checkpoint of a finished (or cancelled) generation."""
        async with job.lock:
            record = await self.store.get(job_id)
            assert record is not None
            context = list(entries)
            if gen.text:
                context.append(ContextEntry("assistant", gen.text, gen.completion_tokens))
            await self.store.set_context(job_id, context)
            billed = gen.prompt_tokens + gen.completion_tokens
            old = record.cumulative_tokens
            gen.cumulative_tokens = await self.store.add_tokens(job_id, billed) if billed else old
        if client is not None and gen.completion_tokens:
            self.limiter.charge(client, gen.completion_tokens)
        if billed:
            await self._checkpoint(job_id, job, old, gen.cumulative_tokens)

    async def _checkpoint(self, job_id: int, job: _Job, old: int, new: int) -> None:
        step = (await self.params()).checkpoint_tokens
        crossed = new // step - old // step
        if crossed <= 0:
            return
        await self.store.add_checkpoint(job_id, crossed)  # one per multiple passed, so proofs keep their pace
        message = {"type": "receipt_request", "job_id": job_id, "cumulative_tokens": new}
        for notify in list(job.notifiers):
            with contextlib.suppress(Exception):  # a closing socket must not fail the billing path
                await notify(message)
        record = await self.store.get(job_id)
        if record is not None and proof_due(record, self.settings.session_proof_checkpoints):
            self._spawn(self._proof(job_id, final=False, wait_for=new), f"session-{job_id}-proof")

    # ------------------------------------------------------------ receipts, proofs, end

    async def receipt(self, job_id: int, client: str, cumulative_tokens: int, signature: str) -> None:
        """Store a client receipt (verified like the contract will) and wake a proof waiting for it."""
        sig = _sig(signature)
        try:
            signer = crypto.recover_receipt(self.chain_id, self.sessions.address, job_id, cumulative_tokens, sig)
        except CryptoError as exc:
            raise SessionError(Code.UNAUTHORIZED, f"bad receipt signature: {exc}") from None
        if crypto.checksum(signer) != crypto.checksum(client):
            raise SessionError(Code.UNAUTHORIZED, f"receipt signed by {signer}, not the session's client")
        record = await self.store.get(job_id)
        if record is None or cumulative_tokens > record.cumulative_tokens:
            raise SessionError(Code.BAD_MESSAGE, f"receipt for {cumulative_tokens} tokens is above the "
                                                 f"{record.cumulative_tokens if record else 0} billed")
        await self.store.set_receipt(job_id, cumulative_tokens, "0x" + sig.hex())
        job = self._job(job_id)
        async with job.receipt:
            job.receipt.notify_all()

    async def _wait_receipt(self, job_id: int, tokens: int) -> None:
        job = self._job(job_id)

        async def covered() -> bool:
            record = await self.store.get(job_id)
            return record is not None and record.receipt_tokens >= tokens

        deadline = time.monotonic() + self.settings.session_receipt_wait_s
        while not await covered():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            async with job.receipt:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(job.receipt.wait(), left)

    async def _proof(self, job_id: int, *, final: bool, wait_for: int | None = None) -> ProofOutcome | None:
        try:
            if wait_for is not None:
                await self._wait_receipt(job_id, wait_for)
            return await self.submitter.submit(job_id, checkpoint=not final)
        except (ChainError, DinferError) as exc:
            log.warning("session %d: proof failed: %s", job_id, exc)
            return None

    async def _settle_after_restart(self, job_id: int) -> None:
        with contextlib.suppress(ChainError):
            await self.submitter.settle_pending(job_id)

    async def end(self, job_id: int) -> dict[str, Any]:
        """``session_end``: final proof, then ``session_closed``."""
        self.cancel(job_id)
        outcome = await self._proof(job_id, final=True)
        await self.store.set_state(job_id, "ENDED")
        record = await self.store.get(job_id)
        assert record is not None
        proven = outcome.proven_tokens if outcome is not None else record.proven_tokens
        return {"job_id": job_id, "cumulative_tokens": record.cumulative_tokens, "proven_tokens": proven}

    async def status(self, job_id: int) -> dict[str, Any]:
        """``GET /v1/sessions/{job}``."""
        record = await self.store.get(job_id)
        if record is None:
            raise SessionError(Code.SESSION_NOT_FOUND, f"session job {job_id} is unknown to this host")
        return {"job_id": job_id, "client": record.client, "host": record.host, "model": record.model,
                "cumulative_tokens": record.cumulative_tokens, "proven_tokens": record.proven_tokens,
                "last_receipt_tokens": record.receipt_tokens, "checkpoints": record.checkpoints,
                "context_messages": len(record.context), "context_tokens": record.context_tokens,
                "state": record.state, "proofs": await self.store.proofs(job_id)}


# ---------------------------------------------------------------- input helpers


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SessionError(Code.BAD_MESSAGE, f"{name} must be a non-negative integer")
    return value


def _sig(value: Any) -> bytes:
    if not isinstance(value, str):
        raise SessionError(Code.BAD_MESSAGE, "signature must be a 0x-prefixed hex string")
    try:
        raw = bytes.fromhex(value[2:] if value.startswith("0x") else value)
    except ValueError:
        raise SessionError(Code.BAD_MESSAGE, "signature is not hex") from None
    if len(raw) != 65:
        raise SessionError(Code.UNAUTHORIZED, f"signature must be 65 bytes, got {len(raw)}")
    return raw


def _nonce(value: str) -> bytes:
    try:
        raw = bytes.fromhex(value[2:] if value.startswith("0x") else "")
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise SessionError(Code.BAD_MESSAGE, "nonce must be 0x + 64 hex characters (32 random bytes)")
    return raw


def _messages(items: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    for i, item in enumerate(items):
        role, content = item.get("role"), item.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise SessionError(Code.BAD_MESSAGE, f"context[{i}] must be {{role: system|user|assistant, content: str}}")
        out.append({"role": str(role), "content": content})
    return out


def _engine_error(exc: BaseException) -> SessionError:
    if isinstance(exc, SessionError):
        return exc
    if isinstance(exc, EngineFailed) and 400 <= exc.status < 500 and exc.status != 429:
        return SessionError(Code.BAD_MESSAGE, f"the engine refused the prompt: {exc}")
    if isinstance(exc, NodeError | NotServing | OSError | httpx.HTTPError):
        return SessionError(Code.ENGINE_UNAVAILABLE, f"no ML node could serve the prompt: {exc}")
    log.error("session generation failed", exc_info=exc)
    return SessionError(Code.INTERNAL, "internal error during generation; see the host's log")


async def start_sessions(rt: NodeRuntime) -> SessionService:
    """The runtime's session role: Sessions bound from the deployment, proofs through the runtime's TxSender."""
    from dinfer.chain.deploy import bind
    from dinfer.node.session_context import MLNodeTokenizer

    node = rt.settings.node
    sessions = SessionsClient(bind(rt.w3, "Sessions", rt.deployment.address("Sessions")), rt.sender)
    store = await SessionStore.open(rt.store)

    async def block_time() -> int:
        return int((await rt.w3.eth.get_block("latest"))["timestamp"])

    async def has_pending_tx() -> bool:
        pending = await rt.w3.eth.get_transaction_count(rt.keypair.address, "pending")
        latest = await rt.w3.eth.get_transaction_count(rt.keypair.address, "latest")
        return int(pending) > int(latest)

    submitter = ProofSubmitter(sessions, rt.registry, store, block_time=block_time, has_pending_tx=has_pending_tx)
    tokenizer = MLNodeTokenizer(rt.broker, default_window=node.session_context_window_default)
    return await SessionService.create(settings=node, address=rt.keypair.address, chain_id=rt.deployment.chain_id,
                                       sessions=sessions, registry=rt.registry, store=store, broker=rt.broker,
                                       tokenizer=tokenizer, submitter=submitter)
