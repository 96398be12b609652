"""Peer management: what this client has seen of each host, which hosts it refuses and which it prefers.

``PeerBook`` keeps, per host address:

- reputation: successes, failures, timeouts (a failure kind), reports this client sent about it, and the
  invalidations the chain recorded (``Validation.invalid_count`` per epoch, ``sync_invalidations``);
- connection quality: the last ``PeerPolicy.latency_window`` latencies (p50 / p95), the error rate
  ``failures / (successes + failures)`` and the observed throughput ``Σ tokens / Σ seconds`` of the successful
  calls that reported both;
- a blacklist: manual (``blacklist(host)``, no expiry unless ``ttl_s``) and automatic after
  ``PeerPolicy.failure_threshold`` consecutive failures (expires after ``PeerPolicy.blacklist_ttl_s``; the count
  restarts, so a host coming back gets the same number of chances again);
- a preferred-host list, in order: ``arrange(hosts)`` drops blacklisted hosts and puts preferred ones first.

``UnifiedDiscovery(peers=)`` and ``HostSelector(peers=)`` honour both lists. Everything is written through to a
SQLite file (default ``~/.dinfer/peers.sqlite``). A file that is not a readable peer database (corrupted, truncated,
another program's) is moved aside to ``<name>.corrupt-<unix time>`` and rebuilt empty, with a warning: losing the
history is better than a client that cannot start.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from dinfer.crypto import checksum
from dinfer.errors import CryptoError
from dinfer.sdk.hosts import HostRecord

if TYPE_CHECKING:
    from dinfer.chain.contracts.inference import ValidationClient

__all__ = ["DEFAULT_PEERS_PATH", "BlacklistEntry", "PeerBook", "PeerPolicy", "PeerStats", "peer_address"]

log = logging.getLogger(__name__)

DEFAULT_PEERS_PATH = Path("~/.dinfer/peers.sqlite")
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (
    address TEXT PRIMARY KEY,
    successes INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    timeouts INTEGER NOT NULL DEFAULT 0,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    busy_s REAL NOT NULL DEFAULT 0,
    reports_sent INTEGER NOT NULL DEFAULT 0,
    latencies_ms TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS peer_invalidations (
    address TEXT NOT NULL, epoch INTEGER NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (address, epoch)
);
CREATE TABLE IF NOT EXISTS peer_blacklist (
    address TEXT PRIMARY KEY, reason TEXT NOT NULL, until REAL, automatic INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS peer_preferred (address TEXT PRIMARY KEY, rank INTEGER NOT NULL);
"""
_PEER_COLUMNS = ("address, successes, failures, timeouts, consecutive_failures, tokens, busy_s, reports_sent, "
                 "latencies_ms")


def peer_address(host: HostRecord | str, *, what: str = "host") -> str:
    """The checksummed address of ``host``; ``ValueError`` naming the bad entry otherwise."""
    if isinstance(host, HostRecord):
        return host.address
    if not isinstance(host, str):
        raise ValueError(f"{what} must be a 0x-prefixed 20-byte address or a HostRecord, got {type(host).__name__}")
    try:
        return checksum(host)
    except (CryptoError, ValueError):
        raise ValueError(f"{what} {host!r:.60} is not an address (expected 0x followed by 40 hex digits)") from None


@dataclass(frozen=True)
class PeerPolicy:
    """When a host is blacklisted automatically, for how long, and how much latency history is kept."""

    failure_threshold: int = 3
    """Consecutive failures (timeouts included) that blacklist a host; a success resets the count."""
    blacklist_ttl_s: float = 600.0
    """How long an automatic blacklisting lasts."""
    latency_window: int = 200
    """Latest latencies kept per host for p50 / p95."""

    def __post_init__(self) -> None:
        if not isinstance(self.failure_threshold, int) or self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be an integer >= 1, got {self.failure_threshold!r}")
        if not math.isfinite(self.blacklist_ttl_s) or self.blacklist_ttl_s <= 0:
            raise ValueError(f"blacklist_ttl_s must be > 0 seconds, got {self.blacklist_ttl_s!r}")
        if not isinstance(self.latency_window, int) or self.latency_window < 1:
            raise ValueError(f"latency_window must be an integer >= 1, got {self.latency_window!r}")


@dataclass(frozen=True)
class BlacklistEntry:
    address: str
    reason: str
    until: float | None
    """Unix time the entry expires; None for a manual entry without expiry."""
    automatic: bool


