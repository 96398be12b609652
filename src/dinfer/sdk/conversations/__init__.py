"""Conversation store: encrypted (XChaCha20-Poly1305, keys derived from the account key), content-addressed,
hash-linked history in a local directory or on a ``dinfer store`` server. See docs/sdk/conversations.md."""

from dinfer.sdk.conversations.backends import ConversationBackend
from dinfer.sdk.conversations.crypto import ConversationKeys
from dinfer.sdk.conversations.errors import (
    BlobTooLarge,
    ConversationConflict,
    ConversationCorrupted,
    ConversationError,
    ConversationNotFound,
    HeadConflict,
    InvalidConversationInput,
    StoreAuthRejected,
    StoreBackendError,
    StoreUnavailable,
)
from dinfer.sdk.conversations.http import HttpBackend
from dinfer.sdk.conversations.local import LocalBackend
from dinfer.sdk.conversations.records import Conversation, ConversationInfo, Message
from dinfer.sdk.conversations.store import AsyncConversationStore
from dinfer.sdk.conversations.sync import ConversationStore

__all__ = [
    "AsyncConversationStore",
    "BlobTooLarge",
    "Conversation",
    "ConversationBackend",
    "ConversationConflict",
    "ConversationCorrupted",
    "ConversationError",
    "ConversationInfo",
    "ConversationKeys",
    "ConversationNotFound",
    "ConversationStore",
    "HeadConflict",
    "HttpBackend",
    "InvalidConversationInput",
    "LocalBackend",
    "Message",
    "StoreAuthRejected",
    "StoreBackendError",
    "StoreUnavailable",
]
