"""The TA's side of the TA → executor hop: a uniform ``Upstream`` over a local execution or a remote executor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx

from dinfer.auth import H_ADDRESS, H_PREVIOUS, H_SIGNATURE, H_TA, H_TIMESTAMP, SignedRequest, sign_dispatch
from dinfer.errors import NodeError
from dinfer.node.executor import ROUTES, Kind


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

    async def first(self) -> bytes:
        return await self._first()

    def rest(self) -> AsyncIterator[bytes]:
        return self._rest()

    async def close(self) -> None:
        await self._close()

    @classmethod
    def from_generator(cls, gen: AsyncIterator[bytes]) -> Upstream:
        async def first() -> bytes:
            try:
                return await anext(gen)
            except StopAsyncIteration:
                raise UpstreamFailed("the execution produced no output") from None

        async def close() -> None:
            await gen.aclose()  # type: ignore[attr-defined]

        return cls(first, lambda: gen, close)

    @classmethod
    def from_response(cls, resp: httpx.Response) -> Upstream:
        chunks = resp.aiter_raw()

        async def first() -> bytes:
            try:
                async for chunk in chunks:
                    if chunk:
                        return chunk
            except httpx.HTTPError as exc:
                raise UpstreamFailed(f"executor connection failed: {type(exc).__name__}") from exc
            raise UpstreamFailed("executor closed the response without output")

        async def rest() -> AsyncIterator[bytes]:
            try:
                async for chunk in chunks:
                    yield chunk
            except httpx.HTTPError as exc:
                raise UpstreamFailed(f"executor connection failed mid-stream: {type(exc).__name__}") from exc

        return cls(first, rest, resp.aclose)


class ExecutorPeer:
    """Opens inferences on other hosts' executor API (``POST {url}/v1/executor/...``)."""

    def __init__(self, http: httpx.AsyncClient, ta_key: str, *, connect_timeout: float = 3.0) -> None:
        self.http = http
        self.ta_key = ta_key
        self.connect_timeout = connect_timeout

    async def open(self, url: str, kind: Kind, body: bytes, signed: SignedRequest, executor: str,
                   previous: list[str], read_timeout: float) -> Upstream:
        headers = {
            "content-type": "application/json",
            H_ADDRESS: signed.client, H_TIMESTAMP: str(signed.timestamp), H_TA: signed.ta,
            H_SIGNATURE: "0x" + signed.signature.hex(),
            **sign_dispatch(signed.inference_id, executor, self.ta_key),
        }
        if previous:
            headers[H_PREVIOUS] = ",".join(previous)
        request = self.http.build_request(
            "POST", f"{url.rstrip('/')}/v1/executor/{ROUTES[kind]}", content=body, headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=self.connect_timeout),
        )
        try:
            resp = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamFailed(f"executor {executor} at {url} unreachable: {type(exc).__name__}") from exc
        if resp.status_code >= 400:
            detail = (await resp.aread())[:300].decode(errors="replace")
            await resp.aclose()
            raise UpstreamFailed(f"executor {executor} answered {resp.status_code}: {detail}")
        return Upstream.from_response(resp)
