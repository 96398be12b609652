"""The hot-path engine stream client against real loopback sockets: body framings, silence and deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from dinfer.mlnode.engines._sse import post_stream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[int]:
    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _lines(port: int, **kw: float) -> list[bytes]:
    async with post_stream(
        "127.0.0.1", port, "/x", b"{}", timeout_s=kw.get("timeout_s", 10), idle_s=kw.get("idle_s", 10)
    ) as r:
        assert r.status == 200
        return [line async for line in r.data_lines()]


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def test_chunked_body_split_anywhere_and_crlf_lines() -> None:
    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        body = b'data: {"a": 1}\r\n\r\n: ping\r\n\r\ndata: {"b": 2}\r\n\r\ndata: [DONE]\r\n\r\n'
        for i in range(0, len(body), 7):  # frames that cut lines in the middle
            w.write(_chunk(body[i : i + 7]))
            await w.drain()
        w.write(b"0\r\n\r\n")

    async with tcp_server(handler) as port:
        assert await _lines(port) == [b'{"a": 1}', b'{"b": 2}', b"[DONE]"]


async def test_content_length_and_error_status() -> None:
    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        body = b'{"error": {"message": "nope"}}'
        w.write(b"HTTP/1.1 422 Unprocessable\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    async with tcp_server(handler) as port, post_stream("127.0.0.1", port, "/x", b"{}", timeout_s=5) as r:
        assert r.status == 422 and await r.read_all() == b'{"error": {"message": "nope"}}'


async def test_silent_engine_times_out() -> None:
    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunk(b"data: 1\n\n"))
        await w.drain()
        await asyncio.sleep(30)

    async with tcp_server(handler) as port:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="sent nothing"):
            await _lines(port, idle_s=0.4)
        assert time.monotonic() - t0 < 5


async def test_pinging_engine_still_hits_the_deadline() -> None:
    """llama.cpp can loop without emitting tokens while its pings keep the connection busy."""

    async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(300):
            w.write(_chunk(b": ping\n\n"))
            await w.drain()
            await asyncio.sleep(0.05)

    async with tcp_server(handler) as port:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="request timeout"):
            await _lines(port, timeout_s=0.5, idle_s=5)
        assert time.monotonic() - t0 < 5
