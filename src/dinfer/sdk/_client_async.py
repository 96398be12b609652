"""``AsyncDinferClient``: one client account's escrow, per-request chat, sessions, billing and proofs.

Per-request chats go through the official ``openai`` client, signed for the host's TA address (its
``/v1/identity``), and return OpenAI objects; the usage and ``x-dinfer-*`` headers of each one land in the
client's ``UsageLedger``. Sessions are the existing ``SessionClient`` with a ``SessionBilling`` tracker attached.
The error tree is in ``dinfer.sdk.client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx

from dinfer.chain.backends import connect
from dinfer.chain.contracts.inference import InferenceClient
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.contracts.sessions import ReceiptDomain, SessionsClient
from dinfer.chain.deploy import Deployment, bind
from dinfer.chain.txqueue import TxSender
from dinfer.crypto import Address, Keypair, checksum
from dinfer.errors import ChainError, ConfigError, DinferError, ModelNotFound, NodeError, NodeUnavailable, TxReverted
from dinfer.sdk._session_chain import create_job
from dinfer.sdk._session_sync import SyncSessionClient
from dinfer.sdk._session_wire import SessionDisconnected, SignedReceipt, http_url
from dinfer.sdk._signing import async_openai_client
from dinfer.sdk.billing import (
    SessionBilling,
    SessionCost,
    TokenEstimate,
    TokenUsage,
    UsageLedger,
    UsageRecord,
    UsageStats,
    estimate_tokens,
)
from dinfer.sdk.proofs import ProofCheck, ProofRecord, proof_history, verify_history, verify_proof, verify_receipt
from dinfer.sdk.sessions import SessionClient, SessionOptions

if TYPE_CHECKING:
    from web3 import AsyncWeb3

__all__ = [
    "AsyncDinferClient", "BadHostAddress", "ClientOptions", "HostRef", "HostRefused", "HostUnreachable",
    "InsufficientDeposit", "InsufficientFunds", "RequestInfo",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


class InsufficientDeposit(DinferError):
    """The escrow cannot pay for what was asked; the message says how much to deposit."""


class InsufficientFunds(ChainError):
    """The wallet holds less than the deposit a call would escrow."""


class BadHostAddress(ConfigError):
    """``host`` is not a usable host URL or address (malformed, unregistered, or another node answers there)."""


class HostUnreachable(NodeUnavailable):
    """No answer from the host's URL (connection refused, DNS, timeout)."""


class HostRefused(NodeError):
    """The host answered with an error (OpenAI error shape); ``status``/``code`` are its HTTP status and code."""

    def __init__(self, message: str, *, status: int, code: str | None = None,
                 retry_after_s: float | None = None) -> None:
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s
        super().__init__(message)


@dataclass(frozen=True)
class ClientOptions:
    """How a client talks to hosts and the chain (one object instead of many keyword arguments)."""

    request_timeout_s: float = 120.0
    """Longest wait for a per-request answer (streams: between chunks)."""
    identity_timeout_s: float = 10.0
    """``GET /v1/identity`` (host resolution) timeout."""
    session: SessionOptions = field(default_factory=SessionOptions)
    """Options of the ``SessionClient``s ``open_session`` creates."""
    low_balance_tokens: int = 0
    """Default low-balance threshold of session billing (0: the event fires when the deposit is used up)."""
    proof_scan_from_block: int | None = None
    """First block scanned for ``ProofOfWork`` events (default: the deployment's block)."""


