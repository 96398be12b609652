"""``AsyncConversationStore``: every message stored at once, encrypted client-side, hash-linked, verified on read.

Append = seal the message (``prev`` = current head blob) → store the blob → compare-and-swap the head. The head
moves only after the blob is stored, so a failed append loses nothing that was there before. Appends from one
store instance are serialised per conversation; appends from other processes lose the compare-and-swap and are
redone on the new head (bounded), so no message is lost and none is duplicated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from dinfer.sdk.conversations._disk import etag
from dinfer.sdk.conversations.backends import ConversationBackend
from dinfer.sdk.conversations.crypto import ConversationKeys, SealError, blob_id, canonical_json
from dinfer.sdk.conversations.errors import (
    ConversationConflict,
    ConversationCorrupted,
    ConversationNotFound,
    HeadConflict,
    InvalidConversationInput,
    StoreBackendError,
)
from dinfer.sdk.conversations.export import render
from dinfer.sdk.conversations.local import LocalBackend
from dinfer.sdk.conversations.records import (
    Conversation,
    ConversationInfo,
    Head,
    Message,
    RecordError,
    Root,
    check_conversation_id,
    check_meta,
    check_role,
    new_conversation_id,
    parse_head,
    parse_message,
    parse_plain,
    parse_root,
)

log = logging.getLogger(__name__)

HEAD = "head"
ROOT = "root"
MESSAGE = "message"


class AsyncConversationStore:
    """Encrypted, content-addressed conversation history for one account.

    Example:
        >>> store = AsyncConversationStore(private_key)            # ~/.dinfer/conversations/<address>  # doctest: +SKIP
        >>> conv = await store.create_conversation("SmolLM2", {"job_id": 7})                       # doctest: +SKIP
        >>> await store.append(conv, "user", "Name three colours")                                  # doctest: +SKIP
        >>> (await store.get_conversation(conv)).context()                                           # doctest: +SKIP
        [{'role': 'user', 'content': 'Name three colours'}]
    """

    def __init__(self, private_key: str | bytes, backend: ConversationBackend | None = None, *,
                 max_append_attempts: int = 8, clock: Callable[[], float] = time.time) -> None:
        self._keys = ConversationKeys(private_key)
        self.backend: ConversationBackend = backend or LocalBackend.default_for(self._keys.address)
        self._max_attempts = max_append_attempts
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def address(self) -> str:
        return self._keys.address

    async def __aenter__(self) -> AsyncConversationStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.backend.aclose()

    # writes -----------------------------------------------------------------------------------------------------
    async def create_conversation(self, model: str, meta: dict[str, Any] | None = None) -> str:
        """Start a conversation for ``model``; returns its id (``meta``: any JSON, e.g. host, job id)."""
        if not isinstance(model, str) or not model:
            raise InvalidConversationInput("model must be a non-empty string")
        conv_id = new_conversation_id()
        now = float(self._clock())
        root = Root(model=model, created_at=now, meta=check_meta(meta), blob_id="")
        root_id = await self._put(conv_id, ROOT, root.to_plain(conv_id))
        head = Head(conversation=conv_id, owner=self.address, root=root_id, head=root_id, count=0, model=model,
                    created_at=now, updated_at=now)
        await self.backend.put_head(conv_id, self._seal_head(head), expected=None)
        return conv_id

    async def append(self, conversation_id: str, role: str, content: str,
                     meta: dict[str, Any] | None = None) -> Message:
        """Store one message now and move the head to it; returns the stored ``Message``.

        ``meta`` is free JSON; the session integration records ``{"job_id", "host", "tokens"}``.
        """
        check_conversation_id(conversation_id)
        check_role(role)
        if not isinstance(content, str):
            raise InvalidConversationInput(f"content must be a string, got {type(content).__name__}")
        meta = check_meta(meta)
        lock = self._locks.setdefault(conversation_id, asyncio.Lock())
        async with lock:
            for _ in range(self._max_attempts):
                head, tag = await self._read_head(conversation_id)
                message = Message(index=head.count, role=role, content=content, created_at=float(self._clock()),
                                  meta=meta, prev=head.head, blob_id="")
                mid = await self._put(conversation_id, MESSAGE, message.to_plain(conversation_id))
                try:
                    await self.backend.put_head(conversation_id, self._seal_head(head.advance(mid, message.created_at)),
                                                expected=tag)
                except HeadConflict:
                    if await self._head_points_to(conversation_id, mid):  # our write landed; the answer was lost
                        return replace(message, blob_id=mid)
                    await self._forget(mid)
                    continue
                return replace(message, blob_id=mid)
        raise ConversationConflict(conversation_id, self._max_attempts)

    async def delete_conversation(self, conversation_id: str) -> None:
        """Remove the head, then every blob reachable from it (a corrupted chain: as far as it is readable)."""
        check_conversation_id(conversation_id)
        raw = await self.backend.get_head(conversation_id)
        if raw is None:
            raise ConversationNotFound(conversation_id)
        blobs: list[str] = []
        try:
            head = self._open_head(conversation_id, raw)
            blobs.append(head.root)
            cursor = head.head
            while cursor != head.root and len(blobs) <= head.count + 1:
                blobs.append(cursor)
                cursor = (await self._read_message(conversation_id, cursor)).prev
        except ConversationCorrupted as exc:
            log.warning("deleting corrupted conversation %s: blobs past %s left in place", conversation_id,
                        exc.blob_id)
        await self.backend.delete_head(conversation_id)
        for bid in blobs:
            await self.backend.delete_blob(bid)

    # reads ------------------------------------------------------------------------------------------------------
    async def get_conversation(self, conversation_id: str) -> Conversation:
        """Every message, verified from the head back to the root: ids are hashes, links and indices are checked."""
        head, _ = await self._read_head(check_conversation_id(conversation_id))
        newest_first: list[Message] = []
        cursor = head.head
        for expected_index in range(head.count - 1, -1, -1):
            message = await self._read_message(conversation_id, cursor)
            if message.index != expected_index:
                raise ConversationCorrupted(conversation_id, cursor, f"broken chain: message index {message.index}, "
                                            f"expected {expected_index}")
            newest_first.append(message)
            cursor = message.prev
        if cursor != head.root:
            raise ConversationCorrupted(conversation_id, cursor, f"broken chain: first message links to {cursor}, "
                                        f"not the conversation root {head.root}")
        root = await self._read_root(conversation_id, head.root)
        return Conversation(id=conversation_id, model=root.model, meta=root.meta, created_at=root.created_at,
                            updated_at=head.updated_at, head=head.head, messages=newest_first[::-1])

    async def list_conversations(self) -> list[ConversationInfo]:
        """Every conversation of this account, newest activity first; a corrupted head is listed with the reason."""
        infos: list[ConversationInfo] = []
        for conv_id in await self.backend.list_heads():
            try:
                head, _ = await self._read_head(conv_id)
            except ConversationNotFound:
                continue  # deleted meanwhile
            except ConversationCorrupted as exc:
                infos.append(ConversationInfo(id=conv_id, corrupted=exc.reason))
                continue
            infos.append(ConversationInfo(id=conv_id, model=head.model, messages=head.count,
                                          created_at=head.created_at, updated_at=head.updated_at))
        return sorted(infos, key=lambda i: (-i.updated_at, i.id))

    async def export_conversation(self, conversation_id: str, format: str = "json") -> str:
        """The verified conversation as ``"json"`` or ``"markdown"`` text."""
        return render(await self.get_conversation(conversation_id), format)

    # internals --------------------------------------------------------------------------------------------------
    async def _put(self, conversation_id: str, kind: str, plain: dict[str, Any]) -> str:
        sealed = self._keys.seal(conversation_id, kind, canonical_json(plain))
        bid = blob_id(sealed)
        await self.backend.put_blob(bid, sealed)
        return bid

    def _seal_head(self, head: Head) -> bytes:
        record = head.unsigned()
        record["signature"] = self._keys.sign(record)
        return self._keys.seal(head.conversation, HEAD, canonical_json(record))

    def _open_head(self, conversation_id: str, raw: bytes) -> Head:
        where = f"head:{etag(raw)}"
        try:
            head, signature = parse_head(parse_plain(self._keys.open(conversation_id, HEAD, raw), conversation_id))
        except (SealError, RecordError) as exc:
            raise ConversationCorrupted(conversation_id, where, f"head: {exc}") from None
        if not self._keys.verify(head.unsigned(), signature) or head.owner != self.address:
            raise ConversationCorrupted(conversation_id, where, "head signature is not this account's")
        return head

    async def _read_head(self, conversation_id: str) -> tuple[Head, str]:
        raw = await self.backend.get_head(conversation_id)
        if raw is None:
            raise ConversationNotFound(conversation_id)
        return self._open_head(conversation_id, raw), etag(raw)

    async def _head_points_to(self, conversation_id: str, bid: str) -> bool:
        try:
            head, _ = await self._read_head(conversation_id)
        except (ConversationNotFound, ConversationCorrupted):
            return False
        return head.head == bid

    async def _forget(self, bid: str) -> None:
        try:
            await self.backend.delete_blob(bid)
        except StoreBackendError as exc:  # an orphan blob is harmless; never hide the real outcome for it
            log.debug("could not remove orphan blob %s: %s", bid, exc)

    async def _read_plain(self, conversation_id: str, bid: str, kind: str) -> dict[str, Any]:
        sealed = await self.backend.get_blob(bid)
        if sealed is None:
            raise ConversationCorrupted(conversation_id, bid, f"{kind} blob is missing from the store")
        if blob_id(sealed) != bid:
            raise ConversationCorrupted(conversation_id, bid, f"hash mismatch: the {kind} blob's sha256 is "
                                        f"{blob_id(sealed)}")
        try:
            return parse_plain(self._keys.open(conversation_id, kind, sealed), conversation_id)
        except (SealError, RecordError) as exc:
            raise ConversationCorrupted(conversation_id, bid, f"{kind} blob: {exc}") from None

    async def _read_message(self, conversation_id: str, bid: str) -> Message:
        plain = await self._read_plain(conversation_id, bid, MESSAGE)
        try:
            return parse_message(plain, bid)
        except RecordError as exc:
            raise ConversationCorrupted(conversation_id, bid, f"message blob: {exc}") from None

    async def _read_root(self, conversation_id: str, bid: str) -> Root:
        plain = await self._read_plain(conversation_id, bid, ROOT)
        try:
            return parse_root(plain, bid)
        except RecordError as exc:
            raise ConversationCorrupted(conversation_id, bid, f"root blob: {exc}") from None
