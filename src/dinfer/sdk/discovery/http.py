"""Client of ``dinfer discovery`` HTTP services (``GET /v1/hosts``), plus the wire schema both sides use.

The client caches each query for ``cache_ttl_s`` and, once used, refreshes the cached queries in the background
every ``refresh_interval_s`` so callers are answered from memory. A failed fetch is retried with capped
exponential backoff (``RetryPolicy``) over every configured service URL; when all fail the call raises
``DiscoveryUnavailable`` (unreachable, 5xx) or ``BadDiscoveryResponse`` (an answer that is not a host list), and
unified discovery carries on with its other sources. Entries carrying a signed announcement are verified (bad or
expired → dropped, ``stats.rejected``); chain-only entries are the service's reading of the Registry.

With ``reporter_key``, ``report_host`` signs a report about a misbehaving host and posts it to every service
(``POST /v1/reports``); ``host_reports`` reads a service's aggregate (``GET /v1/reports/{host}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dinfer.announce import DEFAULT_MAX_AGE_S, AnnouncementError, verify_announcement
from dinfer.crypto import checksum
from dinfer.retry import RetryPolicy
from dinfer.sdk.discovery.filters import HostFilter
from dinfer.sdk.discovery.reports import (
    HostReport,
    ReportError,
    ReportIssue,
    ReportRateLimited,
    ReportReplayed,
    ReportSignatureError,
    UnknownReportedHost,
    sign_report,
)
from dinfer.sdk.discovery.source import BadDiscoveryResponse, DiscoveryError, DiscoveryUnavailable, MeasuredSource
from dinfer.sdk.hosts import HostRecord, MetadataError, parse_metadata

__all__ = ["HostEntry", "HostsResponse", "HttpDiscoveryClient"]

log = logging.getLogger(__name__)


class HostEntry(BaseModel):
    """One host in ``GET /v1/hosts``."""

    model_config = ConfigDict(extra="ignore")

    address: str
    url: str
    models: list[str] = Field(default_factory=list, max_length=64)
    metadata: dict[str, Any] = Field(default_factory=dict)
    stake: int = Field(0, ge=0)
    seen_at: float = 0.0
    origins: list[str] = Field(default_factory=list)
    """Where the service learnt of the host: ``announcement`` and/or ``registry``."""
    announcement: dict[str, Any] | None = None
    """The host's signed announcement, when it sent one."""

    @classmethod
    def of(cls, record: HostRecord, origins: list[str], announcement: dict[str, Any] | None) -> HostEntry:
        return cls(address=record.address, url=record.url, models=list(record.models),
                   metadata=record.metadata.model_dump(), stake=record.stake, seen_at=record.seen_at,
                   origins=origins, announcement=announcement)


class HostsResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hosts: list[HostEntry]
    chain: str = "off"
    """``ok``, ``off`` (no RPC configured) or ``error: …`` (the service could not read the Registry)."""


