"""Executor role: run an inference on one of this host's ML nodes, count its tokens, keep its payload for
validators, and queue the finish record — ``execute_and_finish``, the one path used both when the request
arrives over HTTP from a TA and when the chain announces it first (reconciliation).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from eth_utils import keccak

from dinfer import sse
from dinfer.auth import SignedRequest
from dinfer.chain.contracts.inference import FinishRecord
from dinfer.errors import EngineFailed, NotServing
from dinfer.node import claims
from dinfer.node.broker import Broker
from dinfer.node.chain_writer import ChainWriter
from dinfer.node.metrics import NodeMetrics
from dinfer.node.store import InferenceRecord, NodeStore
from dinfer.openai_types import ChatCompletionRequest, CompletionRequest
from dinfer.server_timing import HEADER as TIMING

log = logging.getLogger(__name__)

Kind = Literal["chat", "completion"]
ROUTES: dict[str, str] = {"chat": "chat/completions", "completion": "completions"}


@dataclass
class Execution:
    """An inference this host executes."""

    inference_id: str
    kind: Kind
    body: bytes
    """The client's signed request body, unchanged."""
    request: ChatCompletionRequest | CompletionRequest
    signed: SignedRequest
    """The client's verified signature headers (kept with the payload so validators can check the body)."""
    max_tokens: int
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    node_id: str = ""
    started: float = 0.0
    first_token_s: float | None = None
    upstream_timing: str = ""
    """The ML node's ``Server-Timing`` (``dinfer.server_timing``), passed on with this layer's own entry."""
    path: str = "http"
    """How the work arrived: ``http`` (from a TA) or ``chain-first`` (from the chain record)."""
    done: bool = False
    """The engine's stream reached ``[DONE]``."""
    recorded: bool = False
    claims: list[claims.Claim] = field(default_factory=list)
    """Per generated token: (text, logprob, top alternatives) as the engine reported them (``node/claims.py``)."""
    client_logprobs: claims.ClientLogprobs = field(default_factory=lambda: claims.ClientLogprobs(False, 0))

    @property
    def client(self) -> str:
        return self.signed.client

    @property
    def ta(self) -> str:
        return self.signed.ta

    def engine_body(self) -> bytes:
        """What the ML node gets: the client's request with dinfer's bounds, logprob claims for validators and
        (when streaming) usage on."""
        body: dict[str, Any] = self.request.model_dump(exclude_none=True)
        body["max_tokens"] = self.max_tokens
        self.client_logprobs = claims.ask_engine(self.kind, body)
        if self.request.stream:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return orjson.dumps(body)

    @property
    def response_hash(self) -> bytes:
        """``keccak256(utf8(output text))`` — committed on chain by the finish record."""
        return keccak(self.text.encode())


def _take_text(kind: Kind, choice: dict[str, Any], streaming: bool) -> str:
    if kind == "completion":
        return str(choice.get("text") or "")
    part = choice.get("delta" if streaming else "message") or {}
    return str(part.get("content") or "")


