"""OpenAI-compatible inference routes: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

Every request is admitted through the loaded model's ``EnginePool`` (bounded queue → 503 + Retry-After), streamed
from the engine through a ``TokenMeter`` (own token count, ``max_tokens`` enforced), and answered either as SSE —
with the final usage chunk when ``stream_options.include_usage`` is set — or as one aggregated JSON object.
The first chunk is awaited before the response starts, so engine refusals still map to proper HTTP statuses.

The prompt is counted (chat template + tokenizer, a few ms of CPU) alongside the rest of the request's path — while
it waits for an engine and while the engine reads it — instead of before the engine starts: that count is only
needed for usage and for the context-window check, and it is settled before the first byte of the answer goes out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dinfer.config import format_validation_error
from dinfer.errors import DinferError, InvalidRequest
from dinfer.http_errors import JSONBytesResponse, classify
from dinfer.mlnode.api.state import AppState, get_state
from dinfer.mlnode.engines.base import Chunk, Engine, Kind
from dinfer.mlnode.metering import TokenMeter, Usage, aggregate, metered_stream, usage_chunk
from dinfer.mlnode.pool import Lease
from dinfer.openai_types import ChatMessage, OpenAIRequest, parse_request
from dinfer.server_timing import HEADER as TIMING
from dinfer.server_timing import entry, join

router = APIRouter()
State = Annotated[AppState, Depends(get_state)]


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request, st: State) -> JSONBytesResponse | StreamingResponse:
    return await _serve(st, "chat", request)


@router.post("/v1/completions", response_model=None)
async def completions(request: Request, st: State) -> JSONBytesResponse | StreamingResponse:
    return await _serve(st, "completion", request)


@router.get("/v1/models")
async def models(st: State) -> dict[str, Any]:
    pool = st.manager.pool if st.manager.state.value == "INFERENCE" else None
    data = [{"id": pool.model_id, "object": "model", "owned_by": st.settings.node_id}] if pool else []
    return {"object": "list", "data": data}


class TokenizeRequest(BaseModel):
    """``POST /v1/tokenize``: plain ``content`` (its token ids), or chat ``messages`` (the templated prompt's count,
    exactly what usage will report as ``prompt_tokens``)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=128)
    content: str | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)


@router.post("/v1/tokenize")
async def tokenize(request: Request, st: State) -> dict[str, Any]:
    """Token ids and count of ``content`` (or the prompt count of ``messages``) with the loaded model's tokenizer,
    plus the engine's ``context_window`` (null when the engine checks it itself). The host node's session
    context trimming uses it; it takes no place in the engine queue."""
    try:
        req = TokenizeRequest.model_validate(orjson.loads(await request.body()))
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"tokenize body is not valid JSON: {exc}") from None
    except ValidationError as exc:
        raise InvalidRequest(f"invalid tokenize request: {format_validation_error(exc)}") from None
    if (req.content is None) == (req.messages is None):
        raise InvalidRequest("tokenize needs exactly one of 'content' (a string) or 'messages' (a chat)")
    engine = st.manager.pool_for(req.model).engines()[0]
    if req.content is not None:
        tokens: list[int] | None = await engine.tokenize(req.content)
        count = len(tokens or [])
    else:
        body = {"messages": [m.model_dump(exclude_none=True) for m in req.messages or []]}
        tokens, count = None, await engine.count_prompt_tokens("chat", body)
    return {"model": engine.model_id, "tokens": tokens, "count": count, "context_window": engine.context_window}


@dataclass
class _Admitted:
    """A validated request holding a place on an engine, its prompt being counted."""

    req: OpenAIRequest
    body: dict[str, Any]
    max_tokens: int
    lease: Lease
    prompt_count: asyncio.Task[int]
    """The prompt's token count; ``InvalidRequest`` when it does not fit the engine's context window."""

    def abandon(self) -> None:
        """Give the engine place back and drop the count."""
        self.lease.release()
        _discard(self.prompt_count)


def _discard(task: asyncio.Task[int]) -> None:
    """Stop a count nobody will read; if it already failed, its error is moot once the request failed too (read
    here, so asyncio does not log it as never retrieved)."""
    if not task.cancel() and not task.cancelled():
        task.exception()


async def _count_prompt(engine: Engine, kind: Kind, body: dict[str, Any]) -> int:
    prompt_tokens = await engine.count_prompt_tokens(kind, body)
    if engine.context_window and prompt_tokens >= engine.context_window:
        raise InvalidRequest(
            f"prompt has {prompt_tokens} tokens; the context window of {engine.model_id!r} is {engine.context_window}"
        )
    return prompt_tokens


