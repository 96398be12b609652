"""``InferenceManager``: ``AsyncInferenceManager``'s calls, blocking, on a ``DinferClient``'s event loop thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dinfer.sdk._client_sync import DinferClient
from dinfer.sdk.conversations import AsyncConversationStore
from dinfer.sdk.conversations.records import Conversation
from dinfer.sdk.discovery import UnifiedDiscovery
from dinfer.sdk.hosts import HostRecord
from dinfer.sdk.manager import (
    AsyncInferenceManager,
    Criteria,
    JobSegment,
    ManagedResult,
    ManagedSession,
    ManagedSettlement,
    ManagedUsage,
    ManagerOptions,
    StreamCallback,
)
from dinfer.sdk.selection import HostSelector

__all__ = ["InferenceManager"]


class InferenceManager:
    """Blocking twin of ``AsyncInferenceManager``; the work runs on the ``DinferClient``'s loop (one chain connection,
    one nonce counter). Async parts passed in (discovery, selector, store) are used on that loop.

    Example:
        >>> with DinferClient.from_devnet(DEVNET_JSON, KEY) as client, InferenceManager(client) as manager:
        ...     session = manager.open_session(MODEL, 10**15, criteria="lowest_price")     # doctest: +SKIP
        ...     print(manager.send_prompt(session, "Hello", stream=print).content)
        ...     manager.close(session)
    """

    def __init__(self, client: DinferClient, *, discovery: UnifiedDiscovery | None = None,
                 selector: HostSelector | None = None, conversations: AsyncConversationStore | None = None,
                 conversations_dir: str | Path | None = None, options: ManagerOptions | None = None) -> None:
        self.client = client

        async def build() -> AsyncInferenceManager:  # built on the loop: its locks and clients live there
            return AsyncInferenceManager(client.aclient, discovery=discovery, selector=selector,
                                         conversations=conversations, conversations_dir=conversations_dir,
                                         options=options)

        self.amanager = client._call(build())

    def open_session(self, model: str, deposit: int, host: str | HostRecord | None = None,
                     criteria: Criteria | dict[str, Any] | str | None = None, price_per_token: int | None = None,
                     *, conversation_id: str | None = None) -> ManagedSession:
        return self.client._call(self.amanager.open_session(model, deposit, host, criteria, price_per_token,
                                                            conversation_id=conversation_id))

    def send_prompt(self, session: ManagedSession, prompt: str, *, stream: StreamCallback | None = None,
                    **kwargs: Any) -> ManagedResult:
        """The whole answer; ``stream`` is called with each chunk (on the client's loop thread)."""
        return self.client._call(self.amanager.ask(session, prompt, stream=stream, **kwargs))

    def stream(self, session: ManagedSession, prompt: str, **kwargs: Any) -> Iterator[str]:
        """Text chunks as they arrive; ``session.last_result`` holds the ``ManagedResult`` afterwards."""
        prompt_stream = self.amanager.send_prompt(session, prompt, **kwargs)

        async def step() -> str:
            return await prompt_stream.__anext__()

        finished = False
        try:
            while True:
                try:
                    yield self.client._call(step())
                except StopAsyncIteration:
                    finished = True
                    return
        finally:
            if not finished:
                self.client._call(prompt_stream.aclose())

    def switch_host(self, session: ManagedSession, new_host: str | HostRecord | None = None) -> JobSegment:
        return self.client._call(self.amanager.switch_host(session, new_host))

    def get_usage(self, session: ManagedSession) -> ManagedUsage:
        return self.client._call(self.amanager.get_usage(session))

    def get_conversation(self, session: ManagedSession | str) -> Conversation:
        return self.client._call(self.amanager.get_conversation(session))

    def close(self, session: ManagedSession) -> ManagedSettlement:
        return self.client._call(self.amanager.close(session))

    def shutdown(self) -> None:
        """Close what the manager built (the client stays open)."""
        self.client._call(self.amanager.aclose())

    def __enter__(self) -> InferenceManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