class Executor:
    """Runs executions on the broker's ML nodes and records them."""

    def __init__(self, broker: Broker, store: NodeStore, writer: ChainWriter, *, address: str,
                 ttft_timeout: float, metrics: NodeMetrics | None = None) -> None:
        self.metrics = metrics
        self.broker = broker
        self.store = store
        self.writer = writer
        self.address = address
        self.ttft_timeout = ttft_timeout

    async def execute_and_finish(self, ex: Execution) -> AsyncIterator[bytes]:
        """Yield the response bytes (SSE events, or one JSON document) and, once complete, record + finish.

        Raises before yielding anything when no ML node can take the request, so callers can still answer with a
        proper status (and a TA can fall back to the next executor).
        """
        ex.started = time.monotonic()
        async with self.broker.dispatch(str(ex.request.model)) as node:
            ex.node_id = node.node_id
            async with node.client.open_inference(ROUTES[ex.kind], ex.engine_body(),
                                                  ttft_timeout=self.ttft_timeout) as resp:
                ex.upstream_timing = resp.headers.get(TIMING, "")
                if resp.status >= 400:
                    detail = (await resp.read())[:500].decode(errors="replace")
                    if resp.status == 503:
                        raise NotServing(f"ML node {node.node_id} busy: {detail}",
                                         retry_after_s=int(resp.headers.get("retry-after", "1")))
                    raise EngineFailed(f"ML node {node.node_id} answered {resp.status}: {detail}",
                                       status=resp.status if resp.status < 500 else 502)
                if ex.request.stream:
                    async for chunk in self._relay_stream(ex, resp.chunks()):
                        if ex.done:
                            await self._record_once(ex)
                        yield chunk
                else:
                    raw = self._absorb_json(ex, await resp.read())
                    await self._record_once(ex)
                    yield raw
        await self._record_once(ex)  # a stream that ended without [DONE]

    async def _record_once(self, ex: Execution) -> None:
        """Record before the last bytes go out: a client that disconnects right after ``[DONE]`` cancels the
        response, and code after the final ``yield`` would never run (the finish — the executor's pay — lost).
        Shielded, so a cancellation that arrives while recording does not cut it in half either."""
        if ex.recorded:
            return
        ex.recorded = True
        await asyncio.shield(asyncio.ensure_future(self._record(ex)))

    async def _relay_stream(self, ex: Execution, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        rewrite = claims.needs_rewrite(ex.client_logprobs)
        async for event in sse.events(chunks):
            data = event.data
            if event.done:
                ex.done = True
            elif isinstance(data, dict):
                if data.get("usage"):
                    ex.prompt_tokens = int(data["usage"].get("prompt_tokens", 0))
                    ex.completion_tokens = int(data["usage"].get("completion_tokens", 0))
                choices = data.get("choices") or []
                for choice in choices:
                    piece = _take_text(ex.kind, choice, streaming=True)
                    if piece and ex.first_token_s is None:
                        ex.first_token_s = time.monotonic() - ex.started
                    ex.text += piece
                    ex.finish_reason = choice.get("finish_reason") or ex.finish_reason
                    ex.claims += claims.take_claims(ex.kind, choice)
                    if rewrite:
                        claims.for_client(ex.kind, choice, ex.client_logprobs)
                if rewrite and choices:
                    yield sse.encode(data)
                    continue
            yield event.raw

    def _absorb_json(self, ex: Execution, raw: bytes) -> bytes:
        """Take text, usage and claims from a whole answer; returns the answer as the client should see it."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise EngineFailed(f"ML node returned invalid JSON: {exc}") from None
        usage = data.get("usage") or {}
        ex.prompt_tokens = int(usage.get("prompt_tokens", 0))
        ex.completion_tokens = int(usage.get("completion_tokens", 0))
        choices = data.get("choices") or [{}]
        choice = choices[0]
        ex.text = _take_text(ex.kind, choice, streaming=False)
        ex.finish_reason = choice.get("finish_reason")
        ex.first_token_s = time.monotonic() - ex.started
        ex.claims = claims.take_claims(ex.kind, choice)
        if not claims.needs_rewrite(ex.client_logprobs):
            return raw
        for each in choices:
            claims.for_client(ex.kind, each, ex.client_logprobs)
        return orjson.dumps(data)

    async def _record(self, ex: Execution) -> None:
        """Payload for validators, the local record, and the finish record (gated until the start is on chain)."""
        response = orjson.dumps({
            "kind": ex.kind, "auth": ex.signed.headers(), "text": ex.text, "prompt_tokens": ex.prompt_tokens,
            "completion_tokens": ex.completion_tokens, "finish_reason": ex.finish_reason, "node_id": ex.node_id,
            "max_tokens": ex.max_tokens, "claims": ex.claims,
        })
        await self.store.put_payload(ex.inference_id, ex.body, response)
        record = await self.store.get_inference(ex.inference_id) or InferenceRecord(
            id=ex.inference_id, role="executor", model=str(ex.request.model), client=ex.client, ta=ex.ta)
        if "executor" not in record.role:
            record.role = f"{record.role}+executor"
        record.executor = self.address
        record.prompt_tokens, record.completion_tokens = ex.prompt_tokens, ex.completion_tokens
        await self.store.put_inference(record)
        if self.metrics is not None:
            self.metrics.executions.labels(path=ex.path).inc()
        self.writer.queue_finish(FinishRecord(bytes.fromhex(ex.inference_id[2:]), ex.prompt_tokens,
                                              ex.completion_tokens, ex.response_hash))
        log.info("executed %s on %s: %d+%d tokens", ex.inference_id, ex.node_id, ex.prompt_tokens,
                 ex.completion_tokens)
