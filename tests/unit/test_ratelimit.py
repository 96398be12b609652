"""Token buckets per client."""

from __future__ import annotations

import pytest

from dinfer.ratelimit import RateLimiter


def test_burst_then_wait_then_refill() -> None:
    rl = RateLimiter(per_minute=60, capacity=3)
    assert [rl.acquire("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = rl.acquire("a", now=0.0)
    assert wait == pytest.approx(1.0)
    assert RateLimiter.retry_after_header(wait) == "1"
    assert rl.acquire("a", now=1.0) == 0.0


def test_clients_are_independent() -> None:
    rl = RateLimiter(per_minute=60, capacity=1)
    assert rl.acquire("a", now=0) == 0.0
    assert rl.acquire("a", now=0) > 0
    assert rl.acquire("b", now=0) == 0.0


def test_memory_is_bounded() -> None:
    rl = RateLimiter(per_minute=60, capacity=1, max_keys=100)
    for i in range(1000):
        rl.acquire(f"k{i}", now=float(i))
    assert len(rl._buckets) <= 100


def test_retry_after_rounds_up() -> None:
    assert RateLimiter.retry_after_header(0.01) == "1"
    assert RateLimiter.retry_after_header(2.2) == "3"
    with pytest.raises(ValueError):
        RateLimiter(per_minute=0)
