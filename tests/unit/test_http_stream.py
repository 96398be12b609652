"""``dinfer.http_stream`` against raw loopback servers: chunks arrive as sent, every transport failure is a
``StreamFailed``, and closing an unfinished answer hangs up on the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from dinfer.chain.anvil import free_port
from dinfer.http_stream import StreamClient, StreamFailed

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-test: yes\r\n"
        b"transfer-encoding: chunked\r\n\r\n")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(lengths[0])
    return await reader.readexactly(length)


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1/x"
    finally:
        srv.close()


@pytest.fixture
async def streams() -> AsyncIterator[StreamClient]:
    client = StreamClient()
    yield client
    await client.close()


async def test_chunks_arrive_as_the_server_sends_them(streams: StreamClient) -> None:
    release = asyncio.Event()
    bodies: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        bodies.append(await read_request(reader))
        writer.write(HEAD + chunk(b"data: 1\n\n"))
        await writer.drain()
        await release.wait()
        writer.write(chunk(b"data: 2\n\n") + b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    async with server(handler) as url:
        resp = await streams.post(url, b'{"a": 1}', {"content-type": "application/json"}, connect_timeout=2,
                                  read_timeout=5)
        assert resp.status == 200 and resp.headers["x-test"] == "yes"
        chunks = resp.chunks()
        assert await anext(chunks) == b"data: 1\n\n"  # before the server sent the rest
        release.set()
        assert [c async for c in chunks] == [b"data: 2\n\n"]
        await resp.close()
    assert bodies == [b'{"a": 1}']


async def test_an_error_status_is_answered_with_its_body(streams: StreamClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 3\r\ncontent-length: 4\r\n\r\nbusy")
        await writer.drain()

    async with server(handler) as url:
        resp = await streams.post(url, b"{}", {}, connect_timeout=2, read_timeout=5)
        assert (resp.status, resp.headers["retry-after"], await resp.read()) == (503, "3", b"busy")
        await resp.close()


async def test_a_refused_connection_fails(streams: StreamClient) -> None:
    with pytest.raises(StreamFailed):
        await streams.post(f"http://127.0.0.1:{free_port()}/v1/x", b"{}", {}, connect_timeout=2, read_timeout=2)


async def test_a_server_that_never_answers_times_out(streams: StreamClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)  # accepted, silent: a hung (SIGSTOPped) process looks like this

    async with server(handler) as url:
        with pytest.raises(StreamFailed, match="timed out"):
            await streams.post(url, b"{}", {}, connect_timeout=2, read_timeout=0.3)


async def test_silence_between_chunks_times_out(streams: StreamClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(HEAD + chunk(b"data: 1\n\n"))
        await writer.drain()
        await asyncio.sleep(30)

    async with server(handler) as url:
        resp = await streams.post(url, b"{}", {}, connect_timeout=2, read_timeout=0.3)
        chunks = resp.chunks()
        assert await anext(chunks) == b"data: 1\n\n"
        with pytest.raises(StreamFailed, match="timed out"):
            await anext(chunks)
        await resp.close()


async def test_a_stream_cut_mid_answer_fails(streams: StreamClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(HEAD + chunk(b"data: 1\n\n") + b"40\r\npartial")  # a chunk promised, never finished
        await writer.drain()
        writer.close()

    async with server(handler) as url:
        resp = await streams.post(url, b"{}", {}, connect_timeout=2, read_timeout=5)
        with pytest.raises(StreamFailed):
            _ = [c async for c in resp.chunks()]
        await resp.close()


async def test_closing_an_unfinished_answer_hangs_up_and_a_finished_one_is_reused(streams: StreamClient) -> None:
    hung_up = asyncio.Event()
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        body = await read_request(reader)
        if body == b"finish":
            writer.write(HEAD + chunk(b"done") + b"0\r\n\r\n")
            await writer.drain()
            body = await read_request(reader)  # the same connection carries the next request
        writer.write(HEAD + chunk(b"data: 1\n\n"))
        await writer.drain()
        if await reader.read(1) == b"":
            hung_up.set()

    async with server(handler) as url:
        done = await streams.post(url, b"finish", {}, connect_timeout=2, read_timeout=5)
        assert [c async for c in done.chunks()] == [b"done"]
        await done.close()
        resp = await streams.post(url, b"stop early", {}, connect_timeout=2, read_timeout=5)
        assert await anext(resp.chunks()) == b"data: 1\n\n"
        await resp.close()
        await asyncio.wait_for(hung_up.wait(), timeout=5)
    assert connections == 1
