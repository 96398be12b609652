"""Errors of the conversation store.

The tree::

    DinferError
    └── ConversationError
        ├── ConversationNotFound       no head for this id in the backend (never created, or deleted)
        ├── ConversationCorrupted      a blob or the head fails its integrity check (names conversation and blob)
        ├── ConversationConflict       other writers kept moving the head; the message was not appended
        ├── InvalidConversationInput   bad id, role, meta or export format (also a ``ValueError``)
        └── StoreBackendError          the backend failed
            ├── StoreUnavailable       the store cannot be reached or answers 5xx (after retries)
            ├── StoreAuthRejected      the store refused a write signature (401 / 403)
            ├── BlobTooLarge           a blob or head is over the store's size limit (413)
            └── HeadConflict           compare-and-swap of the head lost (the store retries it)
"""

from __future__ import annotations

from dinfer.errors import DinferError


class ConversationError(DinferError):
    """Root of the conversation store's errors."""


class ConversationNotFound(ConversationError, KeyError):
    """No conversation with this id in the backend."""

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"conversation {conversation_id} not found (never created here, or deleted)")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ConversationCorrupted(ConversationError):
    """A blob of one conversation failed its integrity check; other conversations are not affected."""

    def __init__(self, conversation_id: str, blob_id: str, reason: str) -> None:
        self.conversation_id = conversation_id
        self.blob_id = blob_id
        self.reason = reason
        super().__init__(
            f"conversation {conversation_id} is corrupted at blob {blob_id}: {reason} "
            "(the stored data was altered or damaged; restore it from a backup or export, or delete the conversation)"
        )


class ConversationConflict(ConversationError):
    """Concurrent writers moved the head every time we tried; nothing was appended, so retrying is safe."""

    def __init__(self, conversation_id: str, attempts: int) -> None:
        self.conversation_id = conversation_id
        super().__init__(
            f"conversation {conversation_id}: the head moved under {attempts} append attempts (another writer is "
            "appending); nothing was appended — retry the append"
        )


class InvalidConversationInput(ConversationError, ValueError):
    """An argument is out of range; the message names it."""


class StoreBackendError(ConversationError):
    """The storage backend failed."""


class StoreUnavailable(StoreBackendError):
    """The store cannot be reached, or keeps failing (after retries)."""


class StoreAuthRejected(StoreBackendError):
    """The store refused the write signature (HTTP 401 unsigned/stale, 403 not the namespace owner)."""

    def __init__(self, message: str, *, status: int) -> None:
        self.status = status
        super().__init__(message)


class BlobTooLarge(StoreBackendError):
    """A blob or head is over the store's size limit (HTTP 413)."""


class HeadConflict(StoreBackendError):
    """The head is not the one the write expected (compare-and-swap lost)."""
