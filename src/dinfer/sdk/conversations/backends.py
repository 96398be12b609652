"""The one protocol every conversation backend implements (local directory, HTTP ``dinfer store``).

A backend is one owner's namespace of immutable content-addressed blobs plus one mutable head per conversation,
replaced by compare-and-swap on its etag (sha256 of the stored head bytes). Backends see only sealed bytes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ConversationBackend(Protocol):
    """Storage for sealed blobs and heads. Raise ``HeadConflict`` from ``put_head`` when ``expected`` is stale."""

    async def put_blob(self, blob_id: str, data: bytes) -> None:
        """Store ``data`` under ``blob_id`` (= sha256(data)); idempotent."""
        ...

    async def get_blob(self, blob_id: str) -> bytes | None:
        """The blob's bytes, ``None`` when absent."""
        ...

    async def delete_blob(self, blob_id: str) -> None:
        """Remove a blob; absent is fine."""
        ...

    async def get_head(self, conversation_id: str) -> bytes | None:
        """The head's bytes, ``None`` when the conversation does not exist."""
        ...

    async def put_head(self, conversation_id: str, data: bytes, *, expected: str | None) -> None:
        """Replace the head if its etag is ``expected`` (``None``: create only)."""
        ...

    async def delete_head(self, conversation_id: str) -> None:
        """Remove the head; absent is fine."""
        ...

    async def list_heads(self) -> list[str]:
        """Ids of every conversation with a head."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
