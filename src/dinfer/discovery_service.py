"""``dinfer discovery serve``: an HTTP directory of signed host announcements merged with the Registry's hosts.

- ``POST /v1/announce``: a host's signed announcement (``dinfer.announce``). Refused: malformed (400), bad
  signature (401), expired or future-dated (400 ``announcement_expired``), older than the one held (409), directory
  full (503). Announcements expire ``max_age_s`` after their timestamp; hosts re-announce periodically.
- ``GET /v1/hosts?model=&max_price=&region=&min_stake=``: live announcements plus, when an RPC and deployment are
  configured, the Registry's active hosts (merged by address: chain stake and models, announced URL/metadata).
  If the chain cannot be read the announcements are still served and ``chain`` says why.
- ``POST /v1/reports``: a client's signed report about a host (``dinfer.sdk.discovery.reports``). Refused:
  malformed (400), unsigned or badly signed (401), about a host the service does not know (404), nonce already
  seen from that reporter or timestamp outside ±``report_skew_s`` (409), over ``reports_per_minute`` per
  reporter (429 + Retry-After). ``GET /v1/reports/{host}``: the reports held about a host, aggregated.
- ``GET /health``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam

from dinfer.announce import (
    DEFAULT_MAX_AGE_S,
    Announcement,
    AnnouncementError,
    AnnouncementExpired,
    AnnouncementSignatureError,
    verify_announcement,
)
from dinfer.crypto import checksum
from dinfer.errors import CryptoError
from dinfer.http_errors import BodyLimit, HTTPError, JSONBytesResponse, install_error_handlers, read_limited_body
from dinfer.ratelimit import RateLimiter
from dinfer.sdk.discovery.filters import HostFilter
from dinfer.sdk.discovery.http import HostEntry
from dinfer.sdk.discovery.registry import RegistrySource
from dinfer.sdk.discovery.reports import (
    DEFAULT_REPORT_SKEW_S,
    HostReport,
    ReportError,
    ReportSignatureError,
    verify_report,
)
from dinfer.sdk.discovery.source import DiscoveryError
from dinfer.sdk.hosts import HostRecord

__all__ = ["AnnouncementBook", "DiscoveryServiceConfig", "ReportBook", "create_discovery_app", "discovery_app"]

log = logging.getLogger(__name__)

MAX_ANNOUNCEMENT_BYTES = 16_384
MAX_REPORT_BYTES = 4_096


@dataclass(frozen=True)
class DiscoveryServiceConfig:
    max_age_s: float = DEFAULT_MAX_AGE_S
    """Announcements older than this are dropped."""
    max_announcements: int = 10_000
    """Hosts held at most (memory bound); new hosts get 503 when full."""
    chain_cache_ttl_s: float = 15.0
    """How long the Registry's host list is reused when the event watcher is not running."""
    rpc_url: str | None = None
    """Chain JSON-RPC; with ``deployment_file``, the Registry's active hosts are merged in."""
    deployment_file: Path | None = None
    watch_registry: bool = True
    """Follow Registry events (cache always fresh) instead of re-reading every ``chain_cache_ttl_s``."""
    reports_per_minute: float = 10.0
    """Reports accepted per reporter per minute (burst of the same size)."""
    report_skew_s: float = DEFAULT_REPORT_SKEW_S
    """Largest distance between a report's timestamp and this service's clock; nonces are held this long."""
    max_reports_per_host: int = 100
    """Latest reports kept per host (counters cover every report)."""
    max_reported_hosts: int = 10_000
    """Hosts with reports held at most (memory bound); the least recently reported is dropped first."""