class HttpDiscoveryClient(MeasuredSource):
    """Hosts from one or more HTTP discovery services.

    Example:
        >>> client = HttpDiscoveryClient(["http://127.0.0.1:8700"], cache_ttl_s=30)      # doctest: +SKIP
        >>> hosts = await client.find(HostFilter(model="m", region="eu-west"))           # doctest: +SKIP
    """

    name = "http"

    def __init__(self, urls: str | list[str], *, cache_ttl_s: float = 30.0, refresh_interval_s: float | None = None,
                 retry: RetryPolicy | None = None, timeout_s: float = 5.0, max_age_s: float = DEFAULT_MAX_AGE_S,
                 background_refresh: bool = True, http: httpx.AsyncClient | None = None,
                 reporter_key: str | None = None) -> None:
        super().__init__()
        self.reporter_key = reporter_key
        """Private key that signs ``report_host`` reports (None: this client cannot report)."""
        self.urls = [u.rstrip("/") for u in ([urls] if isinstance(urls, str) else urls)]
        if not self.urls or not all(u.startswith(("http://", "https://")) for u in self.urls):
            raise ValueError(f"discovery service URLs must be http(s) URLs, got {urls!r}")
        self.cache_ttl_s = cache_ttl_s
        self.refresh_interval_s = refresh_interval_s if refresh_interval_s is not None else cache_ttl_s / 2
        self.retry = retry or RetryPolicy(min_backoff=0.05, max_backoff=1.0, max_retries=2)
        self.max_age_s = max_age_s
        self.background_refresh = background_refresh
        self._http = http or httpx.AsyncClient(timeout=timeout_s)
        self._owns_http = http is None
        self._cache: dict[tuple[tuple[str, Any], ...], tuple[float, list[HostRecord]]] = {}
        self._refresher: asyncio.Task[None] | None = None
        self.refreshes = 0
        """Background refreshes that succeeded (each re-fetches every cached query)."""

    async def _discover(self, model: str | None) -> list[HostRecord]:
        return await self._cached(HostFilter(model=model))

    async def find(self, host_filter: HostFilter) -> list[HostRecord]:
        """Hosts matching ``host_filter``, filtered by the service (cached per filter)."""
        return await self._timed(self._cached(host_filter))

    async def _cached(self, host_filter: HostFilter) -> list[HostRecord]:
        key = tuple(sorted(host_filter.query().items()))
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.cache_ttl_s:
            self.stats.cache_hits += 1
            return hit[1]
        records = await self._fetch(dict(key))
        self._cache[key] = (time.monotonic(), records)
        if self.background_refresh and (self._refresher is None or self._refresher.done()):
            self._refresher = asyncio.create_task(self._refresh_loop(), name="http-discovery-refresh")
        return records

    async def _fetch(self, params: dict[str, Any]) -> list[HostRecord]:
        """GET /v1/hosts from the first service that answers, with backoff between rounds."""
        delays = [0.0, *self.retry.delays()]
        last: DiscoveryError | None = None
        for delay in delays:
            if delay:
                await asyncio.sleep(delay)
            for url in self.urls:
                try:
                    return await self._fetch_one(url, params)
                except DiscoveryError as exc:
                    last = exc
            if isinstance(last, BadDiscoveryResponse) and len(self.urls) == 1:
                break  # the service answers, but with garbage: retrying will not help
        assert last is not None
        raise last

    async def _fetch_one(self, url: str, params: dict[str, Any]) -> list[HostRecord]:
        try:
            resp = await self._http.get(f"{url}/v1/hosts", params=params)
        except httpx.HTTPError as exc:
            raise DiscoveryUnavailable(f"discovery service {url} unreachable: {type(exc).__name__}: {exc}") from None
        if resp.status_code >= 500:
            raise DiscoveryUnavailable(f"discovery service {url} answered {resp.status_code}")
        if resp.status_code != 200:
            raise BadDiscoveryResponse(f"discovery service {url} refused the query ({resp.status_code}): "
                                       f"{resp.text[:200]}")
        try:
            body = HostsResponse.model_validate_json(resp.content)
        except ValidationError as exc:
            raise BadDiscoveryResponse(f"discovery service {url} did not answer with a host list "
                                       f"(is it a dinfer discovery service?): {exc.errors()[0]['msg']}") from None
        return [r for r in (self._record(e) for e in body.hosts) if r is not None]

    def _record(self, entry: HostEntry) -> HostRecord | None:
        try:
            if entry.announcement is not None:
                ann = verify_announcement(entry.announcement, max_age_s=self.max_age_s)
                if ann.address != checksum(entry.address) or ann.url != entry.url:
                    raise AnnouncementError("entry differs from its signed announcement")
            return HostRecord(address=entry.address, url=entry.url, models=tuple(entry.models),
                              metadata=parse_metadata(entry.metadata), stake=entry.stake, sources=(self.name,),
                              seen_at=entry.seen_at)
        except (AnnouncementError, MetadataError, ValueError) as exc:
            self.stats.rejected += 1
            log.warning("HTTP discovery: dropping host %s: %s", entry.address, exc)
            return None

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval_s)
            try:
                for key in list(self._cache):
                    self._cache[key] = (time.monotonic(), await self._fetch(dict(key)))
                self.refreshes += 1
            except DiscoveryError as exc:  # answers fall back to the cache until it expires
                self.stats.last_error = f"background refresh: {exc}"
                log.warning("HTTP discovery background refresh failed: %s", exc)

    async def report_host(self, host: HostRecord | str, issue: ReportIssue | str,
                          detail: str = "") -> list[dict[str, Any]]:
        """Sign a report about ``host`` and post it to every service; returns the acknowledgements.

        Raises the typed refusal (``UnknownReportedHost``, ``ReportReplayed``, ``ReportRateLimited``,
        ``ReportSignatureError``, ``ReportError``) or ``DiscoveryUnavailable`` when no service accepted it.

        Example:
            >>> await client.report_host(host, "timeout", "no first token in 30 s")   # doctest: +SKIP
        """
        if self.reporter_key is None:
            raise ReportError("report_host needs HttpDiscoveryClient(..., reporter_key=<your private key>)")
        address = host.address if isinstance(host, HostRecord) else host
        return await self.send_report(sign_report(self.reporter_key, address, issue, detail))

    async def send_report(self, report: HostReport) -> list[dict[str, Any]]:
        """Post an already signed report to every service (``report_host`` signs and calls this)."""
        body = orjson.dumps(report.to_dict())
        acks: list[dict[str, Any]] = []
        last: DiscoveryError | None = None
        for url in self.urls:
            try:
                resp = await self._http.post(f"{url}/v1/reports", content=body,
                                             headers={"content-type": "application/json"})
            except httpx.HTTPError as exc:
                last = DiscoveryUnavailable(f"discovery service {url} unreachable: {type(exc).__name__}: {exc}")
                continue
            if resp.status_code in (200, 201):
                acks.append({"url": url, **resp.json()})
            else:
                last = _report_refusal(url, resp)
        if not acks:
            assert last is not None
            raise last
        return acks

    async def host_reports(self, host: HostRecord | str) -> dict[str, Any]:
        """The first answering service's aggregate of reports about ``host`` (total, by_issue, reporters, recent)."""
        address = host.address if isinstance(host, HostRecord) else host
        last: DiscoveryError | None = None
        for url in self.urls:
            try:
                resp = await self._http.get(f"{url}/v1/reports/{address}")
            except httpx.HTTPError as exc:
                last = DiscoveryUnavailable(f"discovery service {url} unreachable: {type(exc).__name__}: {exc}")
                continue
            if resp.status_code == 200:
                return dict(resp.json())
            last = _report_refusal(url, resp)
        assert last is not None
        raise last

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self._owns_http:
            await self._http.aclose()


def _report_refusal(url: str, resp: httpx.Response) -> DiscoveryError:
    """The typed error of a service's refusal of a report (or of a report query)."""
    try:
        message = str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = resp.text[:200]
    text = f"discovery service {url} refused the report ({resp.status_code}): {message}"
    if resp.status_code == 401:
        return ReportSignatureError(text)
    if resp.status_code == 404:
        return UnknownReportedHost(text)
    if resp.status_code == 409:
        return ReportReplayed(text)
    if resp.status_code == 429:
        return ReportRateLimited(text, float(resp.headers.get("retry-after", "60")))
    if resp.status_code >= 500:
        return DiscoveryUnavailable(text)
    return ReportError(text)
