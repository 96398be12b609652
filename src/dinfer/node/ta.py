"""Transfer-agent role: accept a client's signed OpenAI request, pick the executor deterministically, record the
start, proxy to the executor (falling back to the next ACTIVE member on refusal / 5xx / no first token), and hand
the client exactly one clean response with dinfer's transparency headers.

Order of checks (nothing is written before all of them pass): body size → content type → JSON/schema → signature
and timestamp → per-client rate limit → model served this epoch → price cap → escrow balance. Then the
``inference_seen/<id>`` marker (replays refused), the start record, dispatch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from dinfer import selection, sse
from dinfer.auth import SignedRequest, verify_headers
from dinfer.chain.contracts.epochs import model_key
from dinfer.chain.contracts.inference import ReassignRecord, StartRecord
from dinfer.config import NodeSettings
from dinfer.crypto import sha256
from dinfer.errors import DinferError, InvalidRequest, ModelNotFound
from dinfer.http_errors import HTTPError
from dinfer.node.chain_view import ChainView, GroupView
from dinfer.node.chain_writer import ChainWriter
from dinfer.node.executor import Execution, Executor, Kind
from dinfer.node.metrics import NodeMetrics
from dinfer.node.remote import ExecutorPeer, Upstream, UpstreamFailed, prepend
from dinfer.node.store import InferenceRecord, NodeStore
from dinfer.openai_types import ChatCompletionRequest, CompletionRequest, parse_request, prompt_tokens_upper_bound
from dinfer.ratelimit import RateLimiter

log = logging.getLogger(__name__)

MAX_PRICE_HEADER = "x-dinfer-max-price"
TA_REQUEST_KEY = "ta_request/{}"
"""KV key of a dispatched request as signed by its client (``GET /v1/ta/requests/{id}``: chain-first executors)."""


@dataclass
class Accepted:
    """A request that passed every check, before dispatch."""

    kind: Kind
    body: bytes
    request: ChatCompletionRequest | CompletionRequest
    signed: SignedRequest
    group: GroupView
    max_tokens: int
    prompt_tokens_est: int
    reserve_wei: int
    received: float = field(default_factory=time.monotonic)

    @property
    def inference_id(self) -> str:
        return self.signed.inference_id

    @property
    def price(self) -> int:
        return self.group.model.price_per_token


@dataclass
class Outcome:
    """What the client gets: the first chunk already in hand, the rest to stream, and the headers."""

    upstream: Upstream
    first: bytes
    headers: dict[str, str]
    record: InferenceRecord
    attempts: list[dict[str, Any]] = field(default_factory=list)
    dispatched: float = 0.0
    """``time.monotonic()`` when the first executor was asked (admission, replay marker and order were done)."""


class TransferAgent:
    def __init__(self, *, address: str, settings: NodeSettings, chain: ChainView, store: NodeStore,
                 writer: ChainWriter, executor: Executor, peers: ExecutorPeer, limiter: RateLimiter,
                 metrics: NodeMetrics) -> None:
        self.metrics = metrics
        self.address = address
        self.settings = settings
        self.chain = chain
        self.store = store
        self.writer = writer
        self.local = executor
        self.peers = peers
        self.limiter = limiter
        self.reserved: dict[str, int] = {}
        """Escrow this TA promised for starts not yet on chain, per client (so bursts cannot overspend)."""
        self.pending_starts: dict[str, asyncio.Future[Any]] = {}
        self._writes: set[asyncio.Task[None]] = set()
        """Record updates written off the request's path (held here until done)."""

    # ------------------------------------------------------------ admission

    async def admit(self, kind: Kind, body: bytes, headers: dict[str, str]) -> Accepted:
        ctype = headers.get("content-type", "")
        if "application/json" not in ctype:
            raise HTTPError(415, f"content-type must be application/json, got {ctype or 'none'}",
                            "invalid_request_error")
        request = parse_request(kind, body)
        if not request.model:
            raise InvalidRequest("model is required (see GET /v1/models)")
        max_tokens = request.max_tokens or self.settings.max_tokens_default
        if max_tokens > self.settings.max_tokens_limit:
            raise InvalidRequest(f"max_tokens {max_tokens} is above this node's limit {self.settings.max_tokens_limit}")
        signed = verify_headers(headers, body, ta_address=self.address, window_s=await self.chain.request_window())
        wait = self.limiter.acquire(signed.client)
        if wait > 0:
            raise HTTPError(429, f"rate limit for {signed.client} exceeded; retry in {wait:.1f} s",
                            "rate_limit_error", headers={"Retry-After": RateLimiter.retry_after_header(wait)})
        # the balance is read alongside the group (one round trip, not two, after an idle spell); a request refused
        # for its model below wasted that read, nothing more
        group, balance = await asyncio.gather(self.chain.group(request.model), self.chain.balance(signed.client))
        if group is None:
            raise ModelNotFound(f"model {request.model!r} is not served in the current epoch (see GET /v1/models)")
        price = group.model.price_per_token
        cap = headers.get(MAX_PRICE_HEADER)
        if cap is not None:
            try:
                cap_wei = int(cap)
            except ValueError:
                raise InvalidRequest(f"{MAX_PRICE_HEADER} must be an integer (wei per token), got {cap!r}") from None
            if price > cap_wei:
                raise HTTPError(402, f"price {price} wei/token for {request.model!r} is above your cap {cap_wei}",
                                "insufficient_quota", code="price_above_cap")
        est = prompt_tokens_upper_bound(request)
        reserve = (est + max_tokens) * price
        reserved = self.reserved.get(signed.client, 0)
        available = balance - reserved
        if available < reserve:  # a deposit may have landed since the cached read: look again before refusing
            available = await self.chain.balance(signed.client, fresh=True) - reserved
        if available < reserve:
            raise HTTPError(
                402, f"insufficient escrow: this request reserves {reserve} wei ({est} prompt tokens upper bound + "
                f"{max_tokens} max_tokens at {price} wei/token) but {signed.client} has {max(available, 0)} wei "
                "available; deposit with `dinfer client deposit` or the SDK's deposit()",
                "insufficient_quota", code="insufficient_balance",
            )
        return Accepted(kind, body, request, signed, group, max_tokens, est, reserve)

    # ------------------------------------------------------------ dispatch

    async def dispatch(self, acc: Accepted) -> Outcome:
        iid = acc.inference_id
        if not self.store.seen.add(iid, str(int(time.time()))):
            raise HTTPError(409, f"inference {iid} was already submitted (signed requests are single-use); "
                            "sign the request again with a new timestamp", "invalid_request_error", code="replay")
        members = acc.group.group.members
        active = acc.group.eligible  # ACTIVE members; inside the PoC window only those with a POC_SLOT node
        max_draws = await self.chain.max_draws()
        iid_bytes = bytes.fromhex(iid[2:])
        cumulative = acc.group.group.cumulative  # built once per epoch group
        first, skipped = selection.pick_from_prefix(iid_bytes, cumulative, active, max_draws)
        if first is None:
            self.store.seen.remove(iid)  # nothing was dispatched: the same signed request may retry
            raise await self._no_executor(acc)
        record = InferenceRecord(id=iid, role="ta", model=str(acc.request.model), client=acc.signed.client,
                                 ta=self.address, executor=members[first], status="RECEIVED",
                                 skipped=[members[i] for i in skipped], price_per_token=acc.price,
                                 reserved_wei=acc.reserve_wei)
        self.reserved[acc.signed.client] = self.reserved.get(acc.signed.client, 0) + acc.reserve_wei
        start = StartRecord(
            body_hash=sha256(acc.body), timestamp=acc.signed.timestamp, signature=acc.signed.signature,
            model_key=model_key(acc.group.model.id), executor=members[first], skipped=tuple(record.skipped),
            prompt_tokens_est=acc.prompt_tokens_est, max_tokens=acc.max_tokens,
        )
        starting = asyncio.ensure_future(self._store_then_start(acc, record, start))
        starting.add_done_callback(_retrieve)
        self.pending_starts[iid] = starting

        candidate: int | None = first
        dispatched = time.monotonic()
        attempts: list[dict[str, Any]] = []
        while candidate is not None and len(attempts) < self.settings.max_attempts:
            member = members[candidate]
            began = time.monotonic()
            try:
                upstream = await self._open(acc, member, [a["executor"] for a in attempts])
                first_chunk = await asyncio.wait_for(upstream.first(), timeout=self._first_answer_timeout(acc))
            except (UpstreamFailed, DinferError, TimeoutError, OSError) as exc:
                reason = "no first token in time" if isinstance(exc, TimeoutError) else str(exc)
                attempts.append({"executor": member, "outcome": "failed", "reason": reason[:200],
                                 "ms": round((time.monotonic() - began) * 1000, 1)})
                self.metrics.attempts.labels(outcome="failed").inc()
                log.warning("inference %s: executor %s failed (%s); trying the next one", iid, member, reason)
                nxt = selection.next_active_from_prefix(iid_bytes, cumulative, active, candidate, max_draws)
                if nxt is not None and len(attempts) < self.settings.max_attempts:
                    self._queue_reassign(iid, member, members[nxt])
                candidate = nxt
                continue
            attempts.append({"executor": member, "outcome": "ok",
                             "ms": round((time.monotonic() - began) * 1000, 1)})
            self.metrics.attempts.labels(outcome="ok").inc()
            self.metrics.latency.observe(time.monotonic() - acc.received)
            if len(attempts) > 1:
                self.metrics.fallbacks.inc()
            record.executor, record.attempts, record.status = member, attempts, "STREAMING"
            self._write_soon(record)
            headers = {
                "x-dinfer-inference-id": iid,
                "x-dinfer-executor": member,
                "x-dinfer-model": f"{acc.group.model.hf_repo}@{acc.group.model.hf_commit}",
                "x-dinfer-price": str(acc.price),
                "x-dinfer-attempts": str(len(attempts)),
                "x-dinfer-epoch": str(acc.group.epoch),
            }
            return Outcome(upstream, first_chunk, headers, record, attempts, dispatched)
        record.status, record.attempts = "FAILED", attempts
        record.error = "every executor tried failed"
        await self.store.put_inference(record)
        raise HTTPError(503, f"no executor could serve inference {iid} after {len(attempts)} attempt(s): "
                        + "; ".join(f"{a['executor']}: {a.get('reason', '')}" for a in attempts),
                        "service_unavailable", headers={"Retry-After": "2"})

    async def _store_then_start(self, acc: Accepted, record: InferenceRecord, start: StartRecord) -> Any:
        """Off the request's path (the client's first token does not wait for SQLite): the signed request, which
        an executor that sees the start on chain first fetches, and the record; then the start is queued — after
        both, so its outcome finds the record and the request is there to fetch. Every later write of the record
        is queued behind these on the store's one connection and carries the record's latest state."""
        try:
            await self.store.kv_set(TA_REQUEST_KEY.format(acc.inference_id), orjson.dumps({
                "kind": acc.kind, "body_hex": acc.body.hex(),
                "headers": {**acc.signed.headers(), "x-dinfer-kind": acc.kind},
            }).decode())
            await self.store.put_inference(record)
        except Exception:
            log.exception("inference %s: not recorded, so not started on chain (its executor will not be paid, "
                          "its client not charged)", acc.inference_id)
            self.pending_starts.pop(acc.inference_id, None)
            self._release(record, landed=False)
            raise
        return await self.writer.queue_start(start)

    def _write_soon(self, record: InferenceRecord) -> None:
        """Store ``record`` without waiting for it (the store's connection keeps writes in order)."""
        async def write() -> None:
            try:
                await self.store.put_inference(record)
            except Exception:
                log.exception("inference %s: record not stored", record.id)

        task = asyncio.ensure_future(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _no_executor(self, acc: Accepted) -> HTTPError:
        """503 when the order has no eligible member; during PoC, Retry-After is the end of the PoC window."""
        window = acc.group.poc_window
        if window is None:
            return HTTPError(503, f"no ACTIVE executor for {acc.request.model!r} this epoch; retry later",
                             "service_unavailable", headers={"Retry-After": "5"})
        blocks = max(1, window.end - await self.chain.head())
        wait = max(1, round(blocks * await self.chain.seconds_per_block()))
        return HTTPError(
            503, f"the network is in Proof-of-Compute until block {window.end} (~{wait} s) and no host serving "
            f"{acc.request.model!r} kept an ML node for inference (POC_SLOT) during it; retry after the PoC",
            "service_unavailable", code="poc_no_eligible_executor", headers={"Retry-After": str(wait)},
        )

    async def _open(self, acc: Accepted, member: str, previous: list[str]) -> Upstream:
        if member == self.address:
            ex = Execution(acc.inference_id, acc.kind, acc.body, acc.request, acc.signed, acc.max_tokens)
            return Upstream.from_generator(self.local.execute_and_finish(ex), timing=lambda: ex.upstream_timing)
        url = await self.chain.host_url(member)
        return await self.peers.open(url, acc.kind, acc.body, acc.signed, member, previous,
                                     read_timeout=self._first_answer_timeout(acc))

    def _first_answer_timeout(self, acc: Accepted) -> float:
        """Streaming: the first token within ``ttft_timeout_s``. Non-streaming: the whole answer is the first chunk."""
        if acc.request.stream:
            return self.settings.ttft_timeout_s
        return self.settings.ttft_timeout_s + acc.max_tokens * self.settings.decode_timeout_per_token_s

    def _queue_reassign(self, iid: str, failed: str, nxt: str) -> None:
        """Reassign after the start is on chain (same sender: the start must not be overtaken)."""
        start = self.pending_starts.get(iid)
        record = ReassignRecord(bytes.fromhex(iid[2:]), failed, nxt)

        async def after_start() -> None:
            if start is not None:
                try:
                    await start
                except Exception as exc:
                    log.warning("not reassigning %s: its start failed (%s)", iid, exc)
                    return
            try:
                await self.writer.queue_reassign(record)
            except Exception as exc:
                log.warning("reassign of %s failed: %s", iid, exc)

        asyncio.get_running_loop().create_task(after_start())

    # ------------------------------------------------------------ relaying to the client

    async def relay(self, acc: Accepted, out: Outcome) -> AsyncIterator[bytes]:
        """Stream the executor's answer to the client; usage chunks only when asked; a clean end on failure."""
        record = out.record
        usage: dict[str, Any] = {}
        try:
            if acc.request.stream:
                async for event in sse.events(prepend(out.first, out.upstream.rest())):
                    data = event.data
                    if isinstance(data, dict) and data.get("usage"):
                        usage = data["usage"]
                        if not data.get("choices") and not acc.request.include_usage:
                            continue
                    if event.done:
                        record.status = "COMPLETED"  # before the client sees the end (it may leave right after)
                    yield event.raw
            else:
                raw = out.first + b"".join([c async for c in out.upstream.rest()])
                usage = (orjson.loads(raw).get("usage") or {}) if raw else {}
                yield raw
        except (UpstreamFailed, DinferError, OSError, TimeoutError) as exc:
            record.status, record.error = "FAILED", f"executor failed mid-stream: {exc}"
            log.warning("inference %s: executor failed after the first token: %s", acc.inference_id, exc)
            yield sse.encode({"error": {"message": "the executor failed mid-answer; the partial answer is not "
                                        "charged (the inference expires and is refunded)", "type": "executor_error"}})
            yield sse.DONE
        else:
            record.status = "COMPLETED"
        finally:
            # Shielded: a client that disconnects right after [DONE] cancels this generator, and (under anyio's
            # level-triggered cancellation) every unshielded await here would be cut, leaving the record STREAMING.
            await asyncio.shield(asyncio.ensure_future(self._close_record(acc, out, usage)))

    async def _close_record(self, acc: Accepted, out: Outcome, usage: dict[str, Any]) -> None:
        """After the answer: close the upstream and store token counts, cost and whatever the chain writer saw."""
        record = out.record
        await out.upstream.close()
        if record.status == "STREAMING":
            record.status, record.error = "FAILED", "the client disconnected before the end of the answer"
        record.prompt_tokens = int(usage.get("prompt_tokens", 0))
        record.completion_tokens = int(usage.get("completion_tokens", 0))
        self.metrics.tokens.labels(kind="prompt").inc(record.prompt_tokens)
        self.metrics.tokens.labels(kind="completion").inc(record.completion_tokens)
        record.cost_wei = (record.prompt_tokens + record.completion_tokens) * acc.price
        fresh = await self.store.get_inference(record.id)
        if fresh is not None:  # keep what the chain writer recorded meanwhile
            record.txs = {**fresh.txs, **record.txs}
            if fresh.status == "REJECTED":
                record.status, record.error = fresh.status, fresh.error
        await self.store.put_inference(record)

    async def on_chain_outcome(self, kind: str, iid: str, outcome: str, detail: str) -> None:
        """Chain writer callback: tx hashes and refusals into the local record (the chain stays authoritative)."""
        record = await self.store.get_inference(iid)
        if kind == "start":
            self.pending_starts.pop(iid, None)
            if record is not None:
                self._release(record, landed=outcome == "applied")
        if record is None:
            return
        if outcome in ("applied", "duplicate"):
            record.txs[kind] = detail
        else:
            record.error = f"{kind} {outcome}: {detail}"
            if kind == "start":
                record.status = "REJECTED"
        await self.store.put_inference(record)

    def _release(self, record: InferenceRecord, *, landed: bool) -> None:
        """The start landed (or was refused): the chain now holds the reservation, not this TA."""
        if landed:  # the contract took exactly this reservation from the client's balance
            self.chain.spend_balance(record.client, record.reserved_wei)
        else:
            self.chain.forget_balance(record.client)
        left = self.reserved.get(record.client, 0) - record.reserved_wei
        if left > 0:
            self.reserved[record.client] = left
        else:
            self.reserved.pop(record.client, None)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a start's failure as seen: it was logged where it happened, and a reassign awaiting it says so."""
    if not task.cancelled():
        task.exception()
