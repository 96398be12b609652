"""What the store keeps: conversation roots, hash-linked messages and the signed head — and their validation.

Every blob's plaintext is canonical JSON with ``"v": 1``:

- root (kind ``root``): ``{conversation, model, meta, created_at}`` — the first link of the chain;
- message (kind ``message``): ``{conversation, index, prev, role, content, created_at, meta}`` where ``prev`` is the
  previous message's blob id (the root's for index 0) — the hash chain;
- head (kind ``head``, mutable, one per conversation): ``{conversation, owner, root, head, count, model,
  created_at, updated_at}`` plus ``signature`` over the rest.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

from dinfer.sdk.conversations.errors import InvalidConversationInput

FORMAT_VERSION = 1
ROLES = frozenset({"system", "user", "assistant", "tool"})
_CONV_ID = re.compile(r"^[0-9a-f]{32}$")
_BLOB_ID = re.compile(r"^[0-9a-f]{64}$")


def new_conversation_id() -> str:
    """128 random bits, lowercase hex (the id is visible to the store; it says nothing about the content)."""
    return secrets.token_hex(16)


def check_conversation_id(value: str) -> str:
    if not isinstance(value, str) or not _CONV_ID.match(value):
        raise InvalidConversationInput(f"conversation id must be 32 lowercase hex characters, got {value!r}")
    return value


def check_blob_id(value: str) -> str:
    if not isinstance(value, str) or not _BLOB_ID.match(value):
        raise InvalidConversationInput(f"blob id must be 64 lowercase hex characters (sha256), got {value!r}")
    return value


def check_meta(meta: dict[str, Any] | None, what: str = "meta") -> dict[str, Any]:
    """A JSON object (string keys, JSON values); returned as a plain dict copy."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise InvalidConversationInput(f"{what} must be a dict, got {type(meta).__name__}")
    try:
        result: dict[str, Any] = orjson.loads(orjson.dumps(meta))
    except TypeError as exc:
        raise InvalidConversationInput(f"{what} must be JSON-serialisable: {exc}") from None
    return result


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidConversationInput(f"role must be one of {sorted(ROLES)}, got {role!r}")
    return role


@dataclass(frozen=True)
class Message:
    """One stored message. ``blob_id`` is its content address; ``prev`` the blob it links to."""

    index: int
    role: str
    content: str
    created_at: float
    meta: dict[str, Any]
    prev: str
    blob_id: str

    def to_plain(self, conversation_id: str) -> dict[str, Any]:
        return {"v": FORMAT_VERSION, "conversation": conversation_id, "index": self.index, "prev": self.prev,
                "role": self.role, "content": self.content, "created_at": self.created_at, "meta": self.meta}


@dataclass(frozen=True)
class Root:
    """The first link: which model, when, and the caller's metadata."""

    model: str
    created_at: float
    meta: dict[str, Any]
    blob_id: str

    def to_plain(self, conversation_id: str) -> dict[str, Any]:
        return {"v": FORMAT_VERSION, "conversation": conversation_id, "model": self.model,
                "created_at": self.created_at, "meta": self.meta}


@dataclass(frozen=True)
class Head:
    """The mutable pointer to a conversation's last blob (signed by ``owner``)."""

    conversation: str
    owner: str
    root: str
    head: str
    count: int
    model: str
    created_at: float
    updated_at: float

    def unsigned(self) -> dict[str, Any]:
        return {"v": FORMAT_VERSION, **asdict(self)}

    def advance(self, blob: str, now: float) -> Head:
        return replace(self, head=blob, count=self.count + 1, updated_at=now)


@dataclass(frozen=True)
class Conversation:
    """A conversation read back and verified along its hash chain."""

    id: str
    model: str
    meta: dict[str, Any]
    created_at: float
    updated_at: float
    head: str
    messages: list[Message] = field(default_factory=list)

    def context(self) -> list[dict[str, str]]:
        """``[{role, content}, …]`` — what ``session_resume`` / an OpenAI ``messages`` list needs."""
        return [{"role": m.role, "content": m.content} for m in self.messages]


@dataclass(frozen=True)
class ConversationInfo:
    """One line of ``list_conversations``; ``corrupted`` holds the reason when the head fails its check."""

    id: str
    model: str = ""
    messages: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    corrupted: str | None = None


class RecordError(ValueError):
    """A decrypted record does not have the expected shape (becomes ``ConversationCorrupted``)."""


def _field(plain: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = plain.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise RecordError(f"field {name!r} missing or not {getattr(kind, '__name__', kind)}")
    return value


def parse_plain(data: bytes, conversation_id: str) -> dict[str, Any]:
    try:
        plain = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise RecordError("not JSON") from None
    if not isinstance(plain, dict) or plain.get("v") != FORMAT_VERSION:
        raise RecordError(f"not a version {FORMAT_VERSION} record")
    if plain.get("conversation") != conversation_id:
        raise RecordError(f"belongs to conversation {plain.get('conversation')!r}")
    return plain


def parse_root(plain: dict[str, Any], blob_id: str) -> Root:
    return Root(model=_field(plain, "model", str), created_at=float(_field(plain, "created_at", (int, float))),
                meta=_field(plain, "meta", dict), blob_id=blob_id)


def parse_message(plain: dict[str, Any], blob_id: str) -> Message:
    role = _field(plain, "role", str)
    if role not in ROLES:
        raise RecordError(f"unknown role {role!r}")
    index = _field(plain, "index", int)
    prev = _field(plain, "prev", str)
    if index < 0 or not _BLOB_ID.match(prev):
        raise RecordError("bad index or prev link")
    return Message(index=index, role=role, content=_field(plain, "content", str),
                   created_at=float(_field(plain, "created_at", (int, float))), meta=_field(plain, "meta", dict),
                   prev=prev, blob_id=blob_id)


def parse_head(plain: dict[str, Any]) -> tuple[Head, str]:
    """(head, signature); the caller checks the signature over ``head.unsigned()``."""
    head = Head(conversation=_field(plain, "conversation", str), owner=_field(plain, "owner", str),
                root=_field(plain, "root", str), head=_field(plain, "head", str), count=_field(plain, "count", int),
                model=_field(plain, "model", str), created_at=float(_field(plain, "created_at", (int, float))),
                updated_at=float(_field(plain, "updated_at", (int, float))))
    if head.count < 0 or not _BLOB_ID.match(head.root) or not _BLOB_ID.match(head.head):
        raise RecordError("bad count or blob links")
    return head, _field(plain, "signature", str)
