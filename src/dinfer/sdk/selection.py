"""Pick the host to open a session with: ``HostSelector`` ranks ``HostRecord``s by a strategy after a requirements
filter, counts what it hands out (load balancing) and learns from reported outcomes (``HostStatsStore``).

Strategies (``Strategy``; every score is in [0, 1], higher is better, ties keep the caller's order):

- ``lowest_price``: the host's advertised ``price(model)``; a host without one is priced at ``governance_price``
  when the caller passes it, otherwise it ranks after every priced host (score 0).
- ``lowest_latency``: median of ``GET {url}/health`` round trips (``LatencyProbe``); unreachable hosts are excluded.
- ``best_reputation``: on-chain record (``ChainReputation``) plus this client's experience, see ``reputation_score``.
- ``requirements``: the filter alone; hosts keep the caller's order (score 1).
- ``composite``: weighted sum of normalised criteria, see ``CompositeWeights``.
- ``round_robin``: hosts in address order, each ``select_optimal_host`` starting after the previous pick.
- ``load_balance``: fewest in-flight hand-outs (``select_optimal_host`` adds one, ``release`` takes it back);
  hosts at their advertised ``max_concurrent`` are excluded.

Normalisation (composite, and the per-strategy scores): across the candidates left after filtering, a criterion
where lower is better maps ``x`` to ``(max - x) / (max - min)``, one where higher is better to
``(x - min) / (max - min)``; when every candidate has the same value, all get 1.

Peers (``HostSelector(peers=PeerBook)``): blacklisted hosts are excluded (reason ``blacklisted: …``), preferred
hosts are ranked first (in preference order, whatever their score), and ``record_outcome`` also feeds the book
(success / failure, so repeated failures blacklist a host automatically).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from dinfer.crypto import checksum
from dinfer.errors import ChainError, ConfigError, DinferError
from dinfer.sdk._selection_signals import ChainReputation, HostReputation, LatencyProbe
from dinfer.sdk.host_stats import HostPerformance, HostStatsStore
from dinfer.sdk.hosts import HostRecord

if TYPE_CHECKING:
    from dinfer.sdk.discovery.peers import PeerBook

__all__ = [
    "CompositeWeights",
    "HostSelector",
    "NoSuitableHost",
    "RankedHost",
    "ReputationWeights",
    "Requirements",
    "Strategy",
    "reputation_score",
]


class Strategy(StrEnum):
    LOWEST_PRICE = "lowest_price"
    LOWEST_LATENCY = "lowest_latency"
    BEST_REPUTATION = "best_reputation"
    REQUIREMENTS = "requirements"
    COMPOSITE = "composite"
    ROUND_ROBIN = "round_robin"
    LOAD_BALANCE = "load_balance"

    @classmethod
    def parse(cls, value: str) -> Strategy:
        """``value`` as a strategy; ``ValueError`` naming the valid ones otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown strategy {value!r}; valid: {', '.join(s.value for s in cls)}") from None


class NoSuitableHost(DinferError):
    """No host is left to choose from; ``excluded`` maps each host's address to why it was left out."""

    def __init__(self, model: str, excluded: Sequence[tuple[HostRecord, str]]) -> None:
        self.model = model
        self.excluded = {host.address: reason for host, reason in excluded}
        if not excluded:
            detail = "the host list is empty (discover hosts first, or check the discovery sources)"
        else:
            detail = "; ".join(f"{host.address} at {host.url}: {reason}" for host, reason in excluded)
        super().__init__(f"no suitable host for model {model!r}: {detail}")


class RankedHost(NamedTuple):
    host: HostRecord
    score: float
    """In [0, 1], higher is better."""
    details: dict[str, Any]
    """The measurements behind the score (price, latency_s, reputation parts, in_flight, ...)."""


def _check_weights(weights: object) -> None:
    values = {f.name: getattr(weights, f.name) for f in fields(weights)}  # type: ignore[arg-type]
    bad = [name for name, v in values.items() if not isinstance(v, int | float) or v < 0]
    if bad or sum(values.values()) <= 0:
        raise ValueError(f"{type(weights).__name__} must be >= 0 with a positive sum, got {values}")


