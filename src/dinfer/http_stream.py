"""Streaming HTTP for the per-request hops (TA → executor → ML node): one POST, its status and headers, then the
body chunk by chunk as it arrives.

Why aiohttp here and httpx elsewhere: every token of every answer crosses these hops, and httpx's pure-Python
response handling costs ~3.4 ms of CPU per 49-chunk answer on this 2-core machine against ~0.8 ms for aiohttp's C
parser (``docs/protocol.md``, per-request flow). On a host whose engine shares the CPU, that CPU is taken from the
engine. Control calls (state polls, loads, PoC, validators) stay on the process's ``httpx.AsyncClient``.

Callers see neither library: transport failures (refused, reset, timed out, malformed) are ``StreamFailed``, a
``ConnectionError``, so code that already treats ``OSError`` as "the other side is gone" handles them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp


class StreamFailed(ConnectionError):
    """The other side could not be reached, or the connection broke or went silent while streaming."""


def _failure(url: str, exc: BaseException) -> StreamFailed:
    if isinstance(exc, TimeoutError):
        return StreamFailed(f"{url}: timed out")
    return StreamFailed(f"{url}: {type(exc).__name__}: {exc}")


class StreamResponse:
    """An answer whose headers arrived; read it whole (``read``) or as it comes (``chunks``), then ``close``."""

    def __init__(self, url: str, resp: aiohttp.ClientResponse) -> None:
        self.url = url
        self._resp = resp
        self.status: int = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _failure(self.url, exc) from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (never an empty chunk)."""
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _failure(self.url, exc) from exc

    async def close(self) -> None:
        """Give the connection back when the body was read to the end; otherwise close it, so the other side sees
        the reader leave (an executor stops generating for a client that is gone)."""
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()


class StreamClient:
    """A pool of keep-alive connections for streamed POSTs; the session is made on first use, in the running loop."""

    def __init__(self, *, max_connections: int = 256) -> None:
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, connect_timeout: float,
                   read_timeout: float) -> StreamResponse:
        """POST ``body`` and return once the status line and headers are in. ``read_timeout`` bounds the wait for
        the headers and then every silence between chunks; ``StreamFailed`` on any transport failure."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        try:
            resp = await self._get_session().post(url, data=body, headers=dict(headers), timeout=timeout)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _failure(url, exc) from exc
        return StreamResponse(url, resp)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
