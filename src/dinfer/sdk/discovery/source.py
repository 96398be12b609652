"""What every discovery source is: the ``DiscoverySource`` protocol, its per-source statistics and errors.

Error tree::

    DiscoveryError                  (DinferError)
    ├── DiscoveryUnavailable        the source cannot be reached (service down, no DHT peer, RPC failing)
    └── BadDiscoveryResponse        the source answered with something that is not a host list
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from dinfer.errors import DinferError
from dinfer.sdk.hosts import HostRecord

__all__ = [
    "BadDiscoveryResponse",
    "DiscoveryError",
    "DiscoverySource",
    "DiscoveryUnavailable",
    "MeasuredSource",
    "SourceStats",
]


class DiscoveryError(DinferError):
    """A discovery source failed; the message names the source and what to check."""


class DiscoveryUnavailable(DiscoveryError):
    """The source cannot be reached: check its URL / bootstrap nodes / RPC; other sources still answer."""


class BadDiscoveryResponse(DiscoveryError):
    """The source answered, but not with a valid host list (wrong service, incompatible version, corruption)."""


@dataclass
class SourceStats:
    """Counters of one source, as ``get_discovery_stats()`` reports them."""

    calls: int = 0
    successes: int = 0
    total_ms: float = 0.0
    cache_hits: int = 0
    rejected: int = 0
    """Records dropped: malformed metadata, bad signature, expired announcement."""
    last_error: str | None = None
    healthy: bool = True
    """False after a failed call, True again after a successful one."""

    @property
    def success_rate(self) -> float:
        return self.successes / self.calls if self.calls else 0.0

    @property
    def avg_discovery_ms(self) -> float:
        return self.total_ms / self.calls if self.calls else 0.0

    @property
    def cache_hit_rate(self) -> float:
        return self.cache_hits / self.calls if self.calls else 0.0

    def record(self, started: float, error: BaseException | None = None) -> None:
        """Account one call that began at ``started`` (``time.perf_counter()``)."""
        self.calls += 1
        self.total_ms += (time.perf_counter() - started) * 1000
        if error is None:
            self.successes += 1
            self.healthy = True
        else:
            self.healthy = False
            self.last_error = f"{type(error).__name__}: {error}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy, "calls": self.calls, "successes": self.successes,
            "success_rate": round(self.success_rate, 4), "avg_discovery_ms": round(self.avg_discovery_ms, 3),
            "cache_hits": self.cache_hits, "cache_hit_rate": round(self.cache_hit_rate, 4),
            "rejected": self.rejected, "last_error": self.last_error,
        }


@runtime_checkable
class DiscoverySource(Protocol):
    """A place hosts can be found. ``discover`` raises a ``DiscoveryError`` subclass on failure."""

    name: str
    stats: SourceStats

    async def discover(self, model: str | None = None) -> list[HostRecord]:
        """Hosts known to this source (serving ``model`` when given)."""
        ...

    async def close(self) -> None:
        """Release sockets and background tasks."""
        ...


class MeasuredSource(ABC):
    """Base of the built-in sources: ``discover`` times ``_discover`` and keeps ``stats``; subclasses count their
    own cache hits (``self.stats.cache_hits += 1``) and rejected records."""

    name = "source"

    def __init__(self) -> None:
        self.stats = SourceStats()

    async def discover(self, model: str | None = None) -> list[HostRecord]:
        return await self._timed(self._discover(model))

    async def _timed(self, call: Awaitable[list[HostRecord]]) -> list[HostRecord]:
        """Await one discovery call, accounting its time and outcome in ``stats``."""
        started = time.perf_counter()
        try:
            hosts = await call
        except DiscoveryError as exc:
            self.stats.record(started, exc)
            raise
        except Exception as exc:  # a library error becomes the source's typed failure
            self.stats.record(started, exc)
            raise DiscoveryUnavailable(f"{self.name} discovery failed: {type(exc).__name__}: {exc}") from exc
        self.stats.record(started)
        return hosts

    @abstractmethod
    async def _discover(self, model: str | None) -> list[HostRecord]:
        """The source's own lookup (``discover`` wraps it with the timing and error accounting)."""

    async def close(self) -> None:
        return None
