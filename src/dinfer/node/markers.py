"""The ``inference_seen/<id>`` markers (Gonka's): written before a TA dispatches and before an executor executes.

A marker refuses a replayed request (409) and tells the chain listener that an ``InferenceStarted`` naming this host
was already served over HTTP (no chain-first execution). It must be on disk before the work starts.

Why a file and a connection of their own, used straight from the event loop. A marker is written on every request's
path. Through the store's aiosqlite connection each statement is a round trip to that connection's thread — 0.6 ms
on an idle 2-core VM, 3–4 ms under load — for ~25 µs of SQLite work. A plain ``sqlite3`` connection does the same
write (WAL, ``synchronous=NORMAL``: it survives a process crash, as the store's writes do) in those microseconds.
Its own file means no other connection ever holds its write lock, so the event loop never waits on one (sharing
the store's file would make it wait behind a payload write). Statements are single-row, by primary key, and pruning
deletes by an index: none of them holds the loop for long.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    inference_id TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_created ON seen (created_at);
"""
_INSERT = "INSERT OR IGNORE INTO seen (inference_id, value, created_at) VALUES (?, ?, ?)"


class SeenMarkers:
    """One marker per inference id, with a short value (who wrote it: a timestamp, ``executor``, ``chain-first``)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    @classmethod
    def open(cls, path: Path | str) -> SeenMarkers:
        """Open (or create) the markers file; ``":memory:"`` for a throwaway one."""
        # the event loop's thread is its only user; the flag lets whichever thread shuts the node down close it
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        return cls(db)

    def add(self, inference_id: str, value: str) -> bool:
        """Write the marker; False when one was already there (a replay, or the other path came first)."""
        cur = self._db.execute(_INSERT, (inference_id, value, time.time()))
        return cur.rowcount == 1

    def get(self, inference_id: str) -> str | None:
        row = self._db.execute("SELECT value FROM seen WHERE inference_id = ?", (inference_id,)).fetchone()
        return None if row is None else str(row[0])

    def remove(self, inference_id: str) -> None:
        """Take a marker back (the TA found no executor: nothing was dispatched, the same request may retry)."""
        self._db.execute("DELETE FROM seen WHERE inference_id = ?", (inference_id,))

    def add_many(self, markers: dict[str, str]) -> None:
        """Bring in markers kept elsewhere (the store's KV table before this file existed); existing ones stay."""
        now = time.time()
        self._db.executemany(_INSERT, [(iid, value, now) for iid, value in markers.items()])

    def prune(self, older_than_s: float) -> int:
        """Drop markers older than ``older_than_s``; returns how many went. A marker matters while its signed
        request could still be replayed (the request window) and its start could still arrive from the chain."""
        return self._db.execute("DELETE FROM seen WHERE created_at < ?", (time.time() - older_than_s,)).rowcount

    def close(self) -> None:
        self._db.close()
