"""SQLite state of the session jobs this host serves (tables on ``NodeStore``'s one connection).

Every change is a single statement (the connection is in autocommit mode), so a crash never leaves half an
update: billing is ``cumulative_tokens = cumulative_tokens + n``, a nonce is an ``INSERT OR IGNORE`` and the
message index moves only forward (``WHERE last_message_index < new``). Callers serialise the read-modify-write
sequences of one job with the service's per-job lock.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from dinfer.node.store import NodeStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS session_jobs (
    job_id INTEGER PRIMARY KEY,
    client TEXT NOT NULL,
    host TEXT NOT NULL,
    model TEXT NOT NULL,
    cumulative_tokens INTEGER NOT NULL DEFAULT 0,
    proven_tokens INTEGER NOT NULL DEFAULT 0,
    receipt_tokens INTEGER NOT NULL DEFAULT 0,
    receipt_signature TEXT NOT NULL DEFAULT '',
    checkpoints INTEGER NOT NULL DEFAULT 0,
    proof_checkpoint INTEGER NOT NULL DEFAULT 0,
    pending_proof_target INTEGER NOT NULL DEFAULT 0,
    last_message_index INTEGER NOT NULL DEFAULT -1,
    context TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL DEFAULT 'ACTIVE',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS session_nonces (
    job_id INTEGER NOT NULL,
    nonce TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (job_id, nonce)
);
CREATE TABLE IF NOT EXISTS session_proofs (
    job_id INTEGER NOT NULL,
    tx_hash TEXT NOT NULL,
    tokens_claimed INTEGER NOT NULL,
    cumulative_tokens INTEGER NOT NULL,
    signed INTEGER NOT NULL,
    created_at REAL NOT NULL
);
"""

JWT_SECRET_KEY = "session/jwt_secret"
"""NodeStore kv key of this node's random JWT secret (HS256)."""

_COLUMNS = ("job_id, client, host, model, cumulative_tokens, proven_tokens, receipt_tokens, receipt_signature, "
            "checkpoints, proof_checkpoint, pending_proof_target, last_message_index, context, state")


