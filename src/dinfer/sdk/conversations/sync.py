"""``ConversationStore``: the blocking twin of ``AsyncConversationStore`` (a private event loop on a thread)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from dinfer.sdk.conversations.backends import ConversationBackend
from dinfer.sdk.conversations.records import Conversation, ConversationInfo, Message
from dinfer.sdk.conversations.store import AsyncConversationStore

T = TypeVar("T")


class ConversationStore:
    """The same calls as ``AsyncConversationStore``, blocking.

    Example:
        >>> with ConversationStore(private_key, LocalBackend(tmp_dir)) as store:      # doctest: +SKIP
        ...     conv = store.create_conversation("SmolLM2")
        ...     store.append(conv, "user", "hello")
        ...     print(store.export_conversation(conv, format="markdown"))
    """

    def __init__(self, private_key: str | bytes, backend: ConversationBackend | None = None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="dinfer-conversations")
        self._thread.start()
        self.store = AsyncConversationStore(private_key, backend, **kwargs)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coro.close()
            raise RuntimeError("ConversationStore is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def address(self) -> str:
        return self.store.address

    def create_conversation(self, model: str, meta: dict[str, Any] | None = None) -> str:
        return self._call(self.store.create_conversation(model, meta))

    def append(self, conversation_id: str, role: str, content: str, meta: dict[str, Any] | None = None) -> Message:
        return self._call(self.store.append(conversation_id, role, content, meta))

    def get_conversation(self, conversation_id: str) -> Conversation:
        return self._call(self.store.get_conversation(conversation_id))

    def list_conversations(self) -> list[ConversationInfo]:
        return self._call(self.store.list_conversations())

    def export_conversation(self, conversation_id: str, format: str = "json") -> str:
        return self._call(self.store.export_conversation(conversation_id, format))

    def delete_conversation(self, conversation_id: str) -> None:
        self._call(self.store.delete_conversation(conversation_id))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self.store.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    def __enter__(self) -> ConversationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
