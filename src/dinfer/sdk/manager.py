"""``AsyncInferenceManager``: sessions opened by criteria, every message persisted, conversations that survive hosts.

A ``ManagedSession`` is one conversation (in the conversation store) served by a chain of session jobs, one per
host it used. The manager:

- opens the first job on a given host, or on the best host discovery + ``HostSelector`` find for ``criteria``
  (trying the next best when one cannot be reached);
- stores the user prompt *before* sending it and the answer *after* ``stream_end`` (meta: job id, host, tokens);
- on ``switch_host`` ends the current job, opens a job with the new host and ``session_resume``s it with the full
  history read back from the conversation store;
- when the serving host dies (the session client's own reconnects exhausted), abandons its job, switches to the
  next best host (failed hosts excluded) and re-sends the prompt that was in flight, once per switch. A prompt the
  dead host answered before dying is never re-sent; the dead job is paid only for what its proofs cover (the client
  settles it in ``close``), the new job starts at zero.

Errors::

    DinferError
    ├── NoSuitableHost              (dinfer.sdk.selection) no host meets the criteria
    ├── SessionClosedError          the managed session was closed
    └── HostsExhausted(attempts)    every host tried failed; ``attempts`` names each and why
        ├── SessionOpenFailed
        └── SessionSwitchFailed

Example:
    >>> manager = AsyncInferenceManager(client)                                           # doctest: +SKIP
    >>> session = await manager.open_session(MODEL, deposit=10**15, criteria={"strategy": "lowest_price"})
    >>> print((await manager.send_prompt(session, "Hello", stream=print)).content)
    >>> await manager.close(session)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from dinfer.chain.contracts.sessions import SessionState
from dinfer.crypto import checksum
from dinfer.errors import DinferError, NodeUnavailable
from dinfer.sdk._client_async import AsyncDinferClient, BadHostAddress
from dinfer.sdk._session_chain import Settlement
from dinfer.sdk._session_wire import Conversation as WireConversation
from dinfer.sdk._session_wire import SessionError, Usage
from dinfer.sdk.billing import SessionBilling, TokenUsage
from dinfer.sdk.conversations import AsyncConversationStore, LocalBackend
from dinfer.sdk.conversations.records import Conversation
from dinfer.sdk.discovery import RegistrySource, UnifiedDiscovery
from dinfer.sdk.hosts import HostRecord
from dinfer.sdk.selection import HostSelector, NoSuitableHost, Requirements, Strategy
from dinfer.sdk.sessions import SessionClient

__all__ = [
    "AsyncInferenceManager", "Criteria", "HostAttempt", "HostsExhausted", "JobSegment", "JobState", "JobUsage",
    "ManagedPrompt", "ManagedResult", "ManagedSession", "ManagedSettlement", "ManagedUsage", "ManagerOptions",
    "SessionClosedError", "SessionOpenFailed", "SessionSwitchFailed",
]

log = logging.getLogger(__name__)

HOST_DOWN: tuple[type[BaseException], ...] = (NodeUnavailable, OSError, TimeoutError)
"""What a dead or unreachable host looks like (``SessionDisconnected``/``HostUnreachable`` are ``NodeUnavailable``)."""
NEXT_HOST: tuple[type[BaseException], ...] = (*HOST_DOWN, BadHostAddress, SessionError)
"""Refusals after which opening a job is tried on the next host (a stale registry entry, a host-side refusal)."""

StreamCallback = Callable[[str], Any]
"""Called with each text chunk; may return an awaitable (awaited before the next chunk)."""


# ------------------------------------------------------------------ errors


@dataclass(frozen=True)
class HostAttempt:
    """One host the manager tried (or lost) and why it failed."""

    address: str
    url: str
    reason: str


class SessionClosedError(DinferError):
    """The managed session was closed; open a new one (``conversation_id=`` continues its conversation)."""


class HostsExhausted(DinferError):
    """Every host tried failed; ``attempts`` lists each with its reason."""

    def __init__(self, what: str, attempts: Sequence[HostAttempt], detail: str = "") -> None:
        self.attempts = list(attempts)
        tried = "; ".join(f"{a.address or '?'} at {a.url}: {a.reason}" for a in self.attempts) or "no host was tried"
        super().__init__(f"{what}: {tried}" + (f" ({detail})" if detail else ""))


class SessionOpenFailed(HostsExhausted):
    """No host could open the session."""


class SessionSwitchFailed(HostsExhausted):
    """The conversation could not be moved to another host; the conversation store still holds every message."""


# ------------------------------------------------------------------ records


@dataclass(frozen=True)
class Criteria:
    """How to pick a host: a ``Strategy`` plus ``Requirements`` fields (``max_price``, ``region``, ``min_stake``,
    ``hardware``, ``min_reliability``)."""

    strategy: str = Strategy.COMPOSITE
    requirements: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Strategy.parse(self.strategy)
        if "model" in self.requirements:
            raise ValueError("criteria take no model: the session's model is used")
        try:
            Requirements(model="m", **self.requirements)
        except TypeError as exc:
            raise ValueError(f"bad criteria {self.requirements}: {exc}") from None

    @classmethod
    def of(cls, value: Criteria | dict[str, Any] | str | None) -> Criteria:
        """``None`` (composite), a strategy name, a dict ``{"strategy": ..., **requirements}`` or a ``Criteria``."""
        if value is None:
            return cls()
        if isinstance(value, Criteria):
            return value
        if isinstance(value, str):
            return cls(strategy=value)
        if isinstance(value, dict):
            rest = dict(value)
            return cls(strategy=rest.pop("strategy", Strategy.COMPOSITE), requirements=rest)
        raise TypeError(f"criteria must be a Criteria, a dict or a strategy name, got {type(value).__name__}")


@dataclass(frozen=True)
class ManagerOptions:
    """How the manager picks hosts and recovers (one object instead of many keyword arguments)."""

    max_hosts_per_switch: int = 5
    """Hosts tried when opening or switching before giving up (``SessionOpenFailed``/``SessionSwitchFailed``)."""
    max_switches_per_prompt: int = 2
    """Automatic switches while one prompt is in flight (each re-sends it once to the new host)."""
    auto_switch: bool = True
    """Move to the next best host when the serving one dies; off: the connection error is raised."""


class JobState(StrEnum):
    ACTIVE = "active"
    """Serving the conversation now."""
    ENDED = "ended"
    """Ended with ``session_end``: the host proved its tokens; settled in ``close``."""
    ABANDONED = "abandoned"
    """The host died or could not be reached; paid only what its proofs cover when settled."""


@dataclass
class JobSegment:
    """One session job of a managed session: the host that served part of the conversation."""

    job_id: int
    host: str
    url: str
    client: SessionClient
    billing: SessionBilling
    state: JobState = JobState.ACTIVE
    leased: bool = False
    """Handed out by the selector (released when the job stops serving)."""
    reason: str = ""
    started: float = field(default_factory=time.monotonic)


@dataclass
class ManagedSession:
    """A conversation (``conversation_id``) served by one session job at a time (``jobs[-1]`` the newest)."""

    conversation_id: str
    model: str
    deposit: int
    price_per_token: int | None
    criteria: Criteria
    jobs: list[JobSegment] = field(default_factory=list)
    failed_hosts: dict[str, str] = field(default_factory=dict)
    """Address → why it failed this session (excluded from later automatic picks)."""
    closed: bool = False
    last_result: ManagedResult | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def current(self) -> JobSegment:
        return self.jobs[-1]

    @property
    def job_id(self) -> int:
        return self.current.job_id

    @property
    def host(self) -> str:
        return self.current.host

    @property
    def url(self) -> str:
        return self.current.url

    @property
    def job_ids(self) -> list[int]:
        return [j.job_id for j in self.jobs]


@dataclass(frozen=True)
class ManagedResult:
    """One answered prompt: the text, its usage on the job that answered it, and where it ran."""

    content: str
    usage: Usage
    cumulative_tokens: int
    finish_reason: str
    job_id: int
    host: str
    url: str
    resent: bool = False
    """The prompt was re-sent to a new host after the serving one died."""
    discarded: str = ""
    """Text a dead host streamed before dying (already passed to the stream; not stored)."""


@dataclass(frozen=True)
class JobUsage:
    """One job's figures: what the client was served (``used``) and what the chain proved (``proven_tokens``)."""

    job_id: int
    host: str
    state: JobState
    chain_state: SessionState
    used: TokenUsage
    proven_tokens: int
    price_per_token: int

    @property
    def cost(self) -> int:
        """What settling pays the host side (proven tokens × price, treasury fee included), wei."""
        return self.proven_tokens * self.price_per_token


