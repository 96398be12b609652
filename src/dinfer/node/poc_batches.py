"""PoC leaves this host's ML nodes reported, per (cycle, ML node), and the commitment made from them.

Tables on the node's SQLite connection (``NodeStore``):

* ``poc_leaves`` — every ``(nonce, distance)`` an ML node POSTed to the callback API, keyed by the cycle's
  ``poc_start`` block and the ``node_id``; a nonce posted twice is kept once.
* ``poc_commits`` — the *seal*: once the orchestrator has stopped a node's generation it seals the cycle for that
  node (leaves at or above ``r_target`` are dropped, the count and the Merkle root recorded). A sealed set never
  changes again: late callbacks are refused, and the public ``GET /v1/poc/batches/...`` serves exactly the leaves
  whose root went on chain, so validators can check it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from dinfer import merkle
from dinfer.node.store import NodeStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS poc_leaves (
    poc_start INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    nonce INTEGER NOT NULL,
    distance REAL NOT NULL,
    PRIMARY KEY (poc_start, node_id, nonce)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS poc_commits (
    poc_start INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    nonce_count INTEGER NOT NULL,
    merkle_root TEXT NOT NULL,
    tx TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    PRIMARY KEY (poc_start, node_id)
);
"""


@dataclass(frozen=True)
class Leaves:
    """A node's leaves of one cycle in nonce order (the order the Merkle root is taken in)."""

    nonces: list[int]
    distances: list[float]

    def __len__(self) -> int:
        return len(self.nonces)

    def root(self) -> bytes:
        """``dinfer.merkle`` root over the leaves; ``ValueError`` when there are none."""
        return merkle.merkle_root([merkle.leaf_hash(n, d) for n, d in zip(self.nonces, self.distances, strict=True)])


@dataclass(frozen=True)
class Commit:
    """A sealed (cycle, node): what was (or will be) submitted with ``submit_poc_batch``."""

    poc_start: int
    node_id: str
    model_id: str
    nonce_count: int
    merkle_root: str
    """``0x``-hex root; empty when the node found no valid nonce (nothing to submit)."""
    tx: str
    """Hash of the ``submit_poc_batch`` transaction once it went through."""


class PoCBatchStore:
    """PoC tables on the node's SQLite connection. ``await PoCBatchStore.open(node_store)``."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, node_store: NodeStore) -> PoCBatchStore:
        return cls(await node_store.attach_schema(SCHEMA))

    async def add_leaves(self, poc_start: int, node_id: str, nonces: Sequence[int],
                         distances: Sequence[float]) -> int | None:
        """Store a batch of leaves; returns how many were new, or None when the (cycle, node) is sealed."""
        if await self.get_commit(poc_start, node_id) is not None:
            return None
        before = self._db.total_changes
        # The NOT EXISTS guard makes a seal that lands between the check above and this insert win.
        await self._db.executemany(
            "INSERT OR IGNORE INTO poc_leaves (poc_start, node_id, nonce, distance) SELECT ?, ?, ?, ?"
            " WHERE NOT EXISTS (SELECT 1 FROM poc_commits WHERE poc_start = ? AND node_id = ?)",
            [(poc_start, node_id, int(n), float(d), poc_start, node_id)
             for n, d in zip(nonces, distances, strict=True)],
        )
        return self._db.total_changes - before

    async def leaves(self, poc_start: int, node_id: str) -> Leaves:
        rows = await self._db.execute_fetchall(
            "SELECT nonce, distance FROM poc_leaves WHERE poc_start = ? AND node_id = ? ORDER BY nonce",
            (poc_start, node_id),
        )
        pairs = [(int(n), float(d)) for n, d in rows]
        return Leaves([n for n, _ in pairs], [d for _, d in pairs])

    async def seal(self, poc_start: int, node_id: str, model_id: str, r_target: float) -> Commit:
        """Freeze the (cycle, node): drop leaves with distance ≥ ``r_target``, record count and root (idempotent)."""
        existing = await self.get_commit(poc_start, node_id)
        if existing is not None:
            return existing
        await self._db.execute(
            "INSERT OR IGNORE INTO poc_commits (poc_start, node_id, model_id, nonce_count, merkle_root, created_at)"
            " VALUES (?, ?, ?, 0, '', ?)", (poc_start, node_id, model_id, time.time()),
        )
        await self._db.execute("DELETE FROM poc_leaves WHERE poc_start = ? AND node_id = ? AND distance >= ?",
                               (poc_start, node_id, r_target))
        leaves = await self.leaves(poc_start, node_id)
        # Hashing is CPU work (two keccaks per leaf): off the event loop for large batches.
        root = "0x" + (await asyncio.to_thread(leaves.root)).hex() if len(leaves) else ""
        await self._db.execute(
            "UPDATE poc_commits SET nonce_count = ?, merkle_root = ? WHERE poc_start = ? AND node_id = ?",
            (len(leaves), root, poc_start, node_id),
        )
        return Commit(poc_start, node_id, model_id, len(leaves), root, "")

    async def mark_submitted(self, poc_start: int, node_id: str, tx: str) -> None:
        await self._db.execute("UPDATE poc_commits SET tx = ? WHERE poc_start = ? AND node_id = ?",
                               (tx, poc_start, node_id))

    async def get_commit(self, poc_start: int, node_id: str) -> Commit | None:
        rows = list(await self._db.execute_fetchall(
            "SELECT poc_start, node_id, model_id, nonce_count, merkle_root, tx FROM poc_commits"
            " WHERE poc_start = ? AND node_id = ?", (poc_start, node_id),
        ))
        if not rows:
            return None
        r = rows[0]
        return Commit(int(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4]), str(r[5]))

    async def committed_leaves(self, poc_start: int, node_id: str) -> tuple[Commit, Leaves] | None:
        """The sealed leaves of (cycle, node) — what validators fetch — or None when not sealed."""
        commit = await self.get_commit(poc_start, node_id)
        if commit is None:
            return None
        return commit, await self.leaves(poc_start, node_id)

    async def prune(self, keep_from_poc_start: int) -> int:
        """Drop cycles older than ``keep_from_poc_start``; returns the leaves removed."""
        cur = await self._db.execute("DELETE FROM poc_leaves WHERE poc_start < ?", (keep_from_poc_start,))
        await self._db.execute("DELETE FROM poc_commits WHERE poc_start < ?", (keep_from_poc_start,))
        return cur.rowcount