class AnnouncementBook:
    """Latest verified announcement per host address, in memory."""

    def __init__(self, max_age_s: float, capacity: int) -> None:
        self.max_age_s = max_age_s
        self.capacity = capacity
        self._by_address: dict[str, Announcement] = {}

    def put(self, ann: Announcement) -> None:
        held = self._by_address.get(ann.address)
        if held is not None and held.timestamp > ann.timestamp:
            raise HTTPError(409, f"an announcement of {ann.address} dated {held.timestamp} is already held; "
                                 "send a fresh one", "conflict", code="stale_announcement")
        if held is None:
            self.prune()
            if len(self._by_address) >= self.capacity:
                raise HTTPError(503, "discovery directory is full; retry later", "service_unavailable",
                                headers={"Retry-After": "60"})
        self._by_address[ann.address] = ann

    def prune(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for address, ann in list(self._by_address.items()):
            if now - ann.timestamp > self.max_age_s:
                del self._by_address[address]

    def live(self) -> list[Announcement]:
        self.prune()
        return list(self._by_address.values())


@dataclass
class _HostReports:
    first_at: int
    recent: deque[HostReport]
    """The latest reports (bounded); the counters below cover every report."""
    total: int = 0
    by_issue: dict[str, int] = field(default_factory=dict)
    reporters: set[str] = field(default_factory=set)
    last_at: int = 0


class ReportBook:
    """Reports per host, in memory: counters per issue, distinct reporters, the latest ``keep`` reports, and the
    nonces seen within the replay window."""

    def __init__(self, config: DiscoveryServiceConfig) -> None:
        self.config = config
        self.limiter = RateLimiter(per_minute=config.reports_per_minute)
        self._hosts: dict[str, _HostReports] = {}
        self._nonces: dict[tuple[str, str], float] = {}

    def check_fresh(self, report: HostReport, now: float) -> None:
        """409 when ``report`` is a replay (nonce seen, or timestamp outside the window)."""
        skew = now - report.timestamp
        if abs(skew) > self.config.report_skew_s:
            raise HTTPError(409, f"report timestamp is {skew:.0f} s from this service's clock (allowed "
                                 f"±{self.config.report_skew_s:.0f} s): sign a fresh report, check the clock",
                            "conflict", code="stale_report")
        for key, seen in list(self._nonces.items()):
            if now - seen > 2 * self.config.report_skew_s:
                del self._nonces[key]
        if (report.reporter, report.nonce) in self._nonces:
            raise HTTPError(409, f"report nonce {report.nonce} from {report.reporter} was already received "
                                 "(replay); sign a new report", "conflict", code="replayed_report")

    def add(self, report: HostReport, now: float) -> _HostReports:
        self._nonces[(report.reporter, report.nonce)] = now
        held = self._hosts.pop(report.host, None) or _HostReports(
            report.timestamp, deque(maxlen=self.config.max_reports_per_host))
        self._hosts[report.host] = held  # re-inserted: dict order is least recently reported first
        if len(self._hosts) > self.config.max_reported_hosts:
            del self._hosts[next(iter(self._hosts))]
        held.total += 1
        held.by_issue[report.issue.value] = held.by_issue.get(report.issue.value, 0) + 1
        held.reporters.add(report.reporter)
        held.last_at = max(held.last_at, report.timestamp)
        held.recent.append(report)
        return held

    def summary(self, host: str) -> dict[str, Any] | None:
        held = self._hosts.get(host)
        if held is None:
            return None
        return {"host": host, "total": held.total, "by_issue": dict(held.by_issue),
                "reporters": len(held.reporters), "first_at": held.first_at, "last_at": held.last_at,
                "recent": [{k: v for k, v in r.to_dict().items() if k != "signature"}
                           for r in reversed(held.recent)]}


def _host_param(host: str) -> str:
    try:
        return checksum(host)
    except (CryptoError, ValueError):
        raise HTTPError(400, f"{host!r:.60} is not a host address (0x followed by 40 hex digits)",
                        "invalid_request_error", code="bad_address") from None


def _registry_from_config(config: DiscoveryServiceConfig) -> RegistrySource:
    from dinfer.chain.backends import connect
    from dinfer.chain.contracts.registry import RegistryClient
    from dinfer.chain.deploy import Deployment, bind
    from dinfer.errors import ConfigError

    if config.deployment_file is None or config.rpc_url is None:
        raise ConfigError("discovery service: --rpc and --deployment go together (the Registry address is in the "
                          "deployment file)")
    w3 = connect([config.rpc_url])
    address = Deployment.load(config.deployment_file).address("Registry")
    return RegistrySource(RegistryClient(bind(w3, "Registry", address)), cache_ttl_s=config.chain_cache_ttl_s)


def create_discovery_app(config: DiscoveryServiceConfig | None = None,
                         registry: RegistrySource | None = None) -> FastAPI:
    """The discovery service. ``registry`` (or ``config.rpc_url`` + ``deployment_file``) adds chain data."""
    config = config or DiscoveryServiceConfig()
    book = AnnouncementBook(config.max_age_s, config.max_announcements)
    reports = ReportBook(config)
    state: dict[str, RegistrySource | None] = {"registry": registry}

    async def known_host(address: str) -> bool:
        """Announced here, or an active host of the Registry (when the chain is configured and readable)."""
        if any(ann.address == address for ann in book.live()):
            return True
        source = state["registry"]
        if source is None:
            return False
        try:
            return any(rec.address == address for rec in await source.discover(None))
        except DiscoveryError as exc:
            raise HTTPError(503, f"cannot check the host against the Registry: {exc}", "service_unavailable",
                            headers={"Retry-After": "5"}) from None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state["registry"] is None and config.rpc_url is not None:
            state["registry"] = _registry_from_config(config)
        source = state["registry"]
        if source is not None and config.watch_registry:
            source.start_watching()
        try:
            yield
        finally:
            if source is not None:
                await source.close()

    app = FastAPI(title="dinfer discovery", lifespan=lifespan)
    app.state.book = book
    app.state.reports = reports
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=max(MAX_ANNOUNCEMENT_BYTES, MAX_REPORT_BYTES))

    @app.post("/v1/announce")
    async def announce(request: Request) -> JSONBytesResponse:
        body = await read_limited_body(request, MAX_ANNOUNCEMENT_BYTES, "announcement")
        try:
            ann = verify_announcement(body, max_age_s=config.max_age_s)
        except AnnouncementSignatureError as exc:
            raise HTTPError(401, str(exc), "authentication_error", code="bad_signature") from None
        except AnnouncementExpired as exc:
            raise HTTPError(400, str(exc), "invalid_request_error", code="announcement_expired") from None
        except AnnouncementError as exc:
            raise HTTPError(400, str(exc), "invalid_request_error", code="bad_announcement") from None
        book.put(ann)
        return JSONBytesResponse({"address": ann.address, "expires_at": ann.timestamp + config.max_age_s})

    @app.get("/v1/hosts")
    async def hosts(
        model: Annotated[str | None, Query(max_length=256)] = None,
        max_price: Annotated[int | None, Query(ge=0)] = None,
        region: Annotated[str | None, Query(max_length=64)] = None,
        min_stake: Annotated[int | None, Query(ge=0)] = None,
    ) -> JSONBytesResponse:
        host_filter = HostFilter(model=model, max_price=max_price, region=region, min_stake=min_stake)
        entries: dict[str, tuple[HostRecord, list[str], dict[str, Any] | None]] = {}
        for ann in book.live():
            try:
                entries[ann.address] = (ann.host_record("announcement"), ["announcement"], ann.to_dict())
            except ValueError:
                continue  # metadata was checked on arrival; kept defensive for schema changes
        chain = "off"
        source = state["registry"]
        if source is not None:
            try:
                for rec in await source.discover(model):
                    held = entries.get(rec.address)
                    entries[rec.address] = (held[0].merged(rec), [*held[1], "registry"], held[2]) if held \
                        else (rec, ["registry"], None)
                chain = "ok"
            except DiscoveryError as exc:
                chain = f"error: {exc}"
                log.warning("discovery service: Registry unavailable: %s", exc)
        out = [HostEntry.of(rec, origins, ann).model_dump()
               for rec, origins, ann in entries.values() if host_filter.matches(rec)]
        out.sort(key=lambda e: (-e["stake"], e["address"]))
        return JSONBytesResponse({"hosts": out, "chain": chain})

    @app.post("/v1/reports")
    async def report(request: Request) -> JSONBytesResponse:
        body = await read_limited_body(request, MAX_REPORT_BYTES, "report")
        try:
            rep = verify_report(body)
        except ReportSignatureError as exc:
            raise HTTPError(401, str(exc), "authentication_error", code="bad_signature") from None
        except ReportError as exc:
            raise HTTPError(400, str(exc), "invalid_request_error", code="bad_report") from None
        now = time.time()
        reports.check_fresh(rep, now)
        wait = reports.limiter.acquire(rep.reporter)
        if wait > 0:
            raise HTTPError(429, f"too many reports from {rep.reporter}; retry in {wait:.0f} s", "rate_limit_error",
                            headers={"Retry-After": str(max(1, round(wait)))})
        if not await known_host(rep.host):
            raise HTTPError(404, f"unknown host {rep.host}: not announced here and not an active Registry host",
                            "not_found_error", code="unknown_host")
        held = reports.add(rep, now)
        return JSONBytesResponse({"host": rep.host, "accepted": True, "total": held.total}, status_code=201)

    @app.get("/v1/reports/{host}")
    async def host_reports(host: Annotated[str, PathParam(max_length=64)]) -> JSONBytesResponse:
        address = _host_param(host)
        summary = reports.summary(address)
        if summary is None:
            if not await known_host(address):
                raise HTTPError(404, f"unknown host {address}: no reports, not announced, not in the Registry",
                                "not_found_error", code="unknown_host")
            summary = {"host": address, "total": 0, "by_issue": {}, "reporters": 0, "first_at": None,
                       "last_at": None, "recent": []}
        return JSONBytesResponse(summary)

    @app.get("/health")
    async def health() -> JSONBytesResponse:
        return JSONBytesResponse({"status": "ok", "announcements": len(book.live())})

    return app