@dataclass(frozen=True)
class CompositeWeights:
    """Weights of the ``composite`` score ``Σ w_c · n_c / Σ w_c`` (``n_c`` the normalised criterion)."""

    price: float = 0.3
    """Effective price (lower is better); a host with no known price gets 0 when others have one."""
    latency: float = 0.3
    """Median ping (lower is better); measured only when this weight is > 0."""
    reputation: float = 0.2
    """On-chain part of ``reputation_score`` (higher is better); read only when > 0 (needs ``ChainReputation``)."""
    reliability: float = 0.1
    """This client's smoothed success rate with the host (``HostPerformance.reliability``, higher is better)."""
    load: float = 0.1
    """In-flight hand-outs of this selector (lower is better)."""

    def __post_init__(self) -> None:
        _check_weights(self)


@dataclass(frozen=True)
class ReputationWeights:
    """Weights of ``reputation_score``; ``reliability`` is the local feedback, the rest is the on-chain part."""

    availability: float = 0.4
    honesty: float = 0.3
    stake: float = 0.1
    reliability: float = 0.2

    def __post_init__(self) -> None:
        _check_weights(self)
        if self.availability + self.honesty + self.stake <= 0:
            raise ValueError("ReputationWeights needs a positive availability, honesty or stake weight")


def reputation_score(rep: HostReputation, max_stake: int, reliability: float,
                     weights: ReputationWeights) -> tuple[float, float]:
    """(on-chain reputation, best_reputation score) of one host.

    With ``availability = 1 - missed/total`` (1 with no inference this epoch), ``honesty = 1/(1 + invalid)`` (0 when
    INVALID), ``stake_share = stake / max_stake`` over the candidates (1 when every stake is 0) and ``reliability``
    from ``HostStatsStore``::

        chain = (wa·availability + wh·honesty + ws·stake_share) / (wa + wh + ws)
        best  = (wa·availability + wh·honesty + ws·stake_share + wr·reliability) / (wa + wh + ws + wr)
    """
    w = weights
    stake_share = rep.stake / max_stake if max_stake > 0 else 1.0
    chain_sum = w.availability * rep.availability + w.honesty * rep.honesty + w.stake * stake_share
    chain_w = w.availability + w.honesty + w.stake
    return chain_sum / chain_w, (chain_sum + w.reliability * reliability) / (chain_w + w.reliability)