@dataclass(frozen=True)
class HostRef:
    """A host node: its root URL and the address it signs for (its TA / on-chain host address)."""

    url: str
    address: Address

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``…/v1``)."""
        return self.url + "/v1"


@dataclass(frozen=True)
class RequestInfo:
    """The transparency headers of one per-request inference."""

    host: str
    inference_id: str
    executor: str
    price_per_token: int

    @classmethod
    def from_headers(cls, host: HostRef, headers: Any) -> RequestInfo:
        return cls(host.url, str(headers.get("x-dinfer-inference-id", "")), str(headers.get("x-dinfer-executor", "")),
                   int(headers.get("x-dinfer-price", 0) or 0))


def session_of(session: Any) -> SessionClient:
    """The async ``SessionClient`` of a ``SessionClient`` or ``SyncSessionClient``."""
    inner = getattr(session, "client", session) if isinstance(session, SyncSessionClient) else session
    if not isinstance(inner, SessionClient):
        raise TypeError(f"expected a SessionClient or SyncSessionClient, got {type(session).__name__}")
    return inner


def _host_error(exc: Exception, host: HostRef) -> DinferError:
    """The typed error for an ``openai`` exception raised while talking to ``host``."""
    import openai

    if isinstance(exc, openai.APIConnectionError):
        return HostUnreachable(f"cannot reach host {host.url} ({exc.__class__.__name__}: {exc}); check the URL and "
                               "that the node is running, or pick another host")
    if isinstance(exc, openai.APIStatusError):
        code = exc.code
        message = exc.message
        if exc.status_code == 402 and code == "insufficient_balance":
            return InsufficientDeposit(f"{message} (host {host.url})")
        retry = exc.response.headers.get("retry-after")
        return HostRefused(f"host {host.url} refused the request (HTTP {exc.status_code}, {code}): {message}",
                           status=exc.status_code, code=code,
                           retry_after_s=float(retry) if retry and retry.replace(".", "", 1).isdecimal() else None)
    return HostRefused(f"host {host.url}: {exc}", status=0)


class AsyncDinferClient:
    """A client account on a dinfer network.

    Build it with ``connect(private_key, rpc_url, deployment)``, ``from_devnet(path)``, or directly from an
    ``AsyncWeb3`` and a ``Deployment``. Use ``async with`` (or ``close()``) to release connections.
    """

    def __init__(self, private_key: str | Keypair, w3: AsyncWeb3, deployment: Deployment, *,
                 options: ClientOptions | None = None, owns_w3: bool = False) -> None:
        self.key = private_key if isinstance(private_key, Keypair) else Keypair.from_private_key(private_key)
        self.w3 = w3
        self.deployment = deployment
        self.options = options or ClientOptions()
        self.sender = TxSender(w3, self.key, poll_interval=0.1)
        self.usage = UsageLedger()
        """Every billed generation and request of this client (``usage_stats``)."""
        self.last_request: RequestInfo | None = None
        self._owns_w3 = owns_w3
        self._contracts: dict[str, Any] = {}
        self._hosts: dict[str, HostRef] = {}
        self._openai: dict[str, Any] = {}
        self._billing: weakref.WeakKeyDictionary[SessionClient, SessionBilling] = weakref.WeakKeyDictionary()
        self._watchers: list[asyncio.Task[None]] = []
        self._domain: ReceiptDomain | None = None

    @classmethod
    def connect(cls, private_key: str | Keypair, rpc_url: str | list[str], deployment: Deployment | str | Path, *,
                options: ClientOptions | None = None) -> AsyncDinferClient:
        """A client over JSON-RPC ``rpc_url`` (one URL or several for the pool) and a deployment (or its file).

        Example:
            >>> client = AsyncDinferClient.connect(key, "http://127.0.0.1:8545", "deployment.json")  # doctest: +SKIP
        """
        if not isinstance(deployment, Deployment):
            deployment = Deployment.load(Path(deployment))
        urls = [rpc_url] if isinstance(rpc_url, str) else list(rpc_url)
        return cls(private_key, connect(urls), deployment, options=options, owns_w3=True)

    @classmethod
    def from_devnet(cls, path: str | Path, private_key: str | Keypair | None = None, *,
                    options: ClientOptions | None = None) -> AsyncDinferClient:
        """A client of the devnet described by ``devnet.json`` (the demo client's key unless one is given)."""
        from dinfer.devnet_info import DevnetInfo

        info = DevnetInfo.load(Path(path))
        return cls.connect(private_key or info.demo_client_key, info.rpc_url, info.contracts, options=options)

    @property
    def address(self) -> Address:
        return self.key.address

    def _contract(self, name: str, kind: type[T]) -> T:
        if name not in self._contracts:
            self._contracts[name] = kind(bind(self.w3, name, self.deployment.address(name)), self.sender)  # type: ignore[call-arg]
        return self._contracts[name]  # type: ignore[no-any-return]

    @property
    def inference(self) -> InferenceClient:
        return self._contract("Inference", InferenceClient)

    @property
    def sessions(self) -> SessionsClient:
        return self._contract("Sessions", SessionsClient)

    @property
    def registry(self) -> RegistryClient:
        return self._contract("Registry", RegistryClient)

    async def close(self) -> None:
        """Stop proof watchers and release the HTTP clients, the transaction sender and (if owned) the RPC pool."""
        for task in self._watchers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._watchers.clear()
        for oa in self._openai.values():
            await oa.close()
        self._openai.clear()
        await self.sender.close()
        if self._owns_w3:
            await self.w3.provider.disconnect()  # type: ignore[attr-defined]

    async def __aenter__(self) -> AsyncDinferClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ escrow (Inference.vy)

    async def balance(self) -> int:
        """This client's escrow balance for per-request inferences (wei)."""
        return await self.inference.balance_of(self.address)

    async def deposit(self, wei: int) -> int:
        """Add ``wei`` to the escrow; the new balance.

        Example:
            >>> await client.deposit(10**16)                                               # doctest: +SKIP
        """
        if wei <= 0:
            raise ValueError(f"deposit must be a positive amount of wei, got {wei}")
        await self._check_wallet(wei, "deposit")
        await self.inference.deposit(wei)
        return await self.balance()

    async def withdraw(self, wei: int) -> int:
        """Take ``wei`` back from the escrow; the new balance."""
        if wei <= 0:
            raise ValueError(f"withdraw needs a positive amount of wei, got {wei}")
        available = await self.balance()
        if wei > available:
            raise InsufficientDeposit(f"cannot withdraw {wei} wei: the escrow of {self.address} holds {available} wei")
        try:
            await self.inference.withdraw(wei)
        except TxReverted as exc:
            if exc.reason == "InsufficientBalance":  # spent by a start between our read and the transaction
                raise InsufficientDeposit(f"cannot withdraw {wei} wei: in-flight requests reserved part of the "
                                          f"escrow (balance now {await self.balance()} wei)") from None
            raise
        return await self.balance()

    async def _check_wallet(self, wei: int, what: str) -> None:
        held = int(await self.w3.eth.get_balance(self.address))
        if held < wei:
            raise InsufficientFunds(f"{what} of {wei} wei needs more than the {held} wei {self.address} holds; "
                                    "fund the account first")

    # ------------------------------------------------------------------ hosts

    async def resolve_host(self, host: str) -> HostRef:
        """A host URL (``http://h:9000`` or ``…/v1``) or on-chain host address → its URL and signing address."""
        if not isinstance(host, str) or not host.strip():
            raise BadHostAddress(f"host must be a URL like http://127.0.0.1:9000 or a host address, got {host!r}")
        host = host.strip()
        if host in self._hosts:
            return self._hosts[host]
        registered: Address | None = None
        if _ADDRESS.match(host):
            registered = checksum(host)
            if not await self.registry.is_host(registered):
                raise BadHostAddress(f"{registered} is not a registered host: pass a host URL or a registered address "
                                     "(see discovery)")
            url = (await self.registry.get_host(registered)).url
        else:
            parts = urlsplit(host)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise BadHostAddress(f"not a host URL: {host!r} (expected e.g. http://127.0.0.1:9000)")
            url = host
        ref = HostRef(http_url(url), await self._identity(http_url(url)))
        if registered is not None and ref.address != registered:
            raise BadHostAddress(f"{url} (registered by {registered}) answers as {ref.address}: the registry entry is "
                                 "stale; use another host")
        self._hosts[host] = ref
        return ref

    async def _identity(self, url: str) -> Address:
        try:
            async with httpx.AsyncClient(timeout=self.options.identity_timeout_s) as http:
                response = await http.get(f"{url}/v1/identity")
        except httpx.HTTPError as exc:
            raise HostUnreachable(f"cannot reach host {url} ({exc.__class__.__name__}: {exc}); check the URL and that "
                                  "the node is running") from None
        try:
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            return checksum(str(response.json()["address"]))
        except (ValueError, KeyError, TypeError, DinferError) as exc:
            raise BadHostAddress(f"{url} is not a dinfer host node (GET /v1/identity: {exc})") from None

    # ------------------------------------------------------------------ per-request chat

    async def openai_client(self, host: str) -> Any:
        """The official ``openai.AsyncOpenAI`` for ``host``, pre-wired to sign every request (cached per host).

        Example:
            >>> oa = await client.openai_client("http://127.0.0.1:9000")                  # doctest: +SKIP
            >>> await oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
        """
        ref = await self.resolve_host(host)
        if ref.url not in self._openai:
            # No hidden retries: a retried signed body would be refused as a replay once the first one arrived.
            self._openai[ref.url] = async_openai_client(ref.base_url, self.key.private_key, ta_address=ref.address,
                                                        max_retries=0, timeout=self.options.request_timeout_s)
        return self._openai[ref.url]

    async def chat(self, model: str, messages: list[dict[str, Any]], *, host: str, max_tokens: int | None = None,
                   stream: bool = False, fallback_hosts: Sequence[str] = (), **params: Any) -> Any:
        """One signed inference on ``host``: an OpenAI ``ChatCompletion``, or (``stream=True``) an async iterator
        of ``ChatCompletionChunk``s whose last chunk carries ``usage``. ``params`` go to the OpenAI call.

        ``fallback_hosts`` (URLs or addresses) are tried in turn when a host cannot be reached or answers 5xx
        before the answer starts (``HostUnreachable``, ``HostRefused`` with status ≥ 500), e.g. its TA died. Each
        try is signed anew for that host's TA, so it is a new inference: the failed one is refunded once it expires
        (or charged, if its executor finished it after the TA died). The last host's error is raised.

        Example:
            >>> reply = await client.chat(MODEL, [{"role": "user", "content": "Hi"}], host=url)   # doctest: +SKIP
            >>> async for chunk in await client.chat(MODEL, msgs, host=url, stream=True):
            ...     print(chunk.choices[0].delta.content if chunk.choices else chunk.usage)
            >>> await client.chat(MODEL, msgs, host=url, fallback_hosts=[url2, url3])      # doctest: +SKIP
        """
        hosts = [host, *fallback_hosts]
        for n, target in enumerate(hosts):
            try:
                return await self._chat_once(model, messages, host=target, max_tokens=max_tokens, stream=stream,
                                             **params)
            except (HostUnreachable, HostRefused) as exc:
                if n == len(hosts) - 1 or (isinstance(exc, HostRefused) and exc.status < 500):
                    raise
                log.info("host %s failed (%s); trying %s", target, exc, hosts[n + 1])
        raise AssertionError("unreachable: the loop returns or raises")

    async def _chat_once(self, model: str, messages: list[dict[str, Any]], *, host: str, max_tokens: int | None,
                         stream: bool, **params: Any) -> Any:
        import openai

        ref = await self.resolve_host(host)
        oa = await self.openai_client(host)
        call: dict[str, Any] = {"model": model, "messages": messages, **params}
        if max_tokens is not None:
            call["max_tokens"] = max_tokens
        if stream:
            call["stream"] = True
            call["stream_options"] = {**call.get("stream_options", {}), "include_usage": True}
        try:
            raw = await oa.chat.completions.with_raw_response.create(**call)
            parsed = raw.parse()
        except openai.APIError as exc:
            raise _host_error(exc, ref) from None
        info = RequestInfo.from_headers(ref, raw.headers)
        self.last_request = info
        if not stream:
            self._record_request(info, parsed.usage)
            return parsed
        return self._chunks(parsed, ref, info)

    async def _chunks(self, chunks: Any, ref: HostRef, info: RequestInfo) -> AsyncIterator[Any]:
        import openai

        try:
            async for chunk in chunks:
                if chunk.usage is not None:
                    self._record_request(info, chunk.usage)
                yield chunk
        except openai.APIError as exc:
            raise _host_error(exc, ref) from None
        finally:
            await chunks.close()

    def _record_request(self, info: RequestInfo, usage: Any) -> None:
        if usage is None:
            return
        self.usage.add(UsageRecord(int(usage.prompt_tokens), int(usage.completion_tokens), info.price_per_token,
                                   inference_id=info.inference_id, host=info.executor))

    # ------------------------------------------------------------------ sessions

    async def governance_price(self, model: str) -> int:
        """The model's governance price (wei per token); ``ModelNotFound`` for a model governance does not list."""
        if not await self.registry.is_valid_governance_model(model):
            raise ModelNotFound(f"{model!r} is not a governance model (see GET /v1/governance/models)")
        return (await self.registry.get_governance_model(model)).price_per_token

    async def open_session(self, host: str, model: str, deposit: int, price_per_token: int | None = None, *,
                           max_duration: int = 3600, proof_interval: int = 600,
                           low_balance_tokens: int | None = None) -> SessionClient:
        """Escrow ``deposit`` wei in a session job with ``host`` (URL or address) and connect to it.

        ``price_per_token`` defaults to the model's governance price. Billing is tracked from the first prompt
        (``get_token_usage``, ``get_session_cost``, ``billing(session)`` for events). If the job was created but the
        host cannot be reached, the job is settled at once (the whole deposit becomes a refund) and
        ``HostUnreachable`` says so.

        Example:
            >>> session = await client.open_session(url, MODEL, deposit=10**15)              # doctest: +SKIP
            >>> (await session.ask("Hi")).content
        """
        price = price_per_token if price_per_token is not None else await self.governance_price(model)
        if price <= 0:
            raise ValueError(f"price_per_token must be positive, got {price}")
        minimum = await self.registry.param("min_proven_tokens")
        if deposit // price < minimum:
            raise InsufficientDeposit(f"a deposit of {deposit} wei buys {deposit // price} tokens at {price} "
                                      f"wei/token; sessions need at least {minimum} (min_proven_tokens): deposit at "
                                      f"least {minimum * price} wei")
        await self._check_wallet(deposit, "session deposit")
        ref = await self.resolve_host(host)
        try:
            job_id = await create_job(self.sessions, host=ref.address, model=model, deposit=deposit,
                                      price_per_token=price, max_duration=max_duration, proof_interval=proof_interval)
        except TxReverted as exc:
            raise self._session_refusal(exc, ref, model) from None
        try:
            session = await SessionClient.attach(self.sessions, self.key, job_id, url=ref.url, model=model,
                                                 options=self.options.session)
        except (SessionDisconnected, OSError) as exc:
            await self.sessions.complete_session(job_id)
            raise HostUnreachable(f"session job {job_id} was created but {ref.url} cannot be reached ({exc}); the job "
                                  "is settled with nothing used: collect the deposit with withdraw_refund()") from None
        self._billing[session] = SessionBilling(
            session, ledger=self.usage,
            low_balance_tokens=self.options.low_balance_tokens if low_balance_tokens is None else low_balance_tokens)
        return session

    @staticmethod
    def _session_refusal(exc: TxReverted, ref: HostRef, model: str) -> DinferError:
        if exc.reason == "HostNotActive":
            return BadHostAddress(f"{ref.address} ({ref.url}) is not an active host (unregistered or collateral "
                                  "below the minimum): pick another host")
        if exc.reason == "InvalidModel":
            return ModelNotFound(f"{model!r} is not a governance model")
        if exc.reason == "DepositBelowMinProof":
            return InsufficientDeposit("the deposit does not cover min_proven_tokens at this price: deposit more")
        return exc

    async def withdraw_refund(self) -> int:
        """Pull every settled session refund of this client; the amount in wei (0 when none)."""
        amount = await self.sessions.refunds(self.address)
        if amount:
            await self.sessions.withdraw_refund()
        return amount

    # ------------------------------------------------------------------ billing

    def billing(self, session: Any) -> SessionBilling:
        """The billing tracker of a session (attached on first use for sessions this client did not open)."""
        inner = session_of(session)
        tracker = self._billing.get(inner)
        if tracker is None:
            tracker = SessionBilling(inner, ledger=self.usage, low_balance_tokens=self.options.low_balance_tokens)
            self._billing[inner] = tracker
        return tracker

    def get_token_usage(self, session: Any) -> TokenUsage:
        """Prompt/completion/total tokens of the session's current job, as the session client counted them."""
        return self.billing(session).usage

    async def get_session_cost(self, session: Any) -> SessionCost:
        """The session's cost: tracked tokens × price and what the chain has proven (with the settlement split)."""
        tracker = self.billing(session)
        terms = await self.sessions.get_session(tracker.job_id)
        return SessionCost.of(terms, tracker.usage.total_tokens)

    async def get_remaining_tokens(self, session: Any) -> int:
        """Tokens the deposit still pays for: ``deposit // price − max(tracked, proven)``."""
        cost = await self.get_session_cost(session)
        return max(0, cost.max_tokens - max(cost.used.tokens, cost.proven.tokens))

    async def estimate_tokens(self, prompt: str | list[dict[str, str]], model: str | None = None,
                              host: str | None = None) -> TokenEstimate:
        """The prompt's token count from ``host``'s tokenizer (``POST /v1/tokenize``) or the byte heuristic.

        ``host`` is any URL with that route (an ML node, a host that proxies it) or a registered host address.
        """
        url = None
        if host is not None:
            url = (await self.registry.get_host(checksum(host))).url if _ADDRESS.match(host) else host
        return await estimate_tokens(prompt, model=model, url=url, timeout=self.options.identity_timeout_s)

    def usage_stats(self, *, kind: str | None = None, job_id: int | None = None) -> UsageStats:
        """Totals, averages and the cost split of this client's usage (``kind``: ``session``/``request``)."""
        return self.usage.stats(kind=kind, job_id=job_id)

    # ------------------------------------------------------------------ proofs

    async def receipt_domain(self) -> ReceiptDomain:
        if self._domain is None:
            self._domain = await self.sessions.receipt_domain()
        return self._domain

    async def get_proof_history(self, job: int | Any) -> list[ProofRecord]:
        """The ``ProofOfWork`` records of a job (an id or a session), oldest first, with their receipts."""
        job_id = job if isinstance(job, int) else session_of(job).job_id
        start = self.options.proof_scan_from_block
        return await proof_history(self.sessions, job_id,
                                   from_block=self.deployment.block if start is None else start)

    async def verify_proof(self, proof: ProofRecord | SignedReceipt, *, session: Any = None) -> ProofCheck:
        """Check a receipt (signed by this client for its job and total?) or an on-chain proof record (against
        the receipts ``session`` signed and the tokens it counted; the job's host submitted it)."""
        domain = await self.receipt_domain()
        if isinstance(proof, SignedReceipt):
            return verify_receipt(domain, proof.job_id, proof.cumulative_tokens, proof.signature, self.address)
        terms = await self.sessions.get_session(proof.job_id)
        if session is None:
            return verify_proof(proof, domain=domain, client=self.address, session=terms)
        inner = session_of(session)
        return verify_proof(proof, domain=domain, client=self.address, session=terms, receipts=inner.receipts.signed,
                            served_tokens=self.billing(inner).usage.total_tokens)

    async def verify_proof_history(self, session: Any) -> list[tuple[ProofRecord, ProofCheck]]:
        """Every proof of the session's current job with its verdict (running totals checked from 0)."""
        inner = session_of(session)
        records = await self.get_proof_history(inner.job_id)
        checks = verify_history(records, domain=await self.receipt_domain(), client=self.address,
                                receipts=inner.receipts.signed, session=await self.sessions.get_session(inner.job_id),
                                served_tokens=self.billing(inner).usage.total_tokens)
        return list(zip(records, checks, strict=True))

    async def poll_proofs(self, session: Any) -> list[ProofRecord]:
        """New ``ProofOfWork`` records of the session's current job; fires its billing's proof events."""
        tracker = self.billing(session)
        return tracker.note_proofs(await self.get_proof_history(tracker.job_id))

    def watch_proofs(self, session: Any, interval_s: float = 2.0) -> asyncio.Task[None]:
        """Poll proofs every ``interval_s`` in the background until ``close()`` (or the task is cancelled)."""
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")

        async def loop() -> None:
            while True:
                try:
                    await self.poll_proofs(session)
                except ChainError as exc:
                    log.info("proof poll failed (%s); retrying in %.1f s", exc, interval_s)
                await asyncio.sleep(interval_s)

        task = asyncio.create_task(loop(), name=f"proofs-{session_of(session).job_id}")
        self._watchers.append(task)
        return task
