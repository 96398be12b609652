"""The TA's side of the TA → executor hop: a uniform ``Upstream`` over a local execution or a remote executor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from dinfer.auth import H_PREVIOUS, SignedRequest, sign_dispatch
from dinfer.errors import NodeError
from dinfer.http_stream import StreamClient, StreamFailed, StreamResponse
from dinfer.node.executor import ROUTES, Kind
from dinfer.server_timing import HEADER as TIMING


async def prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``first`` then everything in ``rest`` (a response whose first chunk was awaited before answering)."""
    yield first
    async for chunk in rest:
        yield chunk


class UpstreamFailed(NodeError):
    """The executor refused, failed or vanished before the first token."""


@dataclass
class Upstream:
    """A response being produced somewhere: ``first()`` (awaited under the TTFT bound), then ``rest()``."""

    _first: Callable[[], Awaitable[bytes]]
    _rest: Callable[[], AsyncIterator[bytes]]
    _close: Callable[[], Awaitable[None]]
    timing: Callable[[], str] = lambda: ""
    """The ``Server-Timing`` of the layers below (``dinfer.server_timing``), known once ``first()`` returned."""

    async def first(self) -> bytes:
        return await self._first()

    def rest(self) -> AsyncIterator[bytes]:
        return self._rest()

    async def close(self) -> None:
        await self._close()

    @classmethod
    def from_generator(cls, gen: AsyncIterator[bytes], timing: Callable[[], str] = lambda: "") -> Upstream:
        async def first() -> bytes:
            try:
                return await anext(gen)
            except StopAsyncIteration:
                raise UpstreamFailed("the execution produced no output") from None

        async def close() -> None:
            await gen.aclose()  # type: ignore[attr-defined]

        return cls(first, lambda: gen, close, timing)

    @classmethod
    def from_response(cls, resp: StreamResponse) -> Upstream:
        chunks = resp.chunks()

        async def first() -> bytes:
            try:
                async for chunk in chunks:
                    return chunk
            except StreamFailed as exc:
                raise UpstreamFailed(f"executor connection failed: {exc}") from exc
            raise UpstreamFailed("executor closed the response without output")

        async def rest() -> AsyncIterator[bytes]:
            try:
                async for chunk in chunks:
                    yield chunk
            except StreamFailed as exc:
                raise UpstreamFailed(f"executor connection failed mid-stream: {exc}") from exc

        return cls(first, rest, resp.close, lambda: resp.headers.get(TIMING, ""))


class ExecutorPeer:
    """Opens inferences on other hosts' executor API (``POST {url}/v1/executor/...``)."""

    def __init__(self, streams: StreamClient, ta_key: str, *, connect_timeout: float = 3.0) -> None:
        self.streams = streams
        self.ta_key = ta_key
        self.connect_timeout = connect_timeout

    async def open(self, url: str, kind: Kind, body: bytes, signed: SignedRequest, executor: str,
                   previous: list[str], read_timeout: float) -> Upstream:
        headers = {
            "content-type": "application/json", **signed.headers(),
            **sign_dispatch(signed.inference_id, executor, self.ta_key),
        }
        if previous:
            headers[H_PREVIOUS] = ",".join(previous)
        try:
            resp = await self.streams.post(f"{url.rstrip('/')}/v1/executor/{ROUTES[kind]}", body, headers,
                                           connect_timeout=self.connect_timeout, read_timeout=read_timeout)
        except StreamFailed as exc:
            raise UpstreamFailed(f"executor {executor} at {url} unreachable: {exc}") from exc
        if resp.status >= 400:
            try:
                detail = (await resp.read())[:300].decode(errors="replace")
            finally:
                await resp.close()
            raise UpstreamFailed(f"executor {executor} answered {resp.status}: {detail}")
        return Upstream.from_response(resp)
