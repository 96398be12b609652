"""API-key gateway: ``Authorization: Bearer dk-…`` on the OpenAI routes becomes a request signed by the key's own
chain account for this TA, then the normal TA flow (same checks, executor order, chain records, fallback, headers).

Requests that carry dinfer's signature headers never come here: ``for_request`` hands them the TA itself.

Order for a key (every refusal happens before the TA's start record, so nothing is charged): key (401) → per-key
rate limit (429 + Retry-After) → sign → the TA's own admission (schema, rate limit, model, price cap, escrow: 402
with the amount needed) → per-key spend caps (402 naming the cap). In-flight reservations count against the daily
and total caps until the answer ends and its cost is recorded as the key's usage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING

from dinfer.auth import H_SIGNATURE, sign_headers
from dinfer.config import NodeSettings
from dinfer.crypto import Keypair, inference_id
from dinfer.http_errors import HTTPError
from dinfer.node.api_keys import KEY_PREFIX, ApiKey, KeyCipher, KeyLimits, KeyStore, day_of
from dinfer.node.executor import Kind
from dinfer.node.store import InferenceRecord, NodeStore
from dinfer.node.ta import Accepted, Outcome, TransferAgent
from dinfer.ratelimit import RateLimiter

if TYPE_CHECKING:
    from dinfer.node.runtime import NodeRuntime

log = logging.getLogger(__name__)

_OPEN = ("RECEIVED", "STREAMING")
_ISSUED_TTL_S = 3600.0
_MAX_TIMESTAMP_BUMPS = 64


def bearer_key(headers: Mapping[str, str]) -> str | None:
    """The ``dk-…`` token of an ``Authorization: Bearer`` header (lower-cased header names), else None."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token.startswith(KEY_PREFIX) else None


def wants_gateway(headers: Mapping[str, str]) -> bool:
    """An unsigned request with a dinfer API key: the plain-OpenAI-client path."""
    return not headers.get(H_SIGNATURE) and bearer_key(headers) is not None


def check_caps(key_id: str, limits: KeyLimits, *, reserve: int, spent_today: int, spent_total: int,
               pending: int) -> None:
    """402 naming the first cap this request would pass; ``pending`` is the key's reservations in flight."""
    if limits.max_request_wei is not None and reserve > limits.max_request_wei:
        raise HTTPError(402, f"API key {key_id}: this request may cost up to {reserve} wei ((prompt upper bound + "
                        f"max_tokens) × price), above the key's max_request_wei of {limits.max_request_wei} wei; "
                        "lower max_tokens or raise the limit", "insufficient_quota", code="key_request_cap")
    committed_today = spent_today + pending + reserve
    if limits.max_daily_wei is not None and committed_today > limits.max_daily_wei:
        raise HTTPError(402, f"API key {key_id}: max_daily_wei of {limits.max_daily_wei} wei reached ({spent_today} "
                        f"spent today (UTC) + {pending} in flight + up to {reserve} for this request)",
                        "insufficient_quota", code="key_daily_cap")
    committed_total = spent_total + pending + reserve
    if limits.max_total_wei is not None and committed_total > limits.max_total_wei:
        raise HTTPError(402, f"API key {key_id}: max_total_wei of {limits.max_total_wei} wei reached ({spent_total} "
                        f"spent + {pending} in flight + up to {reserve} for this request)", "insufficient_quota",
                        code="key_total_cap")


