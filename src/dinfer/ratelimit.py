"""Per-client token buckets (not one global limit): each client gets its own budget."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``capacity`` requests burst, refilled at ``per_minute`` / 60 per second, per key.

    Example:
        >>> limiter = RateLimiter(per_minute=60)
        >>> limiter.acquire("0xabc")      # 0.0 → allowed; otherwise seconds to wait (Retry-After)
        0.0
    """

    def __init__(self, per_minute: float, capacity: float | None = None, max_keys: int = 100_000) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        self.capacity = capacity if capacity is not None else max(1.0, per_minute)
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str, cost: float = 1.0, now: float | None = None) -> float:
        """Take ``cost`` from ``key``'s bucket: 0.0 when allowed, else the seconds until it would be."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(now)
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate

    def charge(self, key: str, cost: float, now: float | None = None) -> None:
        """Take ``cost`` from ``key``'s bucket unconditionally (it may go negative): work already done, such as the
        completion tokens of a generation admitted earlier, is paid back before the next ``acquire`` succeeds."""
        now = time.monotonic() if now is None else now
        self.acquire(key, 0.0, now)  # creates and refills the bucket; a zero cost never takes anything
        self._buckets[key].tokens -= cost

    @staticmethod
    def retry_after_header(wait_s: float) -> str:
        """Retry-After in whole seconds (rounded up, at least 1)."""
        return str(max(1, math.ceil(wait_s)))

    def _evict(self, now: float) -> None:
        """Forget full buckets (their owners are idle); bounded memory under many clients."""
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.capacity]
        for k in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[k]
