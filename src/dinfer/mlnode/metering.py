"""Token metering between an engine's stream and the client: the ML node's own count, limit and usage.

llama.cpp's server never reports usage in a stream, ignores ``stream_options`` and, with unfinished UTF-8 sequences,
can emit a few tokens past ``max_tokens``. So every request is streamed from the engine and passes a ``TokenMeter``:

* a chunk's token count is the number of per-token logprob entries it carries, or 1 for a chunk with text
  (the engines emit one delta per sampled token; multi-byte characters held back by llama.cpp arrive as one delta);
* the first chunk that would pass ``max_tokens`` is dropped and the stream ends with ``finish_reason: "length"``;
* usage = ``count_prompt_tokens`` (asked from the engine) + the metered completion tokens.

Non-streaming answers are the aggregation of the same metered stream, so both paths count identically.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dinfer.errors import EngineFailed

if TYPE_CHECKING:
    from dinfer.mlnode.engines.base import Chunk, Engine, Kind


@dataclass
class Usage:
    """OpenAI ``usage`` object."""

    prompt_tokens: int
    completion_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def chunk_tokens(kind: Kind, chunk: Chunk) -> int:
    """Tokens one engine chunk carries (see the module docstring for the rule)."""
    choices = chunk.get("choices") or []
    if not choices:
        return 0
    choice = choices[0]
    logprobs = choice.get("logprobs") or {}
    if kind == "chat":
        entries = logprobs.get("content") if isinstance(logprobs, dict) else None
        text = (choice.get("delta") or {}).get("content")
    else:
        entries = logprobs.get("tokens") if isinstance(logprobs, dict) else None
        text = choice.get("text")
    if entries:
        return len(entries)
    return 1 if text else 0


@dataclass
class TokenMeter:
    """Counts completion tokens of one request and enforces its ``max_tokens``."""

    kind: Kind
    max_tokens: int
    completion_tokens: int = 0
    finish_reason: str | None = None
    first_token_at: float | None = None
    started_at: float = field(default_factory=time.perf_counter)

    def admit(self, chunk: Chunk) -> bool:
        """Count ``chunk``; False when it would pass ``max_tokens`` (drop it, the stream ends with "length")."""
        n = chunk_tokens(self.kind, chunk)
        if self.completion_tokens + n > self.max_tokens:
            self.finish_reason = "length"
            return False
        if n and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.completion_tokens += n
        choices = chunk.get("choices") or []
        if choices and choices[0].get("finish_reason"):
            self.finish_reason = choices[0]["finish_reason"]
        return True

    @property
    def limit_reached(self) -> bool:
        return self.completion_tokens >= self.max_tokens

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started_at


def _finish_chunk(kind: Kind, template: Chunk, reason: str) -> Chunk:
    """A closing chunk shaped like the engine's own, carrying only ``finish_reason``."""
    base = {k: template[k] for k in ("id", "object", "created", "model") if k in template}
    if kind == "chat":
        choice: dict[str, Any] = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}
    else:
        choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": reason}
    return {**base, "choices": [choice]}


def usage_chunk(template: Chunk, usage: Usage) -> Chunk:
    """The final ``stream_options.include_usage`` chunk: empty ``choices`` plus ``usage``."""
    base = {k: template[k] for k in ("id", "object", "created", "model") if k in template}
    return {**base, "choices": [], "usage": usage.as_dict()}


async def metered_stream(engine: Engine, kind: Kind, body: dict[str, Any], meter: TokenMeter) -> AsyncIterator[Chunk]:
    """Yield the engine's chunks through ``meter``; always ends with a chunk carrying ``finish_reason``."""
    last: Chunk = {}
    upstream = engine.stream(kind, body)
    try:
        async for chunk in upstream:
            last = chunk
            if not meter.admit(chunk):
                yield _finish_chunk(kind, chunk, "length")
                return
            yield chunk
            if meter.finish_reason is not None:
                return
            if meter.limit_reached:
                # The engine may still owe a finish chunk; the count is final, so close with "length" now.
                meter.finish_reason = "length"
                yield _finish_chunk(kind, chunk, "length")
                return
    finally:
        await upstream.aclose()  # type: ignore[attr-defined]
    if not last:  # llama.cpp answers 200 with an empty stream when generation fails inside the server
        raise EngineFailed(f"{engine.name} engine closed the stream without any output")
    if meter.finish_reason is None:  # the engine closed without a finish chunk
        meter.finish_reason = "stop"
        yield _finish_chunk(kind, last, "stop")


async def aggregate(
    engine: Engine, kind: Kind, body: dict[str, Any], max_tokens: int, prompt_tokens: int | None = None
) -> dict[str, Any]:
    """Non-streaming answer built from the metered stream (text, logprobs, finish_reason, usage)."""
    meter = TokenMeter(kind, max_tokens)
    if prompt_tokens is None:
        prompt_tokens = await engine.count_prompt_tokens(kind, body)
    first: Chunk = {}
    texts: list[str] = []
    chat_logprobs: list[Any] = []
    comp_logprobs: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    want_logprobs = bool(body.get("logprobs"))
    async for chunk in metered_stream(engine, kind, body, meter):
        first = first or chunk
        for choice in chunk.get("choices") or []:
            lp = choice.get("logprobs")
            if kind == "chat":
                texts.append((choice.get("delta") or {}).get("content") or "")
                if isinstance(lp, dict) and lp.get("content"):
                    chat_logprobs.extend(lp["content"])
            else:
                texts.append(choice.get("text") or "")
                if isinstance(lp, dict):
                    for key, values in comp_logprobs.items():
                        values.extend(lp.get(key) or [])
    usage = Usage(prompt_tokens, meter.completion_tokens)
    text = "".join(texts)
    if kind == "chat":
        choice_out: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": {"content": chat_logprobs} if want_logprobs else None,
            "finish_reason": meter.finish_reason,
        }
        obj = "chat.completion"
    else:
        choice_out = {
            "index": 0,
            "text": text,
            "logprobs": comp_logprobs if want_logprobs else None,
            "finish_reason": meter.finish_reason,
        }
        obj = "text_completion"
    return {
        "id": first.get("id", ""),
        "object": obj,
        "created": first.get("created", int(time.time())),
        "model": first.get("model", ""),
        "choices": [choice_out],
        "usage": usage.as_dict(),
    }
