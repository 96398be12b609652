"""Blocking façade over ``HostSelector`` for scripts and notebooks: a private event loop on a daemon thread runs the
calls that touch the network (pings, chain reads); the local ones go straight to the selector."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from dinfer.chain.deploy import Deployment
from dinfer.sdk._selection_signals import ChainReputation, LatencyProbe
from dinfer.sdk.host_stats import HostPerformance, HostStatsStore
from dinfer.sdk.hosts import HostRecord
from dinfer.sdk.selection import CompositeWeights, HostSelector, RankedHost, ReputationWeights, Strategy

T = TypeVar("T")


class SyncHostSelector:
    """``HostSelector``'s calls, blocking. ``rpc_url`` + ``deployment`` enable reputation (read-only chain access).

    Example:
        >>> with SyncHostSelector(stats_path=path, rpc_url=info.rpc_url,
        ...                       deployment=info.contracts) as selector:                  # doctest: +SKIP
        ...     host = selector.select_optimal_host(hosts, MODEL, "best_reputation")
        ...     selector.release(host)
    """

    def __init__(self, *, stats_path: str | os.PathLike[str] | None = None, rpc_url: str | None = None,
                 deployment: Deployment | None = None, weights: CompositeWeights | None = None,
                 reputation_weights: ReputationWeights | None = None, latency_samples: int = 3,
                 latency_timeout_s: float = 2.0, latency_ttl_s: float = 30.0) -> None:
        if (rpc_url is None) != (deployment is None):
            raise ValueError("pass rpc_url and deployment together (both enable reputation), or neither")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="dinfer-selector")
        self._thread.start()

        async def build() -> HostSelector:
            reputation = ChainReputation.connect(rpc_url, deployment) if rpc_url and deployment else None
            latency = LatencyProbe(samples=latency_samples, timeout_s=latency_timeout_s, ttl_s=latency_ttl_s)
            return HostSelector(stats=HostStatsStore(stats_path), latency=latency, reputation=reputation,
                                weights=weights, reputation_weights=reputation_weights)

        self.selector = self._call(build())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def rank_hosts(self, hosts: Iterable[HostRecord], model: str, strategy: str = Strategy.COMPOSITE,
                   **kwargs: Any) -> list[RankedHost]:
        return self._call(self.selector.rank_hosts(list(hosts), model, strategy, **kwargs))

    def select_optimal_host(self, hosts: Iterable[HostRecord], model: str, strategy: str = Strategy.COMPOSITE,
                            **kwargs: Any) -> HostRecord:
        return self._call(self.selector.select_optimal_host(list(hosts), model, strategy, **kwargs))

    def load_balance(self, hosts: Iterable[HostRecord], model: str, **kwargs: Any) -> HostRecord:
        return self._call(self.selector.load_balance(list(hosts), model, **kwargs))

    def filter_by_requirements(self, hosts: Iterable[HostRecord], **kwargs: Any) -> list[HostRecord]:
        return self.selector.filter_by_requirements(hosts, **kwargs)

    def release(self, host: HostRecord | str) -> int:
        return self.selector.release(host)

    def in_flight(self, host: HostRecord | str) -> int:
        return self.selector.in_flight(host)

    def record_outcome(self, host: HostRecord | str, success: bool, duration_s: float) -> HostPerformance:
        return self.selector.record_outcome(host, success, duration_s)

    def performance(self, host: HostRecord | str) -> HostPerformance:
        return self.selector.performance(host)

    def close(self) -> None:
        try:
            self._call(self.selector.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> SyncHostSelector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
