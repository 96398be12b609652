"""HTTP client of one ML node (Gonka-compatible routes), with the version prefix used during upgrades.

URLs are built by one function per family so that switching version (``{base}/{version}/api/v1/...``) changes
every call at once — Gonka's ``InferenceUrl()`` / ``PoCURL()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from dinfer.errors import NodeError, NodeUnavailable
from dinfer.http_stream import StreamClient, StreamFailed, StreamResponse


@dataclass(frozen=True)
class MLNodeEndpoint:
    """Where an ML node lives and which version prefix to use (None = unprefixed routes)."""

    base_url: str
    version: str | None = None

    def _prefix(self) -> str:
        base = self.base_url.rstrip("/")
        return f"{base}/{self.version}" if self.version else base

    def api_url(self, path: str) -> str:
        """Control routes: ``{base}[/{version}]/api/v1/<path>``."""
        return f"{self._prefix()}/api/v1/{path.lstrip('/')}"

    def inference_url(self, path: str) -> str:
        """OpenAI routes: ``{base}[/{version}]/v1/<path>``."""
        return f"{self._prefix()}/v1/{path.lstrip('/')}"

    def with_version(self, version: str | None) -> MLNodeEndpoint:
        return MLNodeEndpoint(self.base_url, version)


class MLNodeClient:
    """Calls into one ML node: control calls on the process-wide ``httpx.AsyncClient``, inferences on the
    ``StreamClient`` (the token hot path)."""

    def __init__(self, endpoint: MLNodeEndpoint, http: httpx.AsyncClient, streams: StreamClient, *,
                 timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.http = http
        self.streams = streams
        self.timeout = timeout

    def at_version(self, version: str | None) -> MLNodeClient:
        """The same ML node under ``version``'s route prefix (an upgrade's target)."""
        return MLNodeClient(self.endpoint.with_version(version), self.http, self.streams, timeout=self.timeout)

    async def _json(self, method: str, url: str, body: dict[str, Any] | None = None,
                    timeout: float | None = None) -> dict[str, Any]:
        try:
            resp = await self.http.request(method, url, json=body, timeout=timeout or self.timeout)
        except httpx.TransportError as exc:
            raise NodeUnavailable(f"ML node {self.endpoint.base_url} unreachable: {type(exc).__name__}") from exc
        if resp.status_code >= 400:
            raise NodeError(f"ML node {url} answered {resp.status_code}: {resp.text[:300]}")
        data: dict[str, Any] = resp.json()
        return data

    async def state(self) -> dict[str, Any]:
        return await self._json("GET", self.endpoint.api_url("state"), timeout=3.0)

    async def inference_up(self, model: str, args: list[str], model_path: str | None = None,
                           timeout: float = 300.0) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "additional_args": args}
        if model_path:
            body["model_path"] = model_path
        return await self._json("POST", self.endpoint.api_url("inference/up"), body, timeout=timeout)

    async def inference_down(self) -> dict[str, Any]:
        return await self._json("POST", self.endpoint.api_url("inference/down"), timeout=60.0)

    async def stop(self) -> dict[str, Any]:
        return await self._json("POST", self.endpoint.api_url("stop"), timeout=60.0)

    async def pow_generate(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("POST", self.endpoint.api_url("pow/init/generate"), body)

    async def pow_validate(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("POST", self.endpoint.api_url("pow/init/validate"), body, timeout=120.0)

    async def pow_status(self) -> dict[str, Any]:
        return await self._json("GET", self.endpoint.api_url("pow/status"))

    async def pow_stop(self) -> dict[str, Any]:
        return await self._json("POST", self.endpoint.api_url("pow/stop"))

    async def tokenize(self, content: str | None = None, *, messages: list[dict[str, Any]] | None = None,
                       model: str | None = None) -> dict[str, Any]:
        """``POST /v1/tokenize``: ``{tokens, count, context_window}`` of ``content``, or the prompt count of
        ``messages`` (``tokens`` is null then)."""
        body: dict[str, Any] = {"content": content} if messages is None else {"messages": messages}
        if model is not None:
            body["model"] = model
        return await self._json("POST", self.endpoint.inference_url("tokenize"), body)

    @asynccontextmanager
    async def open_inference(self, path: str, body: bytes, *, ttft_timeout: float) -> AsyncIterator[StreamResponse]:
        """Start an OpenAI request (``chat/completions`` or ``completions``) and yield the streaming response.

        The connect (at most 5 s), the wait for the headers and every silence between chunks are bounded by
        ``ttft_timeout``; the caller reads the body.
        """
        try:
            response = await self.streams.post(
                self.endpoint.inference_url(path), body, {"content-type": "application/json"},
                connect_timeout=min(ttft_timeout, 5.0), read_timeout=ttft_timeout,
            )
        except StreamFailed as exc:
            raise NodeUnavailable(f"ML node {self.endpoint.base_url}: {exc}") from exc
        try:
            yield response
        finally:
            await response.close()
