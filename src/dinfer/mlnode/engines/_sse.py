"""Minimal HTTP/1.1 client for one engine stream: POST JSON, read ``data:`` lines of a ``text/event-stream``.

Why not the process's ``httpx.AsyncClient`` here: on the token hot path httpx costs ~0.4 ms of CPU per chunk
(measured on this 2-core machine), raw asyncio streams ~0.15 ms. llama.cpp's worker threads stall at their
barrier whenever another process takes a core, so every 0.1 ms per token the proxy burns shows up as decode
slowdown (bench/mlnode.py). Control calls (readiness, tokenize, PoC callbacks) still use httpx.

Scope is deliberately small: loopback only, one request per connection (``Connection: close``), responses in
chunked transfer encoding, with ``Content-Length``, or delimited by EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

_MAX_HEAD = 64 * 1024
IDLE_TIMEOUT_S = 60.0
"""Longest silence tolerated from an engine (llama.cpp's server sends a ping comment every 15 s)."""


class SSEProtocolError(Exception):
    """The engine's HTTP response could not be parsed."""


class _Watchdog:
    """Aborts the connection on silence or past the deadline; costs the hot path one attribute store per read.

    A timeout scope per read costs ~0.05 ms per chunk, and a scope spanning the ``yield`` of an async generator
    would cancel whatever the consumer happens to be awaiting; a periodic timer does neither.
    """

    def __init__(self, transport: asyncio.BaseTransport, deadline: float, idle_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self._deadline = deadline
        self._idle_s = idle_s
        self.last_activity = self._loop.time()
        self.expired: str | None = None
        self._timer = self._loop.call_later(min(1.0, idle_s), self._check)

    def _check(self) -> None:
        now = self._loop.time()
        if now > self._deadline:
            self.expired = "engine response exceeded the request timeout"
        elif now - self.last_activity > self._idle_s:
            self.expired = f"engine sent nothing for {self._idle_s:.0f}s"
        if self.expired:
            self._transport.abort()
        else:
            self._timer = self._loop.call_later(min(1.0, self._idle_s), self._check)

    def cancel(self) -> None:
        self._timer.cancel()

    def raise_if_expired(self) -> None:
        if self.expired:
            raise TimeoutError(self.expired)


class SSEResponse:
    """Status, headers and body of one engine response."""

    def __init__(self, status: int, headers: dict[str, str], reader: asyncio.StreamReader, dog: _Watchdog) -> None:
        self.status = status
        self.headers = headers
        self._reader = reader
        self._dog = dog

    async def _read_part(self, chunked: bool, remaining: int | None) -> bytes | None:
        """Next body part, None at the end."""
        reader = self._reader
        if chunked:
            size_line = await reader.readline()
            if not size_line:
                raise SSEProtocolError("connection closed inside a chunked body")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise SSEProtocolError(f"bad chunk size line {size_line[:40]!r}") from None
            if size == 0:
                return None
            return (await reader.readexactly(size + 2))[:-2]
        if remaining is not None:
            if remaining <= 0:
                return None
            data = await reader.read(min(remaining, 65536))
            if not data:
                raise SSEProtocolError("connection closed before Content-Length bytes")
            return data
        return await reader.read(65536) or None

    async def _body_parts(self) -> AsyncIterator[bytes]:
        chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        remaining = None if chunked or "content-length" not in self.headers else int(self.headers["content-length"])
        dog = self._dog
        while True:
            try:
                part = await self._read_part(chunked, remaining)
            except (OSError, asyncio.IncompleteReadError, SSEProtocolError):
                dog.raise_if_expired()
                raise
            dog.raise_if_expired()
            if part is None:
                return
            dog.last_activity = dog._loop.time()
            if remaining is not None:
                remaining -= len(part)
            yield part

    async def read_all(self, limit: int = 1_000_000) -> bytes:
        out = bytearray()
        async for part in self._body_parts():
            out += part
            if len(out) > limit:
                break
        return bytes(out)

    async def data_lines(self) -> AsyncIterator[bytes]:
        """Payloads of the stream's ``data:`` lines (comments and other fields skipped)."""
        buf = b""
        async for part in self._body_parts():
            buf += part
            while (nl := buf.find(b"\n")) >= 0:
                line, buf = buf[:nl], buf[nl + 1 :]
                if line.startswith(b"data:"):
                    yield line[5:].strip()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise SSEProtocolError("connection closed before the response head") from exc
    except asyncio.LimitOverrunError as exc:
        raise SSEProtocolError("response head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise SSEProtocolError(f"bad status line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


@asynccontextmanager
async def post_stream(
    host: str,
    port: int,
    path: str,
    body: bytes,
    *,
    timeout_s: float,
    idle_s: float = IDLE_TIMEOUT_S,
    connect_timeout_s: float = 5.0,
) -> AsyncIterator[SSEResponse]:
    """POST ``body`` (JSON) and yield the response; the connection closes when the block exits.

    ``timeout_s`` bounds the whole exchange and ``idle_s`` any silence (``TimeoutError`` from the reads).
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=_MAX_HEAD), connect_timeout_s)
    dog = _Watchdog(writer.transport, deadline, idle_s)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: text/event-stream\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        try:
            status, headers = await _read_head(reader)
        except (OSError, SSEProtocolError):
            dog.raise_if_expired()
            raise
        yield SSEResponse(status, headers, reader, dog)
    finally:
        dog.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
