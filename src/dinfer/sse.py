"""Server-sent events as OpenAI streams them: ``data: {json}\\n\\n`` … ``data: [DONE]\\n\\n``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class Event:
    raw: bytes
    """The event exactly as received, with its trailing blank line (re-sent unchanged)."""
    data: Any
    """Parsed JSON payload; ``"[DONE]"`` for the terminator; None for comments/keep-alives."""

    @property
    def done(self) -> bool:
        return self.data == "[DONE]"


def encode(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _parse(block: bytes) -> Event:
    payload = b"\n".join(line[5:].lstrip() for line in block.split(b"\n") if line.startswith(b"data:"))
    if not payload:
        return Event(block + b"\n\n", None)
    if payload == b"[DONE]":
        return Event(block + b"\n\n", "[DONE]")
    try:
        return Event(block + b"\n\n", orjson.loads(payload))
    except orjson.JSONDecodeError:
        return Event(block + b"\n\n", None)


async def events(chunks: AsyncIterator[bytes]) -> AsyncIterator[Event]:
    """Split a byte stream into events (handles events split across chunks and ``\\r\\n`` line ends)."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            if block.strip():
                yield _parse(block)
    if buffer.strip():
        yield _parse(buffer.rstrip(b"\n"))
