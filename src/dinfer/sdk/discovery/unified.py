"""Unified discovery: ask every enabled source at once, merge by host address, filter, sort by preference.

A failing or slow source does not fail the call: its error lands in its stats and the others answer. Only when
every enabled source fails does ``discover_all_hosts`` raise ``DiscoveryUnavailable`` (naming each failure).
Sorting: the best-ranked source that reported a host (``set_discovery_priority``), then stake (descending), then
address (stable order). With ``peers=`` (a ``PeerBook``), blacklisted hosts are dropped and preferred hosts come
first, whatever their source or stake; ``report_host`` records the report there and posts it to the HTTP services.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from dinfer.sdk.discovery.filters import HostFilter
from dinfer.sdk.discovery.http import HttpDiscoveryClient
from dinfer.sdk.discovery.peers import PeerBook, peer_address
from dinfer.sdk.discovery.reports import ReportError, ReportIssue
from dinfer.sdk.discovery.source import DiscoveryError, DiscoverySource, DiscoveryUnavailable
from dinfer.sdk.hosts import HostRecord

__all__ = ["DEFAULT_PRIORITY", "UnifiedDiscovery"]

log = logging.getLogger(__name__)

DEFAULT_PRIORITY = ("registry", "http", "dht", "mdns")
"""Chain data first (authoritative stake and models), then the directory, then peer-to-peer announcements."""


class UnifiedDiscovery:
    """All discovery sources behind one call.

    Example:
        >>> discovery = UnifiedDiscovery([RegistrySource(registry), HttpDiscoveryClient(url)])   # doctest: +SKIP
        >>> hosts = await discovery.discover_all_hosts("m", region="eu-west", min_stake=10**18)  # doctest: +SKIP
        >>> discovery.set_discovery_priority(["http", "registry"])                               # doctest: +SKIP
        >>> discovery.get_discovery_stats()["http"]["cache_hit_rate"]                           # doctest: +SKIP
    """

    def __init__(self, sources: list[DiscoverySource], *, priority: list[str] | None = None,
                 source_timeout_s: float = 5.0, peers: PeerBook | None = None) -> None:
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"discovery source names must be unique, got {names}")
        self._sources = {s.name: s for s in sources}
        self._enabled = dict.fromkeys(names, True)
        self.source_timeout_s = source_timeout_s
        self.peers = peers
        """Blacklist, preferred hosts and per-host reputation (None: every host is treated alike)."""
        self._priority: list[str] = []
        self.set_discovery_priority(priority or [n for n in DEFAULT_PRIORITY if n in names])

    @property
    def sources(self) -> dict[str, DiscoverySource]:
        return dict(self._sources)

    def set_discovery_priority(self, order: list[str]) -> None:
        """Rank sources (first = preferred); unnamed sources follow in their original order."""
        unknown = [n for n in order if n not in self._sources]
        if unknown:
            raise DiscoveryError(f"unknown discovery source(s) {unknown}; known: {list(self._sources)}")
        self._priority = list(dict.fromkeys([*order, *self._sources]))

    @property
    def priority(self) -> list[str]:
        return list(self._priority)

    def enable_discovery_source(self, name: str, enabled: bool = True) -> None:
        """Turn a source on or off (off: not asked, its cached data not used)."""
        if name not in self._sources:
            raise DiscoveryError(f"unknown discovery source {name!r}; known: {list(self._sources)}")
        self._enabled[name] = enabled

    async def discover_all_hosts(self, model: str | None = None, *, max_price: int | None = None,
                                 region: str | None = None, min_stake: int | None = None) -> list[HostRecord]:
        """Every host the enabled sources know, merged by address, filtered and sorted by preference."""
        host_filter = HostFilter(model=model, max_price=max_price, region=region, min_stake=min_stake)
        names = [n for n in self._priority if self._enabled[n]]
        if not names:
            raise DiscoveryUnavailable("every discovery source is disabled; enable one with enable_discovery_source")
        results = await asyncio.gather(*(self._ask(n, model) for n in names))
        failures = [f"{n}: {r}" for n, r in zip(names, results, strict=True) if isinstance(r, BaseException)]
        if len(failures) == len(names):
            raise DiscoveryUnavailable("no discovery source answered — " + "; ".join(failures))
        merged: dict[str, HostRecord] = {}
        for result in results:
            if isinstance(result, BaseException):
                continue
            for host in result:
                merged[host.address] = merged[host.address].merged(host) if host.address in merged else host
        ordered = sorted(host_filter.apply(list(merged.values())), key=self._preference)
        return self.peers.arrange(ordered) if self.peers is not None else ordered

    async def report_host(self, host: HostRecord | str, issue: ReportIssue | str,
                          detail: str = "") -> list[dict[str, Any]]:
        """Report a misbehaving host: counted in ``peers`` (when set) and posted, signed, to every HTTP discovery
        source that has a ``reporter_key``; returns the services' acknowledgements.

        Example:
            >>> await discovery.report_host(host, "overcharge", "billed 3x the advertised price")  # doctest: +SKIP
        """
        address = peer_address(host)
        ReportIssue.parse(str(issue))
        services = [s for s in self._sources.values()
                    if isinstance(s, HttpDiscoveryClient) and s.reporter_key is not None]
        if not services:
            raise ReportError("no HTTP discovery source can sign reports: add HttpDiscoveryClient(url, "
                              "reporter_key=<your private key>)")
        acks: list[dict[str, Any]] = []
        for service in services:
            acks.extend(await service.report_host(address, issue, detail))
        if self.peers is not None:
            self.peers.note_report(address)  # counted once accepted (a refused report raised above)
        return acks

    async def _ask(self, name: str, model: str | None) -> list[HostRecord] | BaseException:
        source = self._sources[name]
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(source.discover(model), self.source_timeout_s)
        except TimeoutError:
            error = DiscoveryUnavailable(f"{name} did not answer within {self.source_timeout_s} s")
            source.stats.record(started, error)  # the cancelled call could not account itself
            return error
        except DiscoveryError as exc:
            log.info("discovery source %s failed: %s", name, exc)
            return exc
        except Exception as exc:  # a third-party source broke its contract: keep the others answering
            log.warning("discovery source %s raised %s", name, exc)
            source.stats.record(started, exc)
            return exc

    def _preference(self, host: HostRecord) -> tuple[int, int, str]:
        ranks = [self._priority.index(s) for s in host.sources if s in self._priority]
        return (min(ranks, default=len(self._priority)), -host.stake, host.address)

    def get_discovery_stats(self) -> dict[str, dict[str, Any]]:
        """Per source: enabled, healthy, calls, successes, success_rate, avg_discovery_ms, cache_hits,
        cache_hit_rate, rejected, last_error. With ``peers``, also ``"peers"``: ``PeerBook.summary()`` (per-host
        reputation and connection quality, blacklist, preferred list)."""
        stats = {n: {"enabled": self._enabled[n], "priority": self._priority.index(n), **s.stats.as_dict()}
                 for n, s in self._sources.items()}
        if self.peers is not None:
            stats["peers"] = self.peers.summary()
        return stats

    async def close(self) -> None:
        """Close every source (sockets, watchers, background refreshes)."""
        for source in self._sources.values():
            try:
                await source.close()
            except Exception as exc:
                log.warning("closing discovery source %s: %s", source.name, exc)