@dataclass
class ContextEntry:
    """One message of a session's server-side context, with its content's token count."""

    role: str
    content: str
    tokens: int

    def as_message(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass
class SessionRecord:
    """What this host knows about one session job."""

    job_id: int
    client: str
    host: str
    model: str
    cumulative_tokens: int = 0
    """Tokens billed (prompt + completion of every generation)."""
    proven_tokens: int = 0
    """Tokens claimed on chain (re-read from ``Sessions.get_token_usage``)."""
    receipt_tokens: int = 0
    """Cumulative count of the latest client receipt."""
    receipt_signature: str = ""
    checkpoints: int = 0
    """Receipt requests sent (one per crossed multiple of ``checkpoint_tokens``)."""
    proof_checkpoint: int = 0
    """``checkpoints`` when the last proof was submitted."""
    pending_proof_target: int = 0
    """Cumulative total an in-flight proof transaction will reach (0: none); guards against double claims."""
    last_message_index: int = -1
    context: list[ContextEntry] = field(default_factory=list)
    state: str = "ACTIVE"
    """ACTIVE, or ENDED after ``session_end`` (the chain is authoritative for settlement)."""

    @property
    def context_tokens(self) -> int:
        return sum(e.tokens for e in self.context)

    @classmethod
    def from_row(cls, row: Any) -> SessionRecord:
        entries = [ContextEntry(**e) for e in json.loads(row[12])]
        return cls(int(row[0]), str(row[1]), str(row[2]), str(row[3]), *(int(v) for v in row[4:7]), str(row[7]),
                   *(int(v) for v in row[8:12]), context=entries, state=str(row[13]))


class SessionStore:
    """Session tables on the node's SQLite connection. ``await SessionStore.open(node_store)``."""

    def __init__(self, node_store: NodeStore, db: aiosqlite.Connection) -> None:
        self.node_store = node_store
        self._db = db

    @classmethod
    async def open(cls, node_store: NodeStore) -> SessionStore:
        return cls(node_store, await node_store.attach_schema(SCHEMA))

    # ------------------------------------------------------------ jobs

    async def get(self, job_id: int) -> SessionRecord | None:
        rows = list(await self._db.execute_fetchall(f"SELECT {_COLUMNS} FROM session_jobs WHERE job_id = ?",
                                                    (job_id,)))
        return SessionRecord.from_row(rows[0]) if rows else None

    async def create_if_absent(self, job_id: int, client: str, host: str, model: str) -> SessionRecord:
        """The job's record, created (zero counts, empty context) the first time this host sees the job."""
        now = time.time()
        await self._db.execute(
            "INSERT OR IGNORE INTO session_jobs (job_id, client, host, model, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)", (job_id, client, host, model, now, now))
        record = await self.get(job_id)
        assert record is not None
        return record

    async def pending_jobs(self) -> list[SessionRecord]:
        """Jobs with an in-flight proof recorded (to settle after a restart)."""
        rows = await self._db.execute_fetchall(
            f"SELECT {_COLUMNS} FROM session_jobs WHERE pending_proof_target > 0")
        return [SessionRecord.from_row(r) for r in rows]

    async def _update(self, job_id: int, sql: str, args: tuple[Any, ...], where: str = "",
                      where_args: tuple[Any, ...] = ()) -> int:
        cur = await self._db.execute(f"UPDATE session_jobs SET {sql}, updated_at = ? WHERE job_id = ?{where}",
                                     (*args, time.time(), job_id, *where_args))
        return cur.rowcount

    async def add_tokens(self, job_id: int, tokens: int) -> int:
        """Bill ``tokens``; returns the new cumulative total."""
        rows = list(await self._db.execute_fetchall(
            "UPDATE session_jobs SET cumulative_tokens = cumulative_tokens + ?, updated_at = ? WHERE job_id = ?"
            " RETURNING cumulative_tokens", (tokens, time.time(), job_id)))
        return int(rows[0][0])

    async def set_context(self, job_id: int, context: list[ContextEntry]) -> None:
        data = json.dumps([{"role": e.role, "content": e.content, "tokens": e.tokens} for e in context])
        await self._update(job_id, "context = ?", (data,))

    async def add_checkpoint(self, job_id: int, crossed: int = 1) -> int:
        """Count ``crossed`` more checkpoints (multiples of ``checkpoint_tokens`` passed); the new total."""
        rows = list(await self._db.execute_fetchall(
            "UPDATE session_jobs SET checkpoints = checkpoints + ?, updated_at = ? WHERE job_id = ?"
            " RETURNING checkpoints", (crossed, time.time(), job_id)))
        return int(rows[0][0])

    async def set_receipt(self, job_id: int, tokens: int, signature: str) -> bool:
        """Keep a receipt when it names more tokens than the stored one; False otherwise."""
        return await self._update(job_id, "receipt_tokens = ?, receipt_signature = ?", (tokens, signature),
                                  " AND receipt_tokens < ?", (tokens,)) == 1

    async def set_proven(self, job_id: int, proven: int) -> None:
        await self._update(job_id, "proven_tokens = ?", (proven,))

    async def set_pending_proof(self, job_id: int, target: int) -> None:
        await self._update(job_id, "pending_proof_target = ?", (target,))

    async def mark_proof_checkpoint(self, job_id: int) -> None:
        await self._update(job_id, "proof_checkpoint = checkpoints", ())

    async def set_state(self, job_id: int, state: str) -> None:
        await self._update(job_id, "state = ?", (state,))

    async def advance_message_index(self, job_id: int, index: int) -> bool:
        """Accept ``index`` when it is greater than the last accepted one (atomically); False otherwise."""
        return await self._update(job_id, "last_message_index = ?", (index,), " AND last_message_index < ?",
                                  (index,)) == 1

    # ------------------------------------------------------------ replay protection

    async def use_nonce(self, job_id: int, nonce: str) -> bool:
        """Record ``nonce`` for ``job_id``; False when it was used before (forever, per job)."""
        cur = await self._db.execute("INSERT OR IGNORE INTO session_nonces (job_id, nonce, created_at)"
                                     " VALUES (?, ?, ?)", (job_id, nonce.lower(), time.time()))
        return cur.rowcount == 1

    # ------------------------------------------------------------ proofs

    async def log_proof(self, job_id: int, tx_hash: str, tokens_claimed: int, cumulative: int, signed: bool) -> None:
        await self._db.execute(
            "INSERT INTO session_proofs (job_id, tx_hash, tokens_claimed, cumulative_tokens, signed, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)", (job_id, tx_hash, tokens_claimed, cumulative, int(signed), time.time()))

    async def proofs(self, job_id: int) -> list[dict[str, Any]]:
        rows = await self._db.execute_fetchall(
            "SELECT tx_hash, tokens_claimed, cumulative_tokens, signed FROM session_proofs WHERE job_id = ?"
            " ORDER BY rowid", (job_id,))
        return [{"tx_hash": r[0], "tokens_claimed": int(r[1]), "cumulative_tokens": int(r[2]), "signed": bool(r[3])}
                for r in rows]
