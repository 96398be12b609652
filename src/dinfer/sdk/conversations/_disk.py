"""Content-addressed blobs and compare-and-swap heads in one directory (blocking; used by ``LocalBackend`` through
a thread and by the ``dinfer store`` service).

Layout::

    <root>/blobs/<id[:2]>/<id>      sealed blobs, named by sha256 of their bytes (immutable)
    <root>/heads/<conversation id>  sealed head records (replaced atomically)
    <root>/heads/.lock              flock taken around every head compare-and-swap (safe across processes)

Every write goes to a temporary file in the target directory, is fsynced, then ``os.replace``d into place, so a
crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dinfer.sdk.conversations.errors import HeadConflict, InvalidConversationInput
from dinfer.sdk.conversations.records import check_blob_id, check_conversation_id

_TMP_PREFIX = ".tmp-"


def etag(data: bytes) -> str:
    """Version tag of a head: sha256 hex of its stored bytes."""
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via temp file + fsync + rename (+ directory fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class DiskStore:
    """One owner's namespace on disk."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser()
        self._blobs = self.root / "blobs"
        self._heads = self.root / "heads"

    def _blob_path(self, blob_id: str) -> Path:
        check_blob_id(blob_id)
        return self._blobs / blob_id[:2] / blob_id

    def _head_path(self, conversation_id: str) -> Path:
        return self._heads / check_conversation_id(conversation_id)

    # blobs ------------------------------------------------------------------------------------------------------
    def put_blob(self, blob_id: str, data: bytes) -> None:
        """Store ``data`` under its sha256; a no-op when it is already there (content-addressed)."""
        if hashlib.sha256(data).hexdigest() != blob_id:
            raise InvalidConversationInput(f"blob id {blob_id} is not the sha256 of the data")
        path = self._blob_path(blob_id)
        if not path.exists():
            atomic_write(path, data)

    def get_blob(self, blob_id: str) -> bytes | None:
        try:
            return self._blob_path(blob_id).read_bytes()
        except FileNotFoundError:
            return None

    def has_blob(self, blob_id: str) -> bool:
        return self._blob_path(blob_id).is_file()

    def delete_blob(self, blob_id: str) -> bool:
        path = self._blob_path(blob_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def list_blobs(self, *, after: str = "", limit: int = 1000) -> list[str]:
        """Blob ids in ascending order, strictly after ``after``, at most ``limit``."""
        if not self._blobs.is_dir():
            return []
        ids: list[str] = []
        for shard in sorted(p for p in self._blobs.iterdir() if p.is_dir() and p.name >= after[:2]):
            for name in sorted(os.listdir(shard)):
                if not name.startswith(_TMP_PREFIX) and name > after:
                    ids.append(name)
                    if len(ids) >= limit:
                        return ids
        return ids

    # heads ------------------------------------------------------------------------------------------------------
    @contextmanager
    def _head_lock(self) -> Iterator[None]:
        self._heads.mkdir(parents=True, exist_ok=True)
        with open(self._heads / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def get_head(self, conversation_id: str) -> bytes | None:
        try:
            return self._head_path(conversation_id).read_bytes()
        except FileNotFoundError:
            return None

    def put_head(self, conversation_id: str, data: bytes, *, expected: str | None) -> None:
        """Replace the head only if its current etag is ``expected`` (``None``: only if there is none yet)."""
        path = self._head_path(conversation_id)
        with self._head_lock():
            try:
                current: str | None = etag(path.read_bytes())
            except FileNotFoundError:
                current = None
            if current != expected:
                raise HeadConflict(f"head of {conversation_id} is {current or 'absent'}, expected "
                                   f"{expected or 'absent'}")
            atomic_write(path, data)

    def delete_head(self, conversation_id: str) -> bool:
        path = self._head_path(conversation_id)
        with self._head_lock():
            try:
                path.unlink()
            except FileNotFoundError:
                return False
        return True

    def list_heads(self) -> list[str]:
        if not self._heads.is_dir():
            return []
        return sorted(n for n in os.listdir(self._heads) if not n.startswith(".") and len(n) == 32)
