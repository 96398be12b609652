"""The host node's SQLite store (aiosqlite, WAL): KV markers, inference records, payloads, event cursors.

One file per node (``<data_dir>/node.sqlite``). Every multi-row change is one transaction, so a crash never leaves
half an inference record. The event listener's cursors live in the same file (``SqliteCursorStore`` table).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS inferences (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    model TEXT NOT NULL,
    client TEXT NOT NULL,
    ta TEXT NOT NULL,
    executor TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS inferences_created ON inferences (created_at);
CREATE TABLE IF NOT EXISTS payloads (
    id TEXT PRIMARY KEY,
    request BLOB NOT NULL,
    response BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS payloads_created ON payloads (created_at);
"""


def seen_key(inference_id: str) -> str:
    """KV key of the marker written before dispatch (Gonka's ``inference_seen/<inferenceId>``)."""
    return f"inference_seen/{inference_id}"


@dataclass
class InferenceRecord:
    """What this node knows about one inference (as TA, executor, or both)."""

    id: str
    role: str
    """``ta``, ``executor`` or ``ta+executor``."""
    model: str
    client: str
    ta: str
    executor: str = ""
    status: str = "RECEIVED"
    """HTTP side: RECEIVED → STREAMING → COMPLETED | FAILED; REJECTED when the contract refused the start.
    The chain side (started/finished/expired) is in ``txs`` and on chain (``GET /v1/inference/{id}`` merges both)."""
    skipped: list[str] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    """One entry per executor tried: ``{"executor", "outcome", "ms"}``."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_wei: int = 0
    price_per_token: int = 0
    reserved_wei: int = 0
    """Escrow the TA reserved for this inference (prompt upper bound + max_tokens) × price."""
    txs: dict[str, str] = field(default_factory=dict)
    """``start`` / ``finish`` / ``reassign`` → tx hash."""
    error: str = ""
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    _COLUMNS = ("id", "role", "model", "client", "ta", "executor", "status", "created_at", "updated_at")

    def to_row(self) -> tuple[Any, ...]:
        data = {k: v for k, v in asdict(self).items() if k not in self._COLUMNS}
        return (self.id, self.role, self.model, self.client, self.ta, self.executor, self.status,
                json.dumps(data), self.created_at, self.updated_at)

    @classmethod
    def from_row(cls, row: Any) -> InferenceRecord:
        data = json.loads(row[7])
        return cls(id=row[0], role=row[1], model=row[2], client=row[3], ta=row[4], executor=row[5], status=row[6],
                   created_at=row[8], updated_at=row[9], **data)


class NodeStore:
    """Async access to the node's SQLite file. ``await NodeStore.open(path)``; ``await store.close()``."""

    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        self._db = db
        self.path = path

    @classmethod
    async def open(cls, path: Path | str) -> NodeStore:
        path = str(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.executescript(SCHEMA)
        await db.commit()
        return cls(db, path)

    async def close(self) -> None:
        await self._db.close()

    # ------------------------------------------------------------ KV

    async def kv_get(self, key: str) -> str | None:
        async with self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def kv_set(self, key: str, value: str) -> None:
        await self._db.execute(
            "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (key, value, time.time()),
        )
        await self._db.commit()

    async def kv_set_if_absent(self, key: str, value: str) -> bool:
        """Atomically create ``key``; False when it already existed (replay / duplicate detection)."""
        cur = await self._db.execute(
            "INSERT OR IGNORE INTO kv (key, value, updated_at) VALUES (?, ?, ?)", (key, value, time.time())
        )
        await self._db.commit()
        return cur.rowcount == 1

    async def kv_delete(self, key: str) -> None:
        await self._db.execute("DELETE FROM kv WHERE key = ?", (key,))
        await self._db.commit()

    async def kv_prefix(self, prefix: str) -> dict[str, str]:
        """Every key starting with ``prefix`` (e.g. ``mlnode/``) and its value."""
        async with self._db.execute("SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key",
                                    (prefix, prefix + "\uffff")) as cur:
            rows = await cur.fetchall()
        return {str(k): str(v) for k, v in rows}

    # ------------------------------------------------------------ inferences

    async def put_inference(self, record: InferenceRecord) -> None:
        record.updated_at = time.time()
        await self._db.execute(
            "INSERT INTO inferences (id, role, model, client, ta, executor, status, data, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET role = excluded.role, executor = excluded.executor,"
            " status = excluded.status, data = excluded.data, updated_at = excluded.updated_at",
            record.to_row(),
        )
        await self._db.commit()

    async def get_inference(self, inference_id: str) -> InferenceRecord | None:
        async with self._db.execute(
            "SELECT id, role, model, client, ta, executor, status, data, created_at, updated_at"
            " FROM inferences WHERE id = ?", (inference_id,)
        ) as cur:
            row = await cur.fetchone()
        return InferenceRecord.from_row(row) if row else None

    async def recent_inferences(self, limit: int = 50) -> list[InferenceRecord]:
        async with self._db.execute(
            "SELECT id, role, model, client, ta, executor, status, data, created_at, updated_at"
            " FROM inferences ORDER BY created_at DESC LIMIT ?", (limit,)
        ) as cur:
            rows = await cur.fetchall()
        return [InferenceRecord.from_row(r) for r in rows]

    # ------------------------------------------------------------ payloads (for validators)

    async def put_payload(self, inference_id: str, request: bytes, response: bytes) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO payloads (id, request, response, created_at) VALUES (?, ?, ?, ?)",
            (inference_id, request, response, time.time()),
        )
        await self._db.commit()

    async def get_payload(self, inference_id: str) -> tuple[bytes, bytes] | None:
        async with self._db.execute("SELECT request, response FROM payloads WHERE id = ?", (inference_id,)) as cur:
            row = await cur.fetchone()
        return (bytes(row[0]), bytes(row[1])) if row else None

    async def prune_payloads(self, older_than_s: float) -> int:
        """Drop payloads past the retention window; returns how many went."""
        cur = await self._db.execute("DELETE FROM payloads WHERE created_at < ?", (time.time() - older_than_s,))
        await self._db.commit()
        return cur.rowcount