def _normalise(values: Sequence[float], *, lower_is_better: bool) -> list[float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        return [1.0] * len(values)
    return [((hi - v) if lower_is_better else (v - lo)) / (hi - lo) for v in values]


@dataclass(frozen=True)
class Requirements:
    """What a host must meet (``None`` = no constraint)."""

    model: str | None = None
    max_price: int | None = None
    """Wei per token; the advertised price, else the governance price when given (unknown price: excluded)."""
    region: str | None = None
    """Exact match, case-insensitive."""
    min_stake: int | None = None
    hardware: str | None = None
    """Case-insensitive substring of the host's hardware description (``"H100"`` matches ``"NVIDIA H100 80GB"``)."""
    min_reliability: float | None = None
    """Lowest ``HostPerformance.reliability`` (0..1; a host never tried has 0.5)."""

    def __post_init__(self) -> None:
        for name in ("max_price", "min_stake"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer (wei), got {value!r}")
        if self.min_reliability is not None and not 0 <= self.min_reliability <= 1:
            raise ValueError(f"min_reliability must be within [0, 1], got {self.min_reliability!r}")
        if self.max_price is not None and not self.model:
            raise ValueError("max_price needs model= (prices are per model)")

    def why_not(self, host: HostRecord, price: int | None, reliability: float) -> str | None:
        """Why ``host`` fails these requirements, or None when it meets them."""
        if self.model is not None and not host.serves(self.model):
            return f"does not serve {self.model} (serves: {', '.join(host.models) or 'nothing announced'})"
        if self.max_price is not None:
            if price is None:
                return f"advertises no price for {self.model} and no governance price was given"
            if price > self.max_price:
                return f"price {price} wei/token > max_price {self.max_price}"
        if self.region is not None and host.region.lower() != self.region.lower():
            return f"region {host.region or 'unknown'!r} is not {self.region!r}"
        if self.min_stake is not None and host.stake < self.min_stake:
            return f"stake {host.stake} wei < min_stake {self.min_stake}"
        if self.hardware is not None and self.hardware.lower() not in host.metadata.hardware.lower():
            return f"hardware {host.metadata.hardware or 'unknown'!r} does not match {self.hardware!r}"
        if self.min_reliability is not None and reliability < self.min_reliability:
            return f"reliability {reliability:.3f} < min_reliability {self.min_reliability}"
        return None


def effective_price(host: HostRecord, model: str, governance_price: int | None) -> tuple[int | None, str]:
    """(price, where it came from: ``advertised`` / ``governance`` / ``unknown``)."""
    advertised = host.price(model)
    if advertised is not None:
        return advertised, "advertised"
    return (governance_price, "governance") if governance_price is not None else (None, "unknown")


class HostSelector:
    """Ranks and hands out hosts; see the module docstring for the strategies and formulas.

    ``weights`` default to ``CompositeWeights()``, with ``reputation=0`` when no ``reputation`` source is given.

    Example:
        >>> selector = HostSelector(stats_path=tmp_path / "stats.sqlite")           # doctest: +SKIP
        >>> host = await selector.select_optimal_host(hosts, MODEL, strategy="lowest_price")  # doctest: +SKIP
        >>> ...  # open a session on host.url
        >>> selector.release(host); selector.record_outcome(host, success=True, duration_s=12.0)  # doctest: +SKIP
    """

    def __init__(self, *, stats: HostStatsStore | None = None, stats_path: str | os.PathLike[str] | None = None,
                 latency: LatencyProbe | None = None, reputation: ChainReputation | None = None,
                 weights: CompositeWeights | None = None,
                 reputation_weights: ReputationWeights | None = None, peers: PeerBook | None = None) -> None:
        self.stats = stats if stats is not None else HostStatsStore(stats_path)
        self.peers = peers
        """Blacklist and preferred hosts honoured by every strategy (None: not used)."""
        self.latency = latency if latency is not None else LatencyProbe()
        self.reputation = reputation
        self.weights = weights or (CompositeWeights() if reputation is not None else CompositeWeights(reputation=0.0))
        self.reputation_weights = reputation_weights or ReputationWeights()
        self._in_flight: dict[str, int] = {}
        self._rr_last: dict[str, str] = {}

    # --- filtering
    def filter_by_requirements(self, hosts: Iterable[HostRecord], *, governance_price: int | None = None,
                               **requirements: Any) -> list[HostRecord]:
        """The hosts meeting ``Requirements(**requirements)``; ``NoSuitableHost`` (with each reason) when none do.

        Example:
            >>> selector.filter_by_requirements(hosts, model=MODEL, max_price=10**9, region="eu")  # doctest: +SKIP
        """
        req = Requirements(**requirements)
        kept, excluded = self._partition(_unique(hosts), req, governance_price)
        if not kept:
            raise NoSuitableHost(req.model or "any", excluded)
        return kept

    def _partition(self, hosts: list[HostRecord], req: Requirements,
                   governance_price: int | None) -> tuple[list[HostRecord], list[tuple[HostRecord, str]]]:
        kept: list[HostRecord] = []
        excluded: list[tuple[HostRecord, str]] = []
        for host in hosts:
            if self.peers is not None and (entry := self.peers.blacklist_entry(host)) is not None:
                excluded.append((host, f"blacklisted: {entry.reason}"))
                continue
            price = effective_price(host, req.model, governance_price)[0] if req.model else None
            reason = req.why_not(host, price, self.stats.get(host.address).reliability)
            if reason is None:
                kept.append(host)
            else:
                excluded.append((host, reason))
        return kept, excluded

    # --- ranking
    async def rank_hosts(self, hosts: Iterable[HostRecord], model: str, strategy: str = Strategy.COMPOSITE, *,
                         governance_price: int | None = None, **requirements: Any) -> list[RankedHost]:
        """Hosts serving ``model`` that meet the requirements, best first, with score and details.

        ``NoSuitableHost`` when none is left (each host's reason in ``excluded``).

        Example:
            >>> for host, score, details in await selector.rank_hosts(hosts, MODEL, "composite"):  # doctest: +SKIP
            ...     print(host.url, round(score, 3), details)
        """
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty model id, got {model!r}")
        kind = Strategy.parse(strategy)
        candidates, excluded = self._partition(_unique(hosts), Requirements(model=model, **requirements),
                                               governance_price)
        ranked: list[RankedHost] = []
        if candidates:
            ranked = await self._rank(kind, candidates, model, governance_price, excluded)
        if self.peers is not None:
            ranked = self.peers.preferred_first(ranked, lambda r: r.host.address)
        if not ranked:
            raise NoSuitableHost(model, excluded)
        return ranked

    async def _rank(self, kind: Strategy, hosts: list[HostRecord], model: str, governance_price: int | None,
                    excluded: list[tuple[HostRecord, str]]) -> list[RankedHost]:
        if kind is Strategy.LOWEST_PRICE:
            return self._by_price(hosts, model, governance_price)
        if kind is Strategy.LOWEST_LATENCY:
            return await self._by_latency(hosts, excluded)
        if kind is Strategy.BEST_REPUTATION:
            return await self._by_reputation(hosts, excluded)
        if kind is Strategy.COMPOSITE:
            return await self._composite(hosts, model, governance_price, excluded)
        if kind is Strategy.ROUND_ROBIN:
            return self._round_robin(hosts, model)
        if kind is Strategy.LOAD_BALANCE:
            return self._by_load(hosts, excluded)
        return [RankedHost(h, 1.0, {}) for h in hosts]

    def _price_scores(self, hosts: list[HostRecord], model: str,
                      governance_price: int | None) -> list[tuple[float, dict[str, Any]]]:
        priced = [effective_price(h, model, governance_price) for h in hosts]
        known = [p for p, _ in priced if p is not None]
        norm = iter(_normalise(known, lower_is_better=True)) if known else iter(())
        return [(next(norm) if p is not None else (0.0 if known else 1.0), {"price": p, "price_source": source})
                for p, source in priced]

    def _by_price(self, hosts: list[HostRecord], model: str, governance_price: int | None) -> list[RankedHost]:
        scored = [RankedHost(h, s, d) for h, (s, d) in zip(hosts, self._price_scores(hosts, model, governance_price),
                                                           strict=True)]
        return sorted(scored, key=lambda r: (r.details["price"] is None, r.details["price"] or 0))

    async def _latencies(self, hosts: list[HostRecord],
                         excluded: list[tuple[HostRecord, str]]) -> tuple[list[HostRecord], list[float]]:
        results = await self.latency.measure_all(h.url for h in hosts)
        kept, medians = [], []
        for host in hosts:
            result = results[host.url]
            if result.median_s is None:
                excluded.append((host, result.error or "unreachable"))
            else:
                kept.append(host)
                medians.append(result.median_s)
        return kept, medians

    async def _by_latency(self, hosts: list[HostRecord], excluded: list[tuple[HostRecord, str]]) -> list[RankedHost]:
        kept, medians = await self._latencies(hosts, excluded)
        if not kept:
            return []
        scored = [RankedHost(h, s, {"latency_s": m})
                  for h, s, m in zip(kept, _normalise(medians, lower_is_better=True), medians, strict=True)]
        return sorted(scored, key=lambda r: r.details["latency_s"])

    async def _reputations(self, hosts: list[HostRecord], excluded: list[tuple[HostRecord, str]]
                           ) -> list[tuple[HostRecord, float, float, dict[str, Any]]]:
        """(host, on-chain reputation, best_reputation score, details) of every host whose record could be read."""
        if self.reputation is None:
            raise ConfigError("ranking by reputation needs on-chain data: pass HostSelector(reputation="
                              "ChainReputation.connect(rpc_url, deployment)), or a CompositeWeights with reputation=0")
        source = self.reputation
        answers = await asyncio.gather(*(source.of(h) for h in hosts), return_exceptions=True)
        reps: list[tuple[HostRecord, HostReputation]] = []
        for host, answer in zip(hosts, answers, strict=True):
            if isinstance(answer, ChainError):
                excluded.append((host, f"on-chain record unavailable: {answer}"))
            elif isinstance(answer, BaseException):
                raise answer
            else:
                reps.append((host, answer))
        max_stake = max((rep.stake for _, rep in reps), default=0)
        out = []
        for host, rep in reps:
            reliability = self.stats.get(host.address).reliability
            chain, best = reputation_score(rep, max_stake, reliability, self.reputation_weights)
            details = {"epoch": rep.epoch, "missed": rep.missed, "total": rep.total, "invalid": rep.invalid,
                       "status": rep.status.name, "stake": rep.stake, "availability": rep.availability,
                       "honesty": rep.honesty, "stake_share": rep.stake / max_stake if max_stake else 1.0,
                       "reliability": reliability, "chain_reputation": chain}
            out.append((host, chain, best, details))
        return out

    async def _by_reputation(self, hosts: list[HostRecord],
                             excluded: list[tuple[HostRecord, str]]) -> list[RankedHost]:
        scored = [RankedHost(h, best, d) for h, _, best, d in await self._reputations(hosts, excluded)]
        return sorted(scored, key=lambda r: -r.score)

    async def _composite(self, hosts: list[HostRecord], model: str, governance_price: int | None,
                         excluded: list[tuple[HostRecord, str]]) -> list[RankedHost]:
        w = self.weights
        details: dict[str, dict[str, Any]] = {h.address: {} for h in hosts}
        if w.latency > 0:
            hosts, medians = await self._latencies(hosts, excluded)
            for h, m in zip(hosts, medians, strict=True):
                details[h.address]["latency_s"] = m
        chain: dict[str, float] = {}
        if w.reputation > 0 and hosts:
            for h, rep, _, _d in await self._reputations(hosts, excluded):
                chain[h.address] = rep
            hosts = [h for h in hosts if h.address in chain]
        if not hosts:
            return []
        criteria: list[tuple[str, float, list[float]]] = []
        if w.price > 0:
            prices = self._price_scores(hosts, model, governance_price)
            for h, (_, d) in zip(hosts, prices, strict=True):
                details[h.address].update(d)
            criteria.append(("price", w.price, [s for s, _ in prices]))
        if w.latency > 0:
            criteria.append(("latency", w.latency, _normalise([details[h.address]["latency_s"] for h in hosts],
                                                              lower_is_better=True)))
        if w.reputation > 0:
            criteria.append(("reputation", w.reputation,
                             _normalise([chain[h.address] for h in hosts], lower_is_better=False)))
        if w.reliability > 0:
            rel = [self.stats.get(h.address).reliability for h in hosts]
            criteria.append(("reliability", w.reliability, _normalise(rel, lower_is_better=False)))
        if w.load > 0:
            load = [float(self.in_flight(h)) for h in hosts]
            criteria.append(("load", w.load, _normalise(load, lower_is_better=True)))
        total_w = sum(weight for _, weight, _ in criteria)
        ranked = []
        for i, h in enumerate(hosts):
            d = details[h.address]
            d.update({"reputation": chain.get(h.address), "reliability": self.stats.get(h.address).reliability,
                      "in_flight": self.in_flight(h)})
            d.update({f"{name}_norm": values[i] for name, _, values in criteria})
            ranked.append(RankedHost(h, sum(weight * values[i] for _, weight, values in criteria) / total_w, d))
        return sorted(ranked, key=lambda r: -r.score)

    def _round_robin(self, hosts: list[HostRecord], model: str) -> list[RankedHost]:
        ordered = sorted(hosts, key=lambda h: h.address.lower())
        last = self._rr_last.get(model)
        start = next((i for i, h in enumerate(ordered) if last is not None and h.address.lower() > last.lower()), 0)
        rotated = ordered[start:] + ordered[:start]
        n = len(rotated)
        return [RankedHost(h, 1 - i / n, {"position": i}) for i, h in enumerate(rotated)]

    def _by_load(self, hosts: list[HostRecord], excluded: list[tuple[HostRecord, str]]) -> list[RankedHost]:
        kept = []
        for h in hosts:
            cap, n = h.metadata.max_concurrent, self.in_flight(h)
            if cap and n >= cap:
                excluded.append((h, f"at capacity: {n} in flight >= max_concurrent {cap}"))
            else:
                kept.append(h)
        if not kept:
            return []
        load = [float(self.in_flight(h)) for h in kept]
        scored = [RankedHost(h, s, {"in_flight": int(n), "max_concurrent": h.metadata.max_concurrent})
                  for h, s, n in zip(kept, _normalise(load, lower_is_better=True), load, strict=True)]
        return sorted(scored, key=lambda r: r.details["in_flight"])

    # --- handing out
    async def select_optimal_host(self, hosts: Iterable[HostRecord], model: str, strategy: str = Strategy.COMPOSITE,
                                  *, governance_price: int | None = None, **requirements: Any) -> HostRecord:
        """The best host by ``strategy``; counts it as in flight until ``release(host)``.

        Example:
            >>> host = await selector.select_optimal_host(hosts, MODEL, "lowest_latency", region="eu")  # doctest: +SKIP
        """
        kind = Strategy.parse(strategy)
        best = (await self.rank_hosts(hosts, model, kind, governance_price=governance_price, **requirements))[0].host
        self._in_flight[best.address] = self._in_flight.get(best.address, 0) + 1
        self.stats.record_selection(best.address)
        if kind is Strategy.ROUND_ROBIN:
            self._rr_last[model] = best.address
        return best

    async def load_balance(self, hosts: Iterable[HostRecord], model: str, **requirements: Any) -> HostRecord:
        """``select_optimal_host`` with the ``load_balance`` strategy (fewest in flight)."""
        return await self.select_optimal_host(hosts, model, Strategy.LOAD_BALANCE, **requirements)

    def in_flight(self, host: HostRecord | str) -> int:
        """Hand-outs of ``host`` not yet released."""
        return self._in_flight.get(_address(host), 0)

    def release(self, host: HostRecord | str) -> int:
        """Give back one hand-out of ``host``; returns how many are still in flight."""
        address = _address(host)
        count = self._in_flight.get(address, 0)
        if count <= 0:
            raise ValueError(f"host {address} has no in-flight selection to release")
        self._in_flight[address] = count - 1
        return count - 1

    # --- performance feedback
    def record_outcome(self, host: HostRecord | str, success: bool, duration_s: float) -> HostPerformance:
        """Report how a session/request on ``host`` ended; feeds ``reliability`` into later rankings (persisted)."""
        performance = self.stats.record_outcome(_address(host), success, duration_s)
        if self.peers is not None:
            if success:
                self.peers.record_success(_address(host))
            else:
                self.peers.record_failure(_address(host), reason="reported by record_outcome")
        return performance

    def performance(self, host: HostRecord | str) -> HostPerformance:
        """Selections, success rate, average duration and reliability of ``host`` with this client."""
        return self.stats.get(_address(host))

    @asynccontextmanager
    async def lease(self, hosts: Iterable[HostRecord], model: str, strategy: str = Strategy.COMPOSITE,
                    **kwargs: Any) -> AsyncIterator[HostRecord]:
        """Select a host for the block; on exit release it and record the outcome (an exception = failure).

        Example:
            >>> async with selector.lease(hosts, MODEL, "load_balance") as host:     # doctest: +SKIP
            ...     await run_session(host.url)
        """
        host = await self.select_optimal_host(hosts, model, strategy, **kwargs)
        started, ok = time.monotonic(), False
        try:
            yield host
            ok = True
        finally:
            self.release(host)
            self.record_outcome(host, ok, time.monotonic() - started)

    async def aclose(self) -> None:
        """Close the ping client, the chain connection (when ``ChainReputation.connect`` made it) and the store."""
        await self.latency.aclose()
        if self.reputation is not None:
            await self.reputation.aclose()
        self.stats.close()


def _address(host: HostRecord | str) -> str:
    return host.address if isinstance(host, HostRecord) else checksum(host)


def _unique(hosts: Iterable[HostRecord]) -> list[HostRecord]:
    """The hosts, first record per address kept."""
    seen: dict[str, HostRecord] = {}
    for host in hosts:
        if not isinstance(host, HostRecord):
            raise TypeError(f"hosts must be HostRecord objects, got {type(host).__name__}")
        seen.setdefault(host.address, host)
    return list(seen.values())
