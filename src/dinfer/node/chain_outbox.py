"""The chain writer's outbox: start, reassign and finish records this node owes the chain, kept in SQLite until the
writer learns their outcome.

The writer batches records in memory (a start waits up to ``batch_max_delay_s``; a finish waits in the gate until its
start is on chain, then for its batch). A host killed in that window — after the client already has its answer —
would lose them: the answered inference expires and is refunded, its executor is never paid. With the outbox, a
restarted node queues every record it still owes again (``ChainWriter.replay``); records the chain already holds are
dropped first, so nothing is submitted twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, fields
from typing import Any

import aiosqlite

from dinfer.chain.contracts.inference import FinishRecord, ReassignRecord, StartRecord
from dinfer.node.store import NodeStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS chain_outbox (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    record TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (kind, id)
);
"""

ChainRecord = StartRecord | ReassignRecord | FinishRecord
KINDS: dict[str, type[ChainRecord]] = {"start": StartRecord, "reassign": ReassignRecord, "finish": FinishRecord}


def encode(record: ChainRecord) -> str:
    """JSON with bytes as ``0x`` hex and tuples as lists (the record dataclasses hold only these and str/int)."""
    return json.dumps({k: "0x" + v.hex() if isinstance(v, bytes) else v for k, v in asdict(record).items()})


def decode(kind: str, raw: str) -> ChainRecord:
    cls = KINDS[kind]
    data: dict[str, Any] = json.loads(raw)
    out: dict[str, Any] = {}
    for f in fields(cls):
        value = data[f.name]
        if f.type in ("bytes", bytes):
            value = bytes.fromhex(value[2:])
        elif isinstance(value, list):
            value = tuple(value)
        out[f.name] = value
    return cls(**out)


def record_id(record: ChainRecord) -> str:
    return "0x" + record.inference_id.hex()


class ChainOutbox:
    """``await ChainOutbox.open(store)``: the ``chain_outbox`` table on the node's one SQLite connection."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, store: NodeStore) -> ChainOutbox:
        return cls(await store.attach_schema(SCHEMA))

    async def put(self, kind: str, record: ChainRecord) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO chain_outbox (kind, id, record, created_at) VALUES (?, ?, ?, ?)",
            (kind, record_id(record), encode(record), time.time()),
        )

    async def done(self, kind: str, inference_id: str) -> None:
        await self._db.execute("DELETE FROM chain_outbox WHERE kind = ? AND id = ?", (kind, inference_id))

    async def pending(self) -> list[tuple[str, ChainRecord]]:
        """Every record still owed, oldest first (starts before the reassigns and finishes that need them)."""
        rows = await self._db.execute_fetchall("SELECT kind, record FROM chain_outbox ORDER BY created_at")
        order = {"start": 0, "reassign": 1, "finish": 2}
        return sorted(((str(k), decode(str(k), str(r))) for k, r in rows), key=lambda kr: order[kr[0]])
