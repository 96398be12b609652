"""Blocking façade over ``SessionClient`` for scripts and notebooks: a private event loop on a daemon thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from dinfer.chain.backends import connect
from dinfer.chain.contracts.sessions import SessionsClient
from dinfer.chain.deploy import bind
from dinfer.chain.txqueue import TxSender
from dinfer.crypto import Keypair
from dinfer.sdk._session_chain import Settlement
from dinfer.sdk._session_wire import PromptResult, SessionAck, SessionClosed

T = TypeVar("T")


class SyncSessionClient:
    """The same calls as ``SessionClient`` (the async one does the work), blocking.

    Example:
        >>> with SyncSessionClient.open(rpc_url, sessions_address, key, host=host, model=MODEL,
        ...                             deposit=10**15) as session:                       # doctest: +SKIP
        ...     for text in session.stream("Name three colours"):
        ...         print(text, end="")
        ...     session.end()
        ...     session.complete()
    """

    def __init__(self, rpc_url: str, sessions_address: str, private_key: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="dinfer-session")
        self._thread.start()
        self.key = Keypair.from_private_key(private_key)

        async def chain() -> tuple[Any, TxSender, SessionsClient]:
            w3 = connect([rpc_url])
            sender = TxSender(w3, self.key)
            return w3, sender, SessionsClient(bind(w3, "Sessions", sessions_address), sender)

        self._w3, self._sender, self.sessions = self._call(chain())
        from dinfer.sdk.sessions import SessionClient  # here: sessions.py re-exports this class (import cycle)

        self._client_type = SessionClient
        self.client: Any = None
        self.last_result: PromptResult | None = None

    @classmethod
    def open(cls, rpc_url: str, sessions_address: str, private_key: str, **kwargs: Any) -> SyncSessionClient:
        """``SessionClient.open`` (create the job on chain, connect); ``kwargs`` as there."""
        sync = cls(rpc_url, sessions_address, private_key)
        sync.client = sync._call(sync._client_type.open(sync.sessions, sync.key, **kwargs))
        return sync

    @classmethod
    def attach(cls, rpc_url: str, sessions_address: str, private_key: str, job_id: int,
               **kwargs: Any) -> SyncSessionClient:
        """``SessionClient.attach`` (an existing job of this client)."""
        sync = cls(rpc_url, sessions_address, private_key)
        sync.client = sync._call(sync._client_type.attach(sync.sessions, sync.key, job_id, **kwargs))
        return sync

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def job_id(self) -> int:
        return int(self.client.job_id)

    def ask(self, content: str, **kwargs: Any) -> PromptResult:
        """The whole answer (``send_prompt`` read to the end)."""
        result: PromptResult = self._call(self.client.ask(content, **kwargs))
        return result

    def stream(self, content: str, **kwargs: Any) -> Iterator[str]:
        """Text chunks as they arrive; ``last_result`` holds the ``PromptResult`` afterwards."""
        prompt = self.client.send_prompt(content, **kwargs)
        while True:
            try:
                yield self._call(prompt.__anext__())
            except StopAsyncIteration:
                break
        self.last_result = prompt.result

    def end(self) -> SessionClosed:
        closed: SessionClosed = self._call(self.client.end())
        return closed

    def complete(self, job_id: int | None = None) -> Settlement:
        settlement: Settlement = self._call(self.client.complete(job_id))
        return settlement

    def resume_on(self, url: str, **kwargs: Any) -> SessionAck:
        ack: SessionAck = self._call(self.client.resume_on(url, **kwargs))
        return ack

    def close(self) -> None:
        """Close the socket (the job stays open), the chain connection and the loop thread."""

        async def shutdown() -> None:
            if self.client is not None:
                await self.client.close()
            await self._sender.close()
            await self._w3.provider.disconnect()

        try:
            self._call(shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> SyncSessionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
