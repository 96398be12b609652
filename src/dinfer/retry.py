"""Retries as data: one ``RetryPolicy`` used by the RPC pool, TA fallback and the SDK (no ad-hoc loops)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter.

    ``max_retries`` counts retries after the first try (0 = try once).
    """

    min_backoff: float = 0.05
    max_backoff: float = 5.0
    max_retries: int = 5
    multiplier: float = 2.0
    jitter: float = 0.1
    """Fraction of each delay added at random so peers do not retry in lock-step."""

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        base = min(self.max_backoff, self.min_backoff * self.multiplier ** max(0, attempt - 1))
        return base * (1 + random.random() * self.jitter)

    def delays(self) -> Iterator[float]:
        """The wait before each retry, ``max_retries`` of them."""
        for attempt in range(1, self.max_retries + 1):
            yield self.delay(attempt)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set, whichever comes first; True when stopped (polling loops)."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