@dataclass(frozen=True)
class ManagedUsage:
    """Usage summed over every job of a managed session."""

    jobs: list[JobUsage]

    @property
    def prompt_tokens(self) -> int:
        return sum(j.used.prompt_tokens for j in self.jobs)

    @property
    def completion_tokens(self) -> int:
        return sum(j.used.completion_tokens for j in self.jobs)

    @property
    def total_tokens(self) -> int:
        return sum(j.used.total_tokens for j in self.jobs)

    @property
    def prompts(self) -> int:
        return sum(j.used.prompts for j in self.jobs)

    @property
    def proven_tokens(self) -> int:
        return sum(j.proven_tokens for j in self.jobs)

    @property
    def cost(self) -> int:
        return sum(j.cost for j in self.jobs)


@dataclass(frozen=True)
class ManagedSettlement:
    """``close``: every job's settlement and the refunds withdrawn (wei)."""

    settlements: list[Settlement]
    withdrawn: int


class ManagedPrompt:
    """One prompt's answer: iterate for text chunks (a switch continues the stream with the new host's text), or
    ``await`` it for the ``ManagedResult``."""

    def __init__(self, chunks: AsyncIterator[str]) -> None:
        self._chunks = chunks
        self.result: ManagedResult | None = None

    def __aiter__(self) -> ManagedPrompt:
        return self

    async def __anext__(self) -> str:
        return await self._chunks.__anext__()

    async def collect(self) -> ManagedResult:
        async for _ in self:
            pass
        assert self.result is not None
        return self.result

    async def aclose(self) -> None:
        """Stop early: the host cancels, and the partial answer is stored (meta ``cancelled``)."""
        await self._chunks.aclose()  # type: ignore[attr-defined]

    def __await__(self) -> Generator[Any, None, ManagedResult]:
        return self.collect().__await__()