class Gateway:
    """Per-key limits, signing and accounting around the node's ``TransferAgent``."""

    def __init__(self, keys: KeyStore, ta: TransferAgent, store: NodeStore, settings: NodeSettings) -> None:
        self.keys = keys
        self.ta = ta
        self.store = store
        self.settings = settings
        self._limiters: dict[str, RateLimiter] = {}
        self._accounts: dict[str, Keypair] = {}
        self._pending: dict[str, dict[str, int]] = {}
        """Key id → inference id → wei reserved by a request admitted and not yet settled."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._issued: dict[str, float] = {}
        """Inference ids this gateway signed recently (identical bodies in one second get distinct timestamps)."""

    async def agent(self, headers: Mapping[str, str]) -> KeyAgent:
        """The TA for one request of the key in ``headers``: 401 for a bad key, 429 over its rate."""
        key = await self.keys.authenticate(bearer_key(headers) or "")
        wait = self._limiter(key).acquire(key.id)
        if wait > 0:
            raise HTTPError(429, f"API key {key.id}: rate limit of {self._per_minute(key)} requests/minute exceeded; "
                            f"retry in {wait:.1f} s", "rate_limit_error",
                            headers={"Retry-After": RateLimiter.retry_after_header(wait)})
        return KeyAgent(self, key)

    def account(self, key: ApiKey) -> Keypair:
        account = self._accounts.get(key.id)
        if account is None:
            account = self._accounts[key.id] = self.keys.account_of(key)
        return account

    async def sign(self, key: ApiKey, body: bytes, headers: dict[str, str]) -> None:
        """Add the key account's signature headers for this TA to ``headers`` (a fresh inference id every time)."""
        private_key = self.account(key).private_key
        ts = int(time.time())
        for _ in range(_MAX_TIMESTAMP_BUMPS):
            signed = sign_headers(body, private_key, self.ta.address, timestamp=ts)
            iid = "0x" + inference_id(bytes.fromhex(signed[H_SIGNATURE][2:])).hex()
            if iid not in self._issued and self.store.seen.get(iid) is None:
                break
            ts += 1  # same body in the same second: deterministic signatures would repeat the inference id
        else:
            raise HTTPError(429, f"API key {key.id}: too many identical requests at once; retry in a second",
                            "rate_limit_error", headers={"Retry-After": "1"})
        self._remember(iid)
        headers.update(signed)

    async def reserve(self, key: ApiKey, iid: str, reserve_wei: int) -> None:
        """Check the key's caps against a request reserving ``reserve_wei`` and hold it until ``settle``."""
        lock = self._locks.setdefault(key.id, asyncio.Lock())
        async with lock:
            pending = self._pending.setdefault(key.id, {})
            today, total = await self.keys.spent(key.id, day_of(time.time()))
            check_caps(key.id, key.limits, reserve=reserve_wei, spent_today=today, spent_total=total,
                       pending=sum(pending.values()))
            pending[iid] = reserve_wei

    def release(self, key: ApiKey, iid: str) -> None:
        pending = self._pending.get(key.id)
        if pending is not None:
            pending.pop(iid, None)
            if not pending:
                self._pending.pop(key.id, None)

    async def settle(self, key: ApiKey, record: InferenceRecord) -> None:
        """Record the answer's tokens and cost as the key's usage, then drop its reservation."""
        try:
            final = record if record.status not in _OPEN else await self._closed(record)
            await self.keys.record_usage(key.id, prompt_tokens=final.prompt_tokens,
                                         completion_tokens=final.completion_tokens, cost_wei=final.cost_wei)
        finally:
            self.release(key, record.id)

    def pending_wei(self, key_id: str) -> int:
        return sum(self._pending.get(key_id, {}).values())

    async def _closed(self, record: InferenceRecord, timeout: float = 5.0) -> InferenceRecord:
        """The TA closes a record in a shielded task when the client leaves mid-answer: wait (bounded) for it."""
        deadline = time.monotonic() + timeout
        latest = record
        while time.monotonic() < deadline:
            stored = await self.store.get_inference(record.id)
            if stored is not None:
                latest = stored
                if stored.status not in _OPEN:
                    break
            await asyncio.sleep(0.05)
        return latest

    def _per_minute(self, key: ApiKey) -> int:
        return key.limits.rate_limit_per_minute or self.settings.gateway_rate_limit_per_minute

    def _limiter(self, key: ApiKey) -> RateLimiter:
        per_minute = self._per_minute(key)
        limiter = self._limiters.get(key.id)
        if limiter is None or limiter.rate != per_minute / 60.0:  # new key, or its limit changed
            limiter = self._limiters[key.id] = RateLimiter(per_minute=per_minute)
        return limiter

    def _remember(self, iid: str) -> None:
        now = time.monotonic()
        self._issued[iid] = now
        while self._issued:
            oldest, at = next(iter(self._issued.items()))
            if now - at < _ISSUED_TTL_S:
                break
            del self._issued[oldest]


class KeyAgent:
    """The TA as one key's request sees it: ``admit`` / ``dispatch`` / ``relay`` with the key's signature, caps
    and usage accounting around the TA's own steps (which stay exactly those of signed requests)."""

    def __init__(self, gateway: Gateway, key: ApiKey) -> None:
        self.gateway = gateway
        self.key = key

    async def admit(self, kind: Kind, body: bytes, headers: dict[str, str]) -> Accepted:
        """Sign (adding the signature headers to ``headers``), run the TA's admission, then the key's caps."""
        await self.gateway.sign(self.key, body, headers)
        try:
            acc = await self.gateway.ta.admit(kind, body, headers)
        except HTTPError as exc:
            if exc.code != "insufficient_balance":
                raise
            raise HTTPError(402, f"API key {self.key.id}: {exc} — the key's account {self.key.account} pays; fund "
                            f"it with `dinfer keys fund {self.key.id} --deposit WEI`", exc.err_type,
                            code=exc.code) from None
        await self.gateway.reserve(self.key, acc.inference_id, acc.reserve_wei)
        return acc

    async def dispatch(self, acc: Accepted) -> Outcome:
        try:
            return await self.gateway.ta.dispatch(acc)
        except BaseException:
            self.gateway.release(self.key, acc.inference_id)
            raise

    async def relay(self, acc: Accepted, out: Outcome) -> AsyncIterator[bytes]:
        try:
            async with aclosing(self.gateway.ta.relay(acc, out)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            # Shielded like the TA's own close: a client leaving right after [DONE] must not lose the usage record.
            await asyncio.shield(asyncio.ensure_future(self.gateway.settle(self.key, out.record)))


async def for_request(rt: NodeRuntime, headers: Mapping[str, str]) -> TransferAgent | KeyAgent:
    """The TA itself for signed requests; a ``KeyAgent`` for ``Authorization: Bearer dk-…``."""
    if not wants_gateway(headers):
        return rt.ta
    gateway = rt.gateway
    if gateway is None:
        raise HTTPError(401, "this node does not run the API-key gateway (its operator enables it with "
                        "DINFER_NODE__KEY_ENCRYPTION_KEY); sign requests with your chain key instead (docs/api.md)",
                        "invalid_request_error", code="invalid_api_key")
    return await gateway.agent(headers)


async def start_gateway(rt: NodeRuntime) -> Gateway | None:
    """The gateway when ``node.key_encryption_key`` is set (``ConfigError`` if the stored keys do not decrypt)."""
    kek = rt.settings.node.key_encryption_key
    if kek is None:
        log.info("API-key gateway off (set DINFER_NODE__KEY_ENCRYPTION_KEY to turn it on)")
        return None
    keys = await KeyStore.open(rt.store, KeyCipher.from_hex(kek.get_secret_value()))
    log.info("API-key gateway on (%d key(s) stored)", len(await keys.list()))
    return Gateway(keys, rt.ta, rt.store, rt.settings.node)
