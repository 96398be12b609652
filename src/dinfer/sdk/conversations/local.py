"""``LocalBackend``: conversations in a local directory (default ``~/.dinfer/conversations/<address>``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dinfer.sdk.conversations._disk import DiskStore

DEFAULT_ROOT = Path("~/.dinfer/conversations")


class LocalBackend:
    """Blobs and heads under ``root`` with atomic-rename writes; heads are swapped under a file lock, so several
    processes may share the directory.

    Example:
        >>> backend = LocalBackend("/tmp/my-conversations")          # doctest: +SKIP
    """

    def __init__(self, root: Path | str) -> None:
        self._disk = DiskStore(root)

    @classmethod
    def default_for(cls, address: str, base: Path | str = DEFAULT_ROOT) -> LocalBackend:
        """The default namespace of one account: ``<base>/<lowercase address>``."""
        return cls(Path(base).expanduser() / address.lower())

    @property
    def root(self) -> Path:
        return self._disk.root

    async def put_blob(self, blob_id: str, data: bytes) -> None:
        await asyncio.to_thread(self._disk.put_blob, blob_id, data)

    async def get_blob(self, blob_id: str) -> bytes | None:
        return await asyncio.to_thread(self._disk.get_blob, blob_id)

    async def delete_blob(self, blob_id: str) -> None:
        await asyncio.to_thread(self._disk.delete_blob, blob_id)

    async def get_head(self, conversation_id: str) -> bytes | None:
        return await asyncio.to_thread(self._disk.get_head, conversation_id)

    async def put_head(self, conversation_id: str, data: bytes, *, expected: str | None) -> None:
        await asyncio.to_thread(self._disk.put_head, conversation_id, data, expected=expected)

    async def delete_head(self, conversation_id: str) -> None:
        await asyncio.to_thread(self._disk.delete_head, conversation_id)

    async def list_heads(self) -> list[str]:
        return await asyncio.to_thread(self._disk.list_heads)

    async def aclose(self) -> None:
        return None