async def _admit(st: AppState, kind: Kind, request: Request) -> _Admitted:
    """Parse and check the request, start counting its prompt, wait for an engine. Every refusal is a
    ``DinferError``."""
    req = parse_request(kind, await request.body())
    max_tokens = req.max_tokens or st.settings.max_tokens_default
    if max_tokens > st.settings.max_tokens_limit:
        raise InvalidRequest(f"max_tokens {max_tokens} exceeds this ML node's limit {st.settings.max_tokens_limit}")
    body = req.model_dump(exclude_none=True, exclude={"stream", "stream_options"})
    body["max_tokens"] = max_tokens
    if kind == "chat" and body.get("logprobs") and "top_logprobs" not in body:
        body["top_logprobs"] = 0  # OpenAI: logprobs alone means per-token logprobs; llama.cpp needs the field
    pool = st.manager.pool_for(req.model)
    # every instance of a pool serves the same model: any one's tokenizer counts for the one the lease picks
    counting = asyncio.ensure_future(_count_prompt(pool.engines()[0], kind, body))
    try:
        lease = await pool.acquire()
    except BaseException:
        _discard(counting)
        raise
    return _Admitted(req, body, max_tokens, lease, counting)


async def _first_chunk(adm: _Admitted, gen: AsyncIterator[Chunk]) -> tuple[Chunk, int]:
    """The engine's first chunk, and the prompt's count made meanwhile. A prompt over the context window is refused
    as such (``InvalidRequest``), whether the engine answered it or refused it in its own words."""
    try:
        first = await anext(gen)
    except DinferError:
        await adm.prompt_count  # raises the clearer InvalidRequest of an overlong prompt
        raise
    return first, await adm.prompt_count


async def _serve(st: AppState, kind: Kind, request: Request) -> JSONBytesResponse | StreamingResponse:
    route = "chat" if kind == "chat" else "completions"

    def count_error(exc: DinferError) -> None:
        st.metrics.requests.labels(route=route, status=str(classify(exc)[0])).inc()

    began = time.monotonic()
    try:
        adm = await _admit(st, kind, request)
    except DinferError as exc:
        count_error(exc)
        raise
    admitted = time.monotonic()
    engine, lease = adm.lease.engine, adm.lease

    def timing() -> dict[str, str]:
        now = time.monotonic()
        return {TIMING: join(entry("mlnode-admit", began, admitted), entry("engine", admitted, now),
                             entry("mlnode", began, now))}

    if not adm.req.stream:
        try:
            prompt_tokens = await adm.prompt_count
            result = await aggregate(engine, kind, adm.body, adm.max_tokens, prompt_tokens)
        except BaseException as exc:
            adm.abandon()
            if isinstance(exc, DinferError):
                count_error(exc)
            raise
        lease.release()
        usage = result["usage"]
        st.metrics.tokens.labels(kind="prompt").inc(usage["prompt_tokens"])
        st.metrics.tokens.labels(kind="completion").inc(usage["completion_tokens"])
        st.metrics.requests.labels(route=route, status="200").inc()
        return JSONBytesResponse(result, headers=timing())

    meter = TokenMeter(kind, adm.max_tokens)
    gen = metered_stream(engine, kind, adm.body, meter)
    try:
        # before the headers: an engine refusal or an overlong prompt still becomes an HTTP status
        first, prompt_tokens = await _first_chunk(adm, gen)
        timed = timing()
    except BaseException as exc:
        await gen.aclose()
        adm.abandon()
        if isinstance(exc, DinferError):
            count_error(exc)
        raise

    async def events() -> AsyncIterator[bytes]:
        status = "200"
        try:
            yield _sse(first)
            async for chunk in gen:
                yield _sse(chunk)
            if adm.req.include_usage:
                yield _sse(usage_chunk(first, Usage(prompt_tokens, meter.completion_tokens)))
            yield b"data: [DONE]\n\n"
        except DinferError as exc:  # headers are gone: report in-band, as OpenAI does
            code, err_type, _ = classify(exc)
            status = str(code)
            yield _sse({"error": {"message": str(exc), "type": err_type, "code": code}})
        finally:
            await gen.aclose()
            lease.release()
            _record_stream(st, route, status, meter, prompt_tokens)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", **timed})


def _record_stream(st: AppState, route: str, status: str, meter: TokenMeter, prompt_tokens: int) -> None:
    st.metrics.requests.labels(route=route, status=status).inc()
    st.metrics.tokens.labels(kind="prompt").inc(prompt_tokens)
    st.metrics.tokens.labels(kind="completion").inc(meter.completion_tokens)
    if meter.ttft_s is not None:
        st.metrics.ttft.observe(meter.ttft_s)
