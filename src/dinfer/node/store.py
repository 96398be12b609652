"""The host node's SQLite store (aiosqlite, WAL): KV, inference records, payloads, event cursors; and the
``inference_seen`` markers, kept in a file of their own next to it (``node-markers.sqlite``, ``dinfer.node.markers``).

One file per node (``<data_dir>/node.sqlite``), one connection in autocommit mode: every statement is its own
transaction (each change here is a single statement, so a crash never leaves half a record) and every read is
fetched whole, so no read snapshot stays open across an ``await`` — an open snapshot is what turns a concurrent
write into a permanent ``database is locked``. The event listener's cursors use the same connection
(``cursor_store()``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from dinfer.chain.events import SqliteCursorStore
from dinfer.node.markers import SeenMarkers

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


def _prefix_range(prefix: str) -> tuple[str, str]:
    """The ``key >= ? AND key < ?`` bounds of every key starting with ``prefix``."""
    return prefix, prefix + "\uffff"


LEGACY_SEEN_PREFIX = "inference_seen/"
"""Where the markers lived in the KV table before they had their own file; moved over when the store opens."""


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

    def __init__(self, db: aiosqlite.Connection, path: str, seen: SeenMarkers) -> None:
        self._db = db
        self.path = path
        self.seen = seen
        """The ``inference_seen`` markers (synchronous: see ``dinfer.node.markers``)."""

    @classmethod
    async def open(cls, path: Path | str) -> NodeStore:
        path = str(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=5000")
        await db.executescript(SCHEMA)
        memory = path == ":memory:"
        seen = SeenMarkers.open(":memory:" if memory else Path(path).with_name(Path(path).stem + "-markers.sqlite"))
        store = cls(db, path, seen)
        legacy = await store.kv_prefix(LEGACY_SEEN_PREFIX)
        if legacy:  # markers written by an older version: into the markers file, then out of the KV table
            seen.add_many({key.removeprefix(LEGACY_SEEN_PREFIX): value for key, value in legacy.items()})
            await store.kv_delete_prefix(LEGACY_SEEN_PREFIX)
        return store

    async def attach_schema(self, schema: str) -> aiosqlite.Connection:
        """Create another module's tables (sessions, PoC leaves) on this store's connection and hand it over: the
        node keeps one SQLite connection, so nobody else opens the file."""
        await self._db.executescript(schema)
        return self._db

    def cursor_store(self) -> SqliteCursorStore:
        """Event-listener cursors on this same connection (one writer per file)."""
        return SqliteCursorStore.on_connection(self._db)

    async def close(self) -> None:
        await self._db.close()
        self.seen.close()

    # ------------------------------------------------------------ KV

    async def kv_get(self, key: str) -> str | None:
        rows = list(await self._db.execute_fetchall("SELECT value FROM kv WHERE key = ?", (key,)))
        return str(rows[0][0]) if rows else None

    async def kv_set(self, key: str, value: str) -> None:
        await self._db.execute(
            "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (key, value, time.time()),
        )

    async def kv_set_if_absent(self, key: str, value: str) -> bool:
        """Atomically create ``key``; False when it already existed (replay / duplicate detection)."""
        cur = await self._db.execute(
            "INSERT OR IGNORE INTO kv (key, value, updated_at) VALUES (?, ?, ?)", (key, value, time.time())
        )
        return cur.rowcount == 1

    async def kv_delete(self, key: str) -> None:
        await self._db.execute("DELETE FROM kv WHERE key = ?", (key,))

    async def kv_prefix(self, prefix: str) -> dict[str, str]:
        """Every key starting with ``prefix`` (e.g. ``mlnode/``) and its value."""
        rows = await self._db.execute_fetchall("SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key",
                                               _prefix_range(prefix))
        return {str(k): str(v) for k, v in rows}

    async def kv_delete_prefix(self, prefix: str) -> None:
        """Delete every key starting with ``prefix``."""
        await self._db.execute("DELETE FROM kv WHERE key >= ? AND key < ?", _prefix_range(prefix))

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

    async def get_inference(self, inference_id: str) -> InferenceRecord | None:
        rows = list(await self._db.execute_fetchall(
            "SELECT id, role, model, client, ta, executor, status, data, created_at, updated_at"
            " FROM inferences WHERE id = ?", (inference_id,)
        ))
        return InferenceRecord.from_row(rows[0]) if rows else None

    async def recent_inferences(self, limit: int = 50) -> list[InferenceRecord]:
        rows = await self._db.execute_fetchall(
            "SELECT id, role, model, client, ta, executor, status, data, created_at, updated_at"
            " FROM inferences ORDER BY created_at DESC LIMIT ?", (limit,)
        )
        return [InferenceRecord.from_row(r) for r in rows]

    # ------------------------------------------------------------ payloads (for validators)

    async def put_payload(self, inference_id: str, request: bytes, response: bytes) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO payloads (id, request, response, created_at) VALUES (?, ?, ?, ?)",
            (inference_id, request, response, time.time()),
        )

    async def get_payload(self, inference_id: str) -> tuple[bytes, bytes] | None:
        rows = list(await self._db.execute_fetchall("SELECT request, response FROM payloads WHERE id = ?",
                                                    (inference_id,)))
        return (bytes(rows[0][0]), bytes(rows[0][1])) if rows else None

    async def prune_payloads(self, older_than_s: float) -> int:
        """Drop payloads past the retention window; returns how many went."""
        cur = await self._db.execute("DELETE FROM payloads WHERE created_at < ?", (time.time() - older_than_s,))
        return cur.rowcount
