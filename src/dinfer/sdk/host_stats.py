"""What this client has seen of each host: selections, outcomes and session durations, kept in a local SQLite file.

``HostSelector`` writes here (every hand-out, every ``record_outcome``) and reads the per-host ``reliability`` back
into ``best_reputation`` and ``composite`` ranking, so a host that keeps failing this client sinks even when its
on-chain record is clean. The file survives restarts (default ``~/.dinfer/host_stats.sqlite``).

Writes are single-row upserts on a local file (well under a millisecond), so they run inline rather than on a worker
thread; one lock makes the store safe to share between the sync façade's loop thread and the caller's thread.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from dinfer.crypto import checksum

__all__ = ["DEFAULT_STATS_PATH", "HostPerformance", "HostStatsStore"]

DEFAULT_STATS_PATH = Path("~/.dinfer/host_stats.sqlite")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS host_performance (
    address TEXT PRIMARY KEY,
    selections INTEGER NOT NULL DEFAULT 0,
    successes INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    total_duration_s REAL NOT NULL DEFAULT 0
)
"""


@dataclass(frozen=True)
class HostPerformance:
    """One host's record with this client."""

    address: str
    selections: int = 0
    """Times a selector handed this host out."""
    successes: int = 0
    failures: int = 0
    total_duration_s: float = 0.0
    """Sum of the reported session/request durations (successful or not)."""

    @property
    def outcomes(self) -> int:
        return self.successes + self.failures

    @property
    def success_rate(self) -> float | None:
        """successes / outcomes; None before the first outcome."""
        return self.successes / self.outcomes if self.outcomes else None

    @property
    def average_duration_s(self) -> float | None:
        return self.total_duration_s / self.outcomes if self.outcomes else None

    @property
    def reliability(self) -> float:
        """Laplace-smoothed success rate ``(successes + 1) / (outcomes + 2)``: 0.5 for a host never tried, moving
        towards the observed rate as outcomes accumulate (one failure does not sink a new host to 0)."""
        return (self.successes + 1) / (self.outcomes + 2)


class HostStatsStore:
    """Per-host performance persisted in SQLite at ``path`` (parent directories are created).

    Example:
        >>> store = HostStatsStore(tmp_path / "stats.sqlite")                  # doctest: +SKIP
        >>> store.record_outcome("0x" + "11" * 20, success=True, duration_s=3.5).reliability  # doctest: +SKIP
        0.6666666666666666
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path if path is not None else DEFAULT_STATS_PATH).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)

    def record_selection(self, address: str) -> HostPerformance:
        """Count one hand-out of ``address``."""
        return self._add(checksum(address), selections=1)

    def record_outcome(self, address: str, success: bool, duration_s: float) -> HostPerformance:
        """Count how one session/request on ``address`` ended and how long it took (seconds, finite, >= 0)."""
        if not isinstance(duration_s, int | float) or not math.isfinite(duration_s) or duration_s < 0:
            raise ValueError(f"duration_s must be a finite number of seconds >= 0, got {duration_s!r}")
        ok = bool(success)
        return self._add(checksum(address), successes=int(ok), failures=int(not ok), duration_s=float(duration_s))

    def get(self, address: str) -> HostPerformance:
        """The record of ``address`` (all zeros for a host never seen)."""
        address = checksum(address)
        with self._lock:
            row = self._db.execute(
                "SELECT address, selections, successes, failures, total_duration_s FROM host_performance "
                "WHERE address = ?", (address,)).fetchone()
        return HostPerformance(*row) if row else HostPerformance(address)

    def all(self) -> dict[str, HostPerformance]:
        """Every host with a record, by address."""
        with self._lock:
            rows = self._db.execute(
                "SELECT address, selections, successes, failures, total_duration_s FROM host_performance").fetchall()
        return {row[0]: HostPerformance(*row) for row in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> HostStatsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add(self, address: str, *, selections: int = 0, successes: int = 0, failures: int = 0,
             duration_s: float = 0.0) -> HostPerformance:
        with self._lock:
            row = self._db.execute(
                "INSERT INTO host_performance (address, selections, successes, failures, total_duration_s) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(address) DO UPDATE SET "
                "selections = selections + excluded.selections, successes = successes + excluded.successes, "
                "failures = failures + excluded.failures, "
                "total_duration_s = total_duration_s + excluded.total_duration_s "
                "RETURNING address, selections, successes, failures, total_duration_s",
                (address, selections, successes, failures, duration_s),
            ).fetchone()
        return HostPerformance(*row)
