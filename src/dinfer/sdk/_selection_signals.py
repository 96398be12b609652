"""The measurements host selection ranks by: ping latency (``LatencyProbe``) and on-chain record
(``ChainReputation``). Both cache their answers for ``ttl_s`` so ranking the same hosts again costs nothing."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from dinfer.chain.contracts.epochs import EpochsClient, MemberStatus
from dinfer.chain.contracts.inference import InferenceClient, ValidationClient
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.deploy import Deployment, bind
from dinfer.sdk.hosts import HostRecord

__all__ = ["ChainReputation", "HostReputation", "LatencyProbe", "LatencyResult"]

_ZERO_ADDRESS = "0x" + "00" * 20


@dataclass(frozen=True)
class LatencyResult:
    """Round-trip times of ``GET {url}/health``; ``error`` says why the host counts as unreachable."""

    url: str
    median_s: float | None
    samples: tuple[float, ...] = ()
    error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.error is None


class LatencyProbe:
    """Pings hosts: ``samples`` sequential ``GET /health`` round trips, the median kept for ``ttl_s``.

    A host whose health check fails (connection error, timeout, non-200) is unreachable: the failure is cached like
    a measurement so a dead host is not re-dialled on every ranking.
    """

    def __init__(self, *, samples: int = 3, timeout_s: float = 2.0, ttl_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        if timeout_s <= 0 or ttl_s < 0:
            raise ValueError(f"timeout_s must be > 0 and ttl_s >= 0, got {timeout_s}, {ttl_s}")
        self.samples, self.timeout_s, self.ttl_s = samples, timeout_s, ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, LatencyResult]] = {}
        self._http: httpx.AsyncClient | None = None

    async def measure(self, url: str) -> LatencyResult:
        """The (cached) latency of the host at ``url``."""
        url = url.rstrip("/")
        cached = self._cache.get(url)
        if cached is not None and self._clock() - cached[0] < self.ttl_s:
            return cached[1]
        result = await self._ping(url)
        self._cache[url] = (self._clock(), result)
        return result

    async def measure_all(self, urls: Iterable[str]) -> dict[str, LatencyResult]:
        """Every URL measured concurrently; keys as given."""
        unique = list(dict.fromkeys(urls))
        results = await asyncio.gather(*(self.measure(u) for u in unique))
        return dict(zip(unique, results, strict=True))

    def invalidate(self, url: str | None = None) -> None:
        """Forget one URL's measurement (or all of them)."""
        if url is None:
            self._cache.clear()
        else:
            self._cache.pop(url.rstrip("/"), None)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _ping(self, url: str) -> LatencyResult:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout_s)
        samples: list[float] = []
        for _ in range(self.samples):
            started = time.perf_counter()
            try:
                response = await self._http.get(f"{url}/health")
            except httpx.TimeoutException:
                error = f"unreachable: GET /health timed out after {self.timeout_s}s"
            except httpx.HTTPError as exc:
                error = f"unreachable: {type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    samples.append(time.perf_counter() - started)
                    continue
                error = f"unhealthy: GET /health answered {response.status_code}"
            return LatencyResult(url, None, tuple(samples), error)
        return LatencyResult(url, statistics.median(samples), tuple(samples))


@dataclass(frozen=True)
class HostReputation:
    """A host's on-chain record in one epoch (Inference ``executor_stats``, Validation ``invalid_count``, stake)."""

    address: str
    epoch: int
    missed: int
    total: int
    invalid: int
    status: MemberStatus
    stake: int

    @property
    def availability(self) -> float:
        """``1 - missed / total``; 1.0 for a host with no inference recorded this epoch."""
        return 1.0 - self.missed / self.total if self.total else 1.0

    @property
    def honesty(self) -> float:
        """``1 / (1 + invalid)``; 0.0 when the epoch marked the host INVALID."""
        return 0.0 if self.status == MemberStatus.INVALID else 1.0 / (1 + self.invalid)


class ChainReputation:
    """Reads hosts' records from the Inference and Validation contracts in the current epoch (cached ``ttl_s``).

    Stake is the Registry's ``collateral_of`` when a ``registry`` is given, the ``HostRecord``'s stake otherwise.
    """

    def __init__(self, inference: InferenceClient, epochs: EpochsClient, registry: RegistryClient | None = None,
                 *, ttl_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.inference, self.epochs, self.registry = inference, epochs, registry
        self.ttl_s = ttl_s
        self._clock = clock
        self._validation: ValidationClient | None = None
        self._cache: dict[str, tuple[float, HostReputation]] = {}
        self._w3: Any = None

    @classmethod
    def connect(cls, rpc_url: str, deployment: Deployment, **kwargs: Any) -> ChainReputation:
        """Read-only clients over a new RPC connection (closed by ``aclose``); ``kwargs`` as the constructor.

        Example:
            >>> reputation = ChainReputation.connect(info.rpc_url, info.contracts)   # doctest: +SKIP
        """
        from dinfer.chain.backends import connect

        w3 = connect([rpc_url])
        reputation = cls(
            InferenceClient(bind(w3, "Inference", deployment.address("Inference"))),
            EpochsClient(bind(w3, "Epochs", deployment.address("Epochs"))),
            RegistryClient(bind(w3, "Registry", deployment.address("Registry"))),
            **kwargs,
        )
        reputation._w3 = w3
        return reputation

    async def of(self, host: HostRecord) -> HostReputation:
        """The (cached) record of ``host``; ``ChainError`` when the chain cannot be read."""
        cached = self._cache.get(host.address)
        if cached is not None and self._clock() - cached[0] < self.ttl_s:
            return cached[1]
        epoch = await self.epochs.current_epoch()
        stats = await self.inference.executor_stats(epoch, host.address)
        validation = await self._validation_client()
        invalid = await validation.invalid_count(epoch, host.address) if validation is not None else 0
        stake = await self.registry.collateral_of(host.address) if self.registry is not None else host.stake
        rep = HostReputation(host.address, epoch, stats.missed, stats.total, invalid, stats.status, stake)
        self._cache[host.address] = (self._clock(), rep)
        return rep

    async def aclose(self) -> None:
        if self._w3 is not None:
            await self._w3.provider.disconnect()
            self._w3 = None

    async def _validation_client(self) -> ValidationClient | None:
        if self._validation is None:
            if await self.inference.validation_address() == _ZERO_ADDRESS:
                return None  # a ledger deployed without Validation: nobody can be found invalid
            self._validation = await self.inference.validation_client()
        return self._validation