# ------------------------------------------------------------------ the manager


class AsyncInferenceManager:
    """Sessions by criteria with persisted conversations and host switching, over one ``AsyncDinferClient``.

    ``discovery`` defaults to the Registry source only; ``selector`` to a ``HostSelector`` with its default stats
    file; ``conversations`` to an ``AsyncConversationStore`` in ``conversations_dir`` (default
    ``~/.dinfer/conversations``). What the manager builds it also closes (``aclose``).

    Example:
        >>> manager = AsyncInferenceManager(client, conversations_dir=tmp_path)        # doctest: +SKIP
        >>> session = await manager.open_session(MODEL, deposit=10**15, criteria="lowest_price")
    """

    def __init__(self, client: AsyncDinferClient, *, discovery: UnifiedDiscovery | None = None,
                 selector: HostSelector | None = None, conversations: AsyncConversationStore | None = None,
                 conversations_dir: str | Path | None = None, options: ManagerOptions | None = None) -> None:
        if conversations is not None and conversations_dir is not None:
            raise ValueError("pass conversations or conversations_dir, not both")
        self.client = client
        self.options = options or ManagerOptions()
        self._owned: list[Any] = []
        if discovery is None:
            discovery = UnifiedDiscovery([RegistrySource(client.registry)])
            self._owned.append(discovery)
        if selector is None:
            selector = HostSelector()
            self._owned.append(selector)
        if conversations is None:
            backend = LocalBackend.default_for(client.address, conversations_dir) if conversations_dir is not None \
                else None
            conversations = AsyncConversationStore(client.key.private_key, backend)
            self._owned.append(conversations)
        self.discovery, self.selector, self.conversations = discovery, selector, conversations

    async def aclose(self) -> None:
        """Close what the manager built (discovery, selector, store); the client and given parts stay open."""
        for part in self._owned:
            with contextlib.suppress(Exception):
                await (part.close() if isinstance(part, UnifiedDiscovery) else part.aclose())
        self._owned.clear()

    async def __aenter__(self) -> AsyncInferenceManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---------------------------------------------------------------- opening

    async def open_session(self, model: str, deposit: int, host: str | HostRecord | None = None,
                           criteria: Criteria | dict[str, Any] | str | None = None,
                           price_per_token: int | None = None, *,
                           conversation_id: str | None = None) -> ManagedSession:
        """Open a session job on ``host`` (URL, address or ``HostRecord``) or on the best host for ``criteria``.

        ``price_per_token`` defaults to the host's advertised price, else the governance price. With
        ``conversation_id`` the stored conversation continues (the new job is resumed with its full history).

        Example:
            >>> session = await manager.open_session(MODEL, 10**15, criteria={"strategy": "lowest_price",
            ...                                                               "region": "eu"})  # doctest: +SKIP
        """
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty model id, got {model!r}")
        if not isinstance(deposit, int) or deposit <= 0:
            raise ValueError(f"deposit must be a positive amount of wei, got {deposit!r}")
        wanted = Criteria.of(criteria)
        history: list[dict[str, str]] = []
        if conversation_id is not None:
            stored = await self.conversations.get_conversation(conversation_id)
            if stored.model != model:
                raise ValueError(f"conversation {conversation_id} is for model {stored.model!r}, not {model!r}")
            history = stored.context()
        session = ManagedSession(conversation_id or "", model, deposit, price_per_token, wanted)
        what = f"cannot open a session for {model}"
        if host is not None:
            try:
                session.jobs.append(await self._start_job(session, host, history, leased=False))
            except NEXT_HOST as exc:
                raise SessionOpenFailed(what, [_attempt(host, exc)]) from exc
        else:
            session.jobs.append(await self._pick_and_start(session, history, [], SessionOpenFailed, what))
        if not session.conversation_id:  # created once a host took the job: a refused open leaves nothing behind
            session.conversation_id = await self.conversations.create_conversation(
                model, {"client": self.client.address, "job_id": session.job_id, "host": session.host})
        return session

    async def _start_job(self, session: ManagedSession, host: str | HostRecord, history: list[dict[str, str]], *,
                         leased: bool) -> JobSegment:
        """A new job with ``host`` (resumed with ``history`` when there is one)."""
        record = host if isinstance(host, HostRecord) else None
        target = record.url if record is not None else host
        assert isinstance(target, str)
        price = session.price_per_token
        if price is None and record is not None:
            price = record.price(session.model)
        client = await self.client.open_session(target, session.model, session.deposit, price)
        try:
            if history:
                client.history = WireConversation([dict(m) for m in history])
                await client.connect(resume=True)
        except (*HOST_DOWN, SessionError):
            await client.close()
            with contextlib.suppress(DinferError):
                await self.client.sessions.complete_session(client.job_id)  # nothing served: all of it refunds
            raise
        return JobSegment(client.job_id, checksum(client.session.host), client.url, client,
                          self.client.billing(client), leased=leased)

    async def _pick_and_start(self, session: ManagedSession, history: list[dict[str, str]],
                              attempts: list[HostAttempt], error: type[HostsExhausted], what: str,
                              exclude: set[str] | None = None) -> JobSegment:
        """The best host left for the session's criteria, tried in order until one opens a job."""
        exclude = set(exclude or ()) | set(session.failed_hosts)
        governance = await self.client.governance_price(session.model)
        tries = 0
        while tries < self.options.max_hosts_per_switch:
            hosts = [h for h in await self.discovery.discover_all_hosts(session.model) if h.address not in exclude]
            try:
                host = await self.selector.select_optimal_host(hosts, session.model, session.criteria.strategy,
                                                               governance_price=governance,
                                                               **session.criteria.requirements)
            except NoSuitableHost as exc:
                if not attempts and error is SessionOpenFailed:
                    raise
                raise error(what, attempts, f"no other suitable host: {exc}") from exc
            tries += 1
            started = time.monotonic()
            try:
                return await self._start_job(session, host, history, leased=True)
            except NEXT_HOST as exc:
                self.selector.release(host)
                self.selector.record_outcome(host, False, time.monotonic() - started)
                attempts.append(_attempt(host, exc))
                session.failed_hosts[host.address] = attempts[-1].reason
                exclude.add(host.address)
        raise error(what, attempts, f"gave up after {tries} hosts (ManagerOptions.max_hosts_per_switch)")

    # ---------------------------------------------------------------- prompts

    def send_prompt(self, session: ManagedSession, prompt: str, *, stream: StreamCallback | None = None,
                    max_tokens: int | None = None, temperature: float | None = None) -> ManagedPrompt:
        """Send only the new prompt; iterate the result for chunks, ``await`` it for the ``ManagedResult``.

        ``stream`` is called with every text chunk (it may be a coroutine function).

        Example:
            >>> result = await manager.send_prompt(session, "And in French?", stream=print)   # doctest: +SKIP
        """
        if not isinstance(prompt, str) or not prompt:
            raise ValueError("prompt must be a non-empty string")
        sink = ManagedPrompt(self._generate(session, prompt, stream, max_tokens, temperature, lambda: sink))
        return sink

    async def ask(self, session: ManagedSession, prompt: str, **kwargs: Any) -> ManagedResult:
        """``send_prompt`` read to the end."""
        return await self.send_prompt(session, prompt, **kwargs).collect()

    async def _generate(self, session: ManagedSession, prompt: str, callback: StreamCallback | None,
                        max_tokens: int | None, temperature: float | None,
                        sink: Callable[[], ManagedPrompt]) -> AsyncIterator[str]:
        async with session.lock:
            self._check_open(session)
            if session.current.state is not JobState.ACTIVE:  # an earlier switch failed: try again first
                await self._switch(session, None, lost=None)
            current = session.current
            asked = await self.conversations.append(session.conversation_id, "user", prompt,
                                                    {"job_id": current.job_id, "host": current.host})
            switches, discarded = 0, ""
            while True:
                segment = session.current
                parts: list[str] = []
                stream = segment.client.send_prompt(prompt, max_tokens=max_tokens, temperature=temperature)
                done = False
                try:
                    async for text in stream:
                        parts.append(text)
                        if callback is not None:
                            outcome = callback(text)
                            if inspect.isawaitable(outcome):
                                await outcome
                        yield text
                    done = True
                except HOST_DOWN as exc:
                    done = True
                    if not self.options.auto_switch or switches >= self.options.max_switches_per_prompt:
                        raise
                    switches += 1
                    discarded += "".join(parts)
                    log.info("session %s: host %s died mid-prompt (%s); switching", session.conversation_id,
                             segment.host, exc)
                    await self._switch(session, None, lost=(segment, exc), skip_blob=asked.blob_id)
                    continue
                finally:
                    if not done:  # the caller stopped reading: the client cancels; keep the partial answer
                        await stream.aclose()
                        await self._store_partial(session, segment)
                assert stream.result is not None
                result = stream.result
                usage = result.usage
                await self.conversations.append(session.conversation_id, "assistant", result.content, {
                    "job_id": segment.job_id, "host": segment.host, "resent": switches > 0,
                    "tokens": {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens,
                               "total": usage.total_tokens, "cumulative": result.cumulative_tokens}})
                final = ManagedResult(result.content, usage, result.cumulative_tokens, result.finish_reason,
                                      segment.job_id, segment.host, segment.url, switches > 0, discarded)
                session.last_result = sink().result = final
                return

    async def _store_partial(self, session: ManagedSession, segment: JobSegment) -> None:
        messages = segment.client.history.messages
        if messages and messages[-1]["role"] == "assistant":
            await self.conversations.append(session.conversation_id, "assistant", messages[-1]["content"],
                                            {"job_id": segment.job_id, "host": segment.host, "cancelled": True})

    # ---------------------------------------------------------------- switching

    async def switch_host(self, session: ManagedSession, new_host: str | HostRecord | None = None) -> JobSegment:
        """Move the conversation to ``new_host`` (default: the next best host for the session's criteria).

        The new job is resumed with the full stored history before the current one is ended, so a failed switch
        leaves the session where it was (``SessionSwitchFailed`` names every host tried). A current host that
        cannot be reached is abandoned instead of ended.

        Example:
            >>> segment = await manager.switch_host(session)                                   # doctest: +SKIP
            >>> segment.job_id, segment.host
        """
        async with session.lock:
            self._check_open(session)
            return await self._switch(session, new_host, lost=None)

    async def _switch(self, session: ManagedSession, new_host: str | HostRecord | None,
                      lost: tuple[JobSegment, BaseException] | None, skip_blob: str = "") -> JobSegment:
        old = session.current
        attempts: list[HostAttempt] = []
        if lost is not None:
            self._abandon(session, lost[0], f"connection lost: {lost[1]}")
            await lost[0].client.close()
        if old.state is not JobState.ACTIVE:
            attempts.append(HostAttempt(old.host, old.url, old.reason or "not serving"))
        stored = await self.conversations.get_conversation(session.conversation_id)
        history = [{"role": m.role, "content": m.content} for m in stored.messages if m.blob_id != skip_blob]
        what = f"cannot move conversation {session.conversation_id} off {old.host}"
        if new_host is not None:
            try:
                segment = await self._start_job(session, new_host, history, leased=False)
            except NEXT_HOST as exc:
                raise SessionSwitchFailed(what, [*attempts, _attempt(new_host, exc)]) from exc
        else:
            segment = await self._pick_and_start(session, history, attempts, SessionSwitchFailed, what,
                                                 exclude={old.host})
        if old.state is JobState.ACTIVE:
            await self._end(old)
        session.jobs.append(segment)
        return segment

    def _abandon(self, session: ManagedSession, segment: JobSegment, reason: str) -> None:
        segment.state, segment.reason = JobState.ABANDONED, reason
        session.failed_hosts[segment.host] = reason
        self._stop_serving(segment, success=False)

    async def _end(self, segment: JobSegment) -> None:
        """``session_end`` (the host proves its last tokens); an unreachable host is abandoned instead."""
        try:
            await segment.client.end()
            segment.state = JobState.ENDED
        except (*HOST_DOWN, SessionError) as exc:
            segment.state, segment.reason = JobState.ABANDONED, f"session_end failed: {exc}"
            await segment.client.close()
        self._stop_serving(segment, success=segment.state is JobState.ENDED)

    def _stop_serving(self, segment: JobSegment, *, success: bool) -> None:
        if segment.leased:
            segment.leased = False
            with contextlib.suppress(ValueError):
                self.selector.release(segment.host)
        self.selector.record_outcome(segment.host, success, time.monotonic() - segment.started)

    # ---------------------------------------------------------------- figures and the end

    async def get_usage(self, session: ManagedSession) -> ManagedUsage:
        """Tokens served and proven, per job and summed, with each job's on-chain state."""
        jobs = []
        for segment in session.jobs:
            terms = await self.client.sessions.get_session(segment.job_id)
            jobs.append(JobUsage(segment.job_id, segment.host, segment.state, terms.state,
                                 segment.billing.per_job.get(segment.job_id, TokenUsage()), terms.cumulative_tokens,
                                 terms.price_per_token))
        return ManagedUsage(jobs)

    async def get_conversation(self, session: ManagedSession | str) -> Conversation:
        """The stored, verified conversation (every message with its meta)."""
        conv = session.conversation_id if isinstance(session, ManagedSession) else session
        return await self.conversations.get_conversation(conv)

    async def close(self, session: ManagedSession) -> ManagedSettlement:
        """End the serving job, settle every job still open on chain and withdraw the refunds.

        Each job pays exactly its proven tokens: an abandoned host's job pays what its proofs covered before it died.
        """
        async with session.lock:
            if not session.closed and session.current.state is JobState.ACTIVE:
                await self._end(session.current)
            session.closed = True
            settlements = []
            for segment in session.jobs:
                terms = await self.client.sessions.get_session(segment.job_id)
                if terms.state == SessionState.ACTIVE:
                    await self.client.sessions.complete_session(segment.job_id)
                    terms = await self.client.sessions.get_session(segment.job_id)
                settlements.append(Settlement.of(terms))
            return ManagedSettlement(settlements, await self.client.withdraw_refund())

    @staticmethod
    def _check_open(session: ManagedSession) -> None:
        if session.closed:
            raise SessionClosedError(f"session {session.conversation_id} is closed; open_session(conversation_id="
                                     f"{session.conversation_id!r}) continues the conversation")


def _attempt(host: str | HostRecord, exc: BaseException) -> HostAttempt:
    if isinstance(host, HostRecord):
        return HostAttempt(host.address, host.url, f"{type(exc).__name__}: {exc}")
    return HostAttempt("", host, f"{type(exc).__name__}: {exc}")
