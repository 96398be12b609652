"""``HttpBackend``: conversations on a ``dinfer store`` service, so they survive the client machine.

Reads are plain GETs (blobs are sealed); writes are signed by the account (see ``signing``). Transport errors and
5xx answers are retried with the shared ``RetryPolicy`` — every call is idempotent (content-addressed blobs, heads
guarded by their precondition), and each retry is signed afresh.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from dinfer.crypto import Keypair
from dinfer.retry import RetryPolicy
from dinfer.sdk.conversations.errors import (
    BlobTooLarge,
    HeadConflict,
    StoreAuthRejected,
    StoreBackendError,
    StoreUnavailable,
)
from dinfer.sdk.conversations.records import check_blob_id, check_conversation_id
from dinfer.sdk.conversations.signing import precondition, sign_write

log = logging.getLogger(__name__)

DEFAULT_RETRY = RetryPolicy(min_backoff=0.1, max_backoff=2.0, max_retries=3)


def _server_message(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason_phrase


class HttpBackend:
    """One account's namespace on a ``dinfer store`` server at ``base_url``.

    Example:
        >>> backend = HttpBackend("http://127.0.0.1:9300", private_key)            # doctest: +SKIP
        >>> store = AsyncConversationStore(private_key, backend)                   # doctest: +SKIP
    """

    def __init__(self, base_url: str, private_key: str, *, timeout_s: float = 10.0,
                 retry: RetryPolicy = DEFAULT_RETRY, client: httpx.AsyncClient | None = None) -> None:
        self._account = Keypair.from_private_key(private_key)
        self.base_url = base_url.rstrip("/")
        self.prefix = f"/v1/store/{self._account.address.lower()}"
        self._timeout_s = timeout_s
        self._retry = retry
        self._client = client
        self._owns_client = client is None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:  # created lazily, inside the loop that uses it
            self._client = httpx.AsyncClient(base_url=self.base_url, timeout=self._timeout_s)
        return self._client

    async def _request(self, method: str, path: str, *, body: bytes = b"", sign: bool = False,
                       if_match: str | None = None, if_none_match: str | None = None,
                       params: dict[str, str] | None = None) -> httpx.Response:
        headers: dict[str, str] = {}
        if if_match:
            headers["If-Match"] = f'"{if_match}"'
        if if_none_match:
            headers["If-None-Match"] = if_none_match
        delays = self._retry.delays()
        while True:
            if sign:
                headers.update(sign_write(method, path, body, self._account.private_key, self._account.address,
                                          cond=precondition(if_match, if_none_match)))
            try:
                response = await self._http().request(method, path, content=body or None, headers=headers,
                                                      params=params)
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 500:
                    return self._check(response, method, path)
                failure = f"HTTP {response.status_code}: {_server_message(response)}"
            delay = next(delays, None)
            if delay is None:
                raise StoreUnavailable(f"conversation store {self.base_url} failed {method} {path}: {failure} "
                                       f"(after {self._retry.max_retries} retries); is `dinfer store serve` running?")
            log.debug("store %s %s failed (%s); retrying in %.2fs", method, path, failure, delay)
            await asyncio.sleep(delay)

    def _check(self, response: httpx.Response, method: str, path: str) -> httpx.Response:
        status = response.status_code
        if status < 400 or status == 404:
            return response
        message = f"store refused {method} {path}: {_server_message(response)}"
        if status in (401, 403):
            raise StoreAuthRejected(message, status=status)
        if status == 412:
            raise HeadConflict(message)
        if status == 413:
            raise BlobTooLarge(message)
        raise StoreBackendError(f"{message} (HTTP {status})")

    async def put_blob(self, blob_id: str, data: bytes) -> None:
        await self._request("PUT", f"{self.prefix}/blobs/{check_blob_id(blob_id)}", body=data, sign=True)

    async def get_blob(self, blob_id: str) -> bytes | None:
        response = await self._request("GET", f"{self.prefix}/blobs/{check_blob_id(blob_id)}")
        return None if response.status_code == 404 else response.content

    async def delete_blob(self, blob_id: str) -> None:
        await self._request("DELETE", f"{self.prefix}/blobs/{check_blob_id(blob_id)}", sign=True)

    async def get_head(self, conversation_id: str) -> bytes | None:
        response = await self._request("GET", f"{self.prefix}/heads/{check_conversation_id(conversation_id)}")
        return None if response.status_code == 404 else response.content

    async def put_head(self, conversation_id: str, data: bytes, *, expected: str | None) -> None:
        await self._request("PUT", f"{self.prefix}/heads/{check_conversation_id(conversation_id)}", body=data,
                            sign=True, if_match=expected, if_none_match=None if expected else "*")

    async def delete_head(self, conversation_id: str) -> None:
        await self._request("DELETE", f"{self.prefix}/heads/{check_conversation_id(conversation_id)}", sign=True)

    async def list_heads(self) -> list[str]:
        response = await self._request("GET", f"{self.prefix}/heads")
        try:
            heads = response.json()["heads"]
            return [check_conversation_id(h) for h in heads]
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreBackendError(f"store {self.base_url} sent a malformed head list: {exc}") from None

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None
