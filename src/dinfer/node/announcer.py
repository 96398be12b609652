"""Host side of discovery: publish this host's signed announcement over mDNS, the DHT and HTTP discovery services.

Every ``announce_interval_s`` (± 10 % jitter, so hosts sharing a DHT key do not write in lock-step) the
announcement is re-signed with a fresh timestamp and published on every enabled channel; readers drop
announcements older than their max age, so a host that stops announcing disappears. A failing channel is logged
and reported by ``status()``; the others keep working.

- mDNS: one ``_dinfer._tcp.local.`` service named after the host address, TXT = ``to_txt_properties``;
- DHT: a kademlia node of its own (``dht_port``), writing ``merge_dht_value`` under each served model's key;
- HTTP: ``POST {service}/v1/announce``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from kademlia.network import Server
from kademlia.utils import digest
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from dinfer.announce import Announcement, dht_key, merge_dht_value, sign_announcement, to_txt_properties
from dinfer.config import DiscoverySettings
from dinfer.sdk.discovery.dht import dht_port, open_dht_node, parse_bootstrap
from dinfer.sdk.discovery.mdns import SERVICE_TYPE, open_zeroconf

__all__ = ["Announcer", "ChannelStatus"]

log = logging.getLogger(__name__)


@dataclass
class ChannelStatus:
    published: int = 0
    failures: int = 0
    last_error: str | None = None
    last_published_at: float | None = None


class Announcer:
    """Announces one host on the channels ``settings`` enables.

    Example:
        >>> announcer = Announcer(settings.node.discovery, key, "http://10.0.0.5:9000", ["m"], {"region": "eu"})
        >>> await announcer.start()   # publishes once, then every announce_interval_s       # doctest: +SKIP
        >>> await announcer.stop()                                                            # doctest: +SKIP
    """

    def __init__(self, settings: DiscoverySettings, key: str, url: str, models: list[str],
                 metadata: Mapping[str, Any] | None = None, *, http_timeout_s: float = 5.0) -> None:
        self.settings = settings
        self._key = key
        self.url = url
        self.models = list(models)
        self.metadata = dict(metadata or {})
        self.announcement: Announcement = sign_announcement(key, url, self.models, self.metadata)
        self.status: dict[str, ChannelStatus] = {}
        self._http_timeout_s = http_timeout_s
        self._http: httpx.AsyncClient | None = None
        self._zc: AsyncZeroconf | None = None
        self._service: AsyncServiceInfo | None = None
        self._dht: Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()

    @property
    def address(self) -> str:
        return self.announcement.address

    @property
    def dht_port(self) -> int | None:
        """UDP port of this host's DHT node (None when the DHT is off)."""
        return dht_port(self._dht) if self._dht is not None else None

    @property
    def enabled(self) -> bool:
        s = self.settings
        return s.mdns or s.dht_port != 0 or bool(s.http_services)

    async def start(self) -> None:
        """Open the channels, publish once (awaited), then keep re-announcing in the background."""
        if self.settings.http_services:
            self._http = httpx.AsyncClient(timeout=self._http_timeout_s)
        if self.settings.dht_port:
            bootstrap = parse_bootstrap(self.settings.dht_bootstrap)
            self._dht, peers = await open_dht_node(port=self.settings.dht_port, interface=self.settings.dht_bind,
                                                   bootstrap=bootstrap)
            if bootstrap and not peers:
                log.warning("DHT: no bootstrap node answered (%s); retrying at each announcement",
                            ", ".join(self.settings.dht_bootstrap))
        if self.settings.mdns:
            self._zc = open_zeroconf(self.settings.mdns_interfaces or None)
        await self.publish()
        self._stop.clear()
        self._task = asyncio.create_task(self._loop(), name="announcer")

    def update(self, *, url: str | None = None, models: list[str] | None = None,
               metadata: Mapping[str, Any] | None = None) -> None:
        """Change what is announced (ML nodes added/removed, new URL); published at once in the background."""
        self.url = url if url is not None else self.url
        self.models = list(models) if models is not None else self.models
        self.metadata = dict(metadata) if metadata is not None else self.metadata
        self._wake.set()

    async def publish(self) -> Announcement:
        """Re-sign and publish on every enabled channel now."""
        self.announcement = sign_announcement(self._key, self.url, self.models, self.metadata)
        channels = []
        if self._zc is not None:
            channels.append(("mdns", self._publish_mdns()))
        if self._dht is not None:
            channels.append(("dht", self._publish_dht()))
        if self._http is not None:
            channels.extend((f"http:{u}", self._publish_http(u)) for u in self.settings.http_services)
        results = await asyncio.gather(*(c for _, c in channels), return_exceptions=True)
        for (name, _), result in zip(channels, results, strict=True):
            status = self.status.setdefault(name, ChannelStatus())
            if isinstance(result, BaseException):
                status.failures += 1
                status.last_error = f"{type(result).__name__}: {result}"
                log.warning("announce on %s failed: %s", name, status.last_error)
            else:
                status.published += 1
                status.last_published_at = time.time()
        return self.announcement

    async def _publish_mdns(self) -> None:
        assert self._zc is not None
        info = self._service_info()
        if self._service is None:
            await self._zc.async_register_service(info)
        elif self._service.name != info.name or self._service.port != info.port:
            await self._zc.async_unregister_service(self._service)
            await self._zc.async_register_service(info)
        else:
            await self._zc.async_update_service(info)
        self._service = info

    def _service_info(self) -> AsyncServiceInfo:
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        label = f"dinfer-{self.address.lower()}"
        return AsyncServiceInfo(SERVICE_TYPE, f"{label}.{SERVICE_TYPE}", port=port,
                                addresses=[socket.inet_aton(self._ipv4(parts.hostname or ""))],
                                properties=to_txt_properties(self.announcement), server=f"{label}.local.")

    def _ipv4(self, hostname: str) -> str:
        """The IPv4 address advertised in the A record: the URL's host when it is one, else an mDNS interface."""
        with contextlib.suppress(ValueError):
            if isinstance(ipaddress.ip_address(hostname), ipaddress.IPv4Address):
                return hostname
        if self.settings.mdns_interfaces:
            return self.settings.mdns_interfaces[0]
        try:
            return socket.gethostbyname(hostname)
        except OSError:
            return "127.0.0.1"

    async def _publish_dht(self) -> None:
        assert self._dht is not None
        if self.settings.dht_bootstrap and not self._dht.bootstrappable_neighbors():
            await self._dht.bootstrap(parse_bootstrap(self.settings.dht_bootstrap))
        for model in self.models:
            key = dht_key(model)
            value = merge_dht_value(await self._dht.get(key), self.announcement)
            # Keep a copy here too: the first DHT node has no peers to store on, and it answers lookups itself.
            self._dht.storage[digest(key)] = value
            await self._dht.set(key, value)

    async def _publish_http(self, base: str) -> None:
        assert self._http is not None
        resp = await self._http.post(base.rstrip("/") + "/v1/announce", content=self.announcement.to_json(),
                                     headers={"content-type": "application/json"})
        if resp.status_code != 200:
            raise RuntimeError(f"{base} refused the announcement ({resp.status_code}): {resp.text[:200]}")

    async def _loop(self) -> None:
        while not self._stop.is_set():
            interval = self.settings.announce_interval_s * random.uniform(0.9, 1.1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                await self.publish()
            except Exception:  # never let the announcer die; the next round retries
                log.exception("announcer round failed")

    async def stop(self) -> None:
        """Stop re-announcing, withdraw the mDNS service, leave the DHT."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)
            self._task = None
        if self._zc is not None:
            with contextlib.suppress(Exception):
                if self._service is not None:
                    await self._zc.async_unregister_service(self._service)
            await self._zc.async_close()
            self._zc, self._service = None, None
        if self._dht is not None:
            self._dht.stop()
            self._dht = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