discovery_app = typer.Typer(help="HTTP discovery service: a directory of signed host announcements + chain data.",
                            no_args_is_help=True)


@discovery_app.command("serve")
def serve(
    port: int = typer.Option(8700, "--port", help="Listening port."),
    bind: str = typer.Option("127.0.0.1", "--bind", help="Listening address (0.0.0.0 to serve other machines)."),
    rpc: str | None = typer.Option(None, "--rpc", envvar="DINFER_RPC", help="Chain JSON-RPC URL (adds chain data)."),
    deployment: Path | None = typer.Option(None, "--deployment", help="deployment.json with the Registry address."),
    max_age: float = typer.Option(DEFAULT_MAX_AGE_S, "--max-age", help="Seconds an announcement stays valid."),
) -> None:
    """Run the discovery service. Example: `dinfer discovery serve --port 8700 --rpc URL --deployment d.json`."""
    import uvicorn

    from dinfer.errors import ConfigError

    if (rpc is None) != (deployment is None):
        raise ConfigError("pass both --rpc and --deployment (chain data), or neither (announcements only)")
    config = DiscoveryServiceConfig(max_age_s=max_age, rpc_url=rpc, deployment_file=deployment)
    uvicorn.run(create_discovery_app(config), host=bind, port=port, log_level="info")