@dataclass
class _Peer:
    address: str
    successes: int = 0
    failures: int = 0
    timeouts: int = 0
    consecutive_failures: int = 0
    tokens: int = 0
    busy_s: float = 0.0
    reports_sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class PeerStats:
    """One host as this client knows it (``PeerBook.stats``)."""

    address: str
    successes: int
    failures: int
    timeouts: int
    """Failures that were timeouts (counted in ``failures`` too)."""
    consecutive_failures: int
    invalidations: int
    """Invalid inferences the chain recorded against the host, summed over the synced epochs."""
    reports_sent: int
    error_rate: float | None
    """failures / (successes + failures); None before the first outcome."""
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    throughput_tps: float | None
    """Observed tokens per second over the successes that reported tokens and a duration."""
    blacklisted: BlacklistEntry | None
    preferred: bool

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["blacklisted"] = asdict(self.blacklisted) if self.blacklisted else None
        return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in [0, 1]) of ``values``; None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _check_number(name: str, value: float | None) -> None:
    if value is not None and (not isinstance(value, int | float) or not math.isfinite(value) or value < 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


class PeerBook:
    """Per-host reputation, connection quality, blacklist and preferred list, persisted in SQLite at ``path``.

    Example:
        >>> peers = PeerBook(tmp_path / "peers.sqlite", PeerPolicy(failure_threshold=3))   # doctest: +SKIP
        >>> peers.record_success(host, latency_s=0.12, tokens=64, duration_s=1.5)           # doctest: +SKIP
        >>> peers.blacklist("0x" + "ab" * 20, reason="overcharged me")                      # doctest: +SKIP
        >>> peers.set_preferred([trusted_host])                                             # doctest: +SKIP
        >>> hosts = peers.arrange(hosts)   # blacklisted dropped, preferred first           # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, policy: PeerPolicy | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path if path is not None else DEFAULT_PEERS_PATH).expanduser()
        self.policy = policy or PeerPolicy()
        self._clock = clock
        self._lock = threading.RLock()
        self._peers: dict[str, _Peer] = {}
        self._invalid: dict[str, dict[int, int]] = {}
        self._blacklist: dict[str, BlacklistEntry] = {}
        self._preferred: list[str] = []
        self.rebuilt_from: Path | None = None
        """Where a corrupted file was moved when this book had to start empty (None when it loaded fine)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
            self._db = self._rebuild(exc)

    # --- persistence
    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.executescript(_SCHEMA)
            for row in db.execute(f"SELECT {_PEER_COLUMNS} FROM peers"):
                latencies = orjson.loads(row[8])
                if not isinstance(latencies, list):
                    raise ValueError(f"latencies of {row[0]} are not a list")
                self._peers[row[0]] = _Peer(checksum(row[0]), *(int(v) for v in row[1:6]), float(row[6]),
                                            int(row[7]), [float(v) for v in latencies])
            for address, epoch, count in db.execute("SELECT address, epoch, count FROM peer_invalidations"):
                self._invalid.setdefault(checksum(address), {})[int(epoch)] = int(count)
            for address, reason, until, automatic in db.execute(
                    "SELECT address, reason, until, automatic FROM peer_blacklist"):
                self._blacklist[checksum(address)] = BlacklistEntry(checksum(address), str(reason),
                                                                    None if until is None else float(until),
                                                                    bool(automatic))
            self._preferred = [checksum(a) for (a,) in
                               db.execute("SELECT address FROM peer_preferred ORDER BY rank")]
        except BaseException:
            db.close()
            raise
        return db

    def _rebuild(self, error: BaseException) -> sqlite3.Connection:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(self._clock())}")
        for suffix in ("", "-wal", "-shm", "-journal"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.replace(Path(f"{aside}{suffix}"))
        log.warning("peer reputation file %s is unreadable (%s: %s); moved it to %s and started an empty one",
                    self.path, type(error).__name__, error, aside)
        self.rebuilt_from = aside
        self._peers, self._invalid, self._blacklist, self._preferred = {}, {}, {}, []
        return self._open()

    def _save_peer(self, peer: _Peer) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO peers ({_PEER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (peer.address, peer.successes, peer.failures, peer.timeouts, peer.consecutive_failures, peer.tokens,
             peer.busy_s, peer.reports_sent, orjson.dumps(peer.latencies_ms).decode()))

    def _peer(self, address: str) -> _Peer:
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = _Peer(address)
        return peer

    # --- outcomes
    def record_success(self, host: HostRecord | str, *, latency_s: float | None = None, tokens: int | None = None,
                       duration_s: float | None = None) -> PeerStats:
        """One call to ``host`` worked. ``latency_s``: time to first byte (or the round trip); ``tokens`` and
        ``duration_s`` together feed the throughput."""
        address = peer_address(host)
        _check_number("latency_s", latency_s)
        _check_number("duration_s", duration_s)
        if tokens is not None and (not isinstance(tokens, int) or tokens < 0):
            raise ValueError(f"tokens must be an integer >= 0, got {tokens!r}")
        with self._lock:
            peer = self._peer(address)
            peer.successes += 1
            peer.consecutive_failures = 0
            if latency_s is not None:
                peer.latencies_ms = [*peer.latencies_ms, latency_s * 1000][-self.policy.latency_window:]
            if tokens is not None and duration_s:
                peer.tokens += tokens
                peer.busy_s += duration_s
            self._save_peer(peer)
            return self.stats(address)

    def record_failure(self, host: HostRecord | str, *, timeout: bool = False, reason: str = "",
                       latency_s: float | None = None) -> PeerStats:
        """One call to ``host`` failed (``timeout=True``: it did not answer in time). The
        ``failure_threshold``-th failure in a row blacklists the host for ``blacklist_ttl_s``."""
        address = peer_address(host)
        _check_number("latency_s", latency_s)
        with self._lock:
            peer = self._peer(address)
            peer.failures += 1
            peer.timeouts += int(bool(timeout))
            peer.consecutive_failures += 1
            if latency_s is not None:
                peer.latencies_ms = [*peer.latencies_ms, latency_s * 1000][-self.policy.latency_window:]
            if peer.consecutive_failures >= self.policy.failure_threshold:
                why = f"{peer.consecutive_failures} consecutive failures" + (f" (last: {reason})" if reason else "")
                peer.consecutive_failures = 0
                if not self._manual(address):
                    self._put_blacklist(BlacklistEntry(address, why, self._clock() + self.policy.blacklist_ttl_s,
                                                       automatic=True))
                    log.warning("blacklisted host %s for %.0f s: %s", address, self.policy.blacklist_ttl_s, why)
            self._save_peer(peer)
            return self.stats(address)

    def note_report(self, host: HostRecord | str) -> PeerStats:
        """Count one report this client sent about ``host`` (``UnifiedDiscovery.report_host``)."""
        address = peer_address(host)
        with self._lock:
            peer = self._peer(address)
            peer.reports_sent += 1
            self._save_peer(peer)
            return self.stats(address)

    def record_invalidations(self, host: HostRecord | str, epoch: int, count: int) -> PeerStats:
        """The chain's invalid-inference count of ``host`` in ``epoch`` (replaces the previous reading)."""
        address = peer_address(host)
        if not isinstance(epoch, int) or epoch < 0 or not isinstance(count, int) or count < 0:
            raise ValueError(f"epoch and count must be integers >= 0, got epoch={epoch!r} count={count!r}")
        with self._lock:
            self._invalid.setdefault(address, {})[epoch] = count
            self._db.execute("INSERT OR REPLACE INTO peer_invalidations (address, epoch, count) VALUES (?, ?, ?)",
                             (address, epoch, count))
            return self.stats(address)

    async def sync_invalidations(self, validation: ValidationClient, epoch: int,
                                 hosts: Iterable[HostRecord | str]) -> dict[str, int]:
        """Read ``Validation.invalid_count(epoch, host)`` for each host and record it; returns the counts read.

        Example:
            >>> await peers.sync_invalidations(await inference.validation_client(), epoch, hosts)   # doctest: +SKIP
        """
        counts: dict[str, int] = {}
        for host in hosts:
            address = peer_address(host)
            counts[address] = await validation.invalid_count(epoch, address)
            self.record_invalidations(address, epoch, counts[address])
        return counts

    # --- blacklist
    def blacklist(self, host: HostRecord | str, *, reason: str = "manual",
                  ttl_s: float | None = None) -> BlacklistEntry:
        """Refuse ``host`` until ``unblacklist`` (or for ``ttl_s`` seconds). ``ValueError`` for a bad address."""
        address = peer_address(host, what="blacklist entry")
        if ttl_s is not None and (not isinstance(ttl_s, int | float) or not math.isfinite(ttl_s) or ttl_s <= 0):
            raise ValueError(f"ttl_s must be > 0 seconds (or None for no expiry), got {ttl_s!r}")
        entry = BlacklistEntry(address, reason, None if ttl_s is None else self._clock() + ttl_s, automatic=False)
        with self._lock:
            self._put_blacklist(entry)
        return entry

    def unblacklist(self, host: HostRecord | str) -> bool:
        """Lift a blacklisting; False when ``host`` was not blacklisted."""
        address = peer_address(host, what="blacklist entry")
        with self._lock:
            self._db.execute("DELETE FROM peer_blacklist WHERE address = ?", (address,))
            return self._blacklist.pop(address, None) is not None

    def blacklisted(self) -> list[BlacklistEntry]:
        """The entries in force (expired ones are dropped)."""
        with self._lock:
            return [e for a in list(self._blacklist) if (e := self._entry(a)) is not None]

    def is_blacklisted(self, host: HostRecord | str) -> bool:
        return self._entry(peer_address(host)) is not None

    def blacklist_entry(self, host: HostRecord | str) -> BlacklistEntry | None:
        """The blacklisting of ``host`` in force, or None."""
        return self._entry(peer_address(host))

    def _entry(self, address: str) -> BlacklistEntry | None:
        with self._lock:
            entry = self._blacklist.get(address)
            if entry is not None and entry.until is not None and entry.until <= self._clock():
                self._db.execute("DELETE FROM peer_blacklist WHERE address = ?", (address,))
                del self._blacklist[address]
                log.info("blacklisting of %s expired (%s)", address, entry.reason)
                return None
            return entry

    def _manual(self, address: str) -> bool:
        entry = self._entry(address)
        return entry is not None and not entry.automatic

    def _put_blacklist(self, entry: BlacklistEntry) -> None:
        self._blacklist[entry.address] = entry
        self._db.execute("INSERT OR REPLACE INTO peer_blacklist (address, reason, until, automatic) "
                         "VALUES (?, ?, ?, ?)", (entry.address, entry.reason, entry.until, int(entry.automatic)))

    # --- preferred hosts
    def set_preferred(self, hosts: Iterable[HostRecord | str]) -> list[str]:
        """Replace the preferred list (first = most preferred); ``ValueError`` for a bad address."""
        addresses = list(dict.fromkeys(peer_address(h, what="preferred host") for h in hosts))
        with self._lock:
            self._db.execute("DELETE FROM peer_preferred")
            self._db.executemany("INSERT INTO peer_preferred (address, rank) VALUES (?, ?)",
                                 [(a, i) for i, a in enumerate(addresses)])
            self._preferred = addresses
        return list(addresses)

    def add_preferred(self, host: HostRecord | str) -> list[str]:
        """Append ``host`` to the preferred list (no change when already there)."""
        address = peer_address(host, what="preferred host")
        return self.set_preferred([*self._preferred, address])

    def remove_preferred(self, host: HostRecord | str) -> list[str]:
        address = peer_address(host, what="preferred host")
        return self.set_preferred([a for a in self._preferred if a != address])

    def preferred(self) -> list[str]:
        return list(self._preferred)

    def preferred_first(self, items: Sequence[T], address_of: Callable[[T], str]) -> list[T]:
        """``items`` with preferred hosts first (in preference order), the others after in their given order."""
        rank = {a: i for i, a in enumerate(self._preferred)}
        return sorted(items, key=lambda item: rank.get(address_of(item), len(rank)))

    def arrange(self, hosts: Iterable[HostRecord]) -> list[HostRecord]:
        """``hosts`` without the blacklisted ones, preferred first (the rest keep their order)."""
        kept = [h for h in hosts if not self.is_blacklisted(h)]
        return self.preferred_first(kept, lambda h: h.address)

    # --- reading
    def stats(self, host: HostRecord | str) -> PeerStats:
        """Everything known about ``host`` (zeros for a host never seen)."""
        address = peer_address(host)
        with self._lock:
            peer = self._peers.get(address) or _Peer(address)
            outcomes = peer.successes + peer.failures
            return PeerStats(
                address=address, successes=peer.successes, failures=peer.failures, timeouts=peer.timeouts,
                consecutive_failures=peer.consecutive_failures,
                invalidations=sum(self._invalid.get(address, {}).values()), reports_sent=peer.reports_sent,
                error_rate=peer.failures / outcomes if outcomes else None,
                latency_p50_ms=percentile(peer.latencies_ms, 0.5), latency_p95_ms=percentile(peer.latencies_ms, 0.95),
                throughput_tps=peer.tokens / peer.busy_s if peer.busy_s > 0 else None,
                blacklisted=self._entry(address), preferred=address in self._preferred)

    def summary(self) -> dict[str, Any]:
        """What ``UnifiedDiscovery.get_discovery_stats()["peers"]`` shows."""
        with self._lock:
            known = sorted({*self._peers, *self._invalid, *self._blacklist, *self._preferred})
            return {"path": str(self.path), "rebuilt_from": str(self.rebuilt_from) if self.rebuilt_from else None,
                    "policy": asdict(self.policy), "preferred": self.preferred(),
                    "blacklisted": [asdict(e) for e in self.blacklisted()],
                    "hosts": {a: self.stats(a).as_dict() for a in known}}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> PeerBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
