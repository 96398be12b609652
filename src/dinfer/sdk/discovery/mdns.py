"""mDNS discovery (local networks): browse ``_dinfer._tcp.local.`` services with ``zeroconf``.

Hosts register one service each (``dinfer.node.announcer``) whose TXT properties carry their signed announcement
(``dinfer.announce.to_txt_properties``). Every service seen is resolved and its announcement verified; a bad
signature, invalid metadata or an expired announcement is dropped and counted in ``stats.rejected``. The browser
keeps running between calls, so after the first call answers come from its live cache.
"""

from __future__ import annotations

import asyncio
import logging
import time

from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from dinfer.announce import DEFAULT_MAX_AGE_S, Announcement, AnnouncementError, from_txt_properties, verify_announcement
from dinfer.crypto import checksum
from dinfer.sdk.discovery.source import MeasuredSource
from dinfer.sdk.hosts import HostRecord

__all__ = ["SERVICE_TYPE", "MdnsSource", "open_zeroconf"]

log = logging.getLogger(__name__)

SERVICE_TYPE = "_dinfer._tcp.local."


def open_zeroconf(interfaces: list[str] | None = None) -> AsyncZeroconf:
    """An IPv4 ``AsyncZeroconf`` on ``interfaces`` (addresses such as ``["127.0.0.1"]``; None = every interface)."""
    return AsyncZeroconf(interfaces=interfaces or InterfaceChoice.All, ip_version=IPVersion.V4Only)


class MdnsSource(MeasuredSource):
    """Hosts announcing themselves on the local network.

    Example:
        >>> source = MdnsSource(interfaces=["127.0.0.1"])            # doctest: +SKIP
        >>> hosts = await source.discover()                           # doctest: +SKIP
    """

    name = "mdns"

    def __init__(self, *, interfaces: list[str] | None = None, settle_s: float = 0.5,
                 resolve_timeout_s: float = 1.0, max_age_s: float = DEFAULT_MAX_AGE_S) -> None:
        super().__init__()
        self.interfaces = interfaces
        self.settle_s = settle_s
        """How long the first call listens for answers before returning."""
        self.resolve_timeout_s = resolve_timeout_s
        self.max_age_s = max_age_s
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._started_at = 0.0
        self._announcements: dict[str, Announcement] = {}
        """Service name → verified announcement."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()

    async def start(self) -> None:
        """Start browsing (``discover`` does it on first use)."""
        if self._zc is not None:
            return
        self._zc = open_zeroconf(self.interfaces)
        self._started_at = time.monotonic()
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            self._announcements.pop(name, None)
            self._changed.set()
            return
        task = asyncio.get_running_loop().create_task(self._resolve(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, name: str) -> None:
        if self._zc is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(self._zc.zeroconf, int(self.resolve_timeout_s * 1000)):
            log.debug("mDNS service %s did not resolve", name)
            return
        try:
            ann = verify_announcement(from_txt_properties(info.properties or {}), max_age_s=self.max_age_s)
            txt_address = (info.properties or {}).get(b"address")
            if txt_address and checksum(txt_address.decode()) != ann.address:
                raise AnnouncementError("TXT address differs from the signed announcement's address")
        except (AnnouncementError, ValueError) as exc:
            self.stats.rejected += 1
            self._announcements.pop(name, None)
            log.warning("mDNS discovery: dropping service %s: %s", name, exc)
            return
        self._announcements[name] = ann
        self._changed.set()

    async def _discover(self, model: str | None) -> list[HostRecord]:
        if self._zc is None:
            await self.start()
        wait = self.settle_s - (time.monotonic() - self._started_at)
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            self.stats.cache_hits += 1
        return self._records(model)

    def _records(self, model: str | None) -> list[HostRecord]:
        records: dict[str, HostRecord] = {}
        now = time.time()
        for ann in list(self._announcements.values()):
            if now - ann.timestamp > self.max_age_s:
                continue  # the host stopped re-announcing
            try:
                record = ann.host_record(self.name)
            except ValueError:
                continue
            if model is None or record.serves(model):
                records[record.address] = records[record.address].merged(record) if record.address in records \
                    else record
        return list(records.values())

    async def wait_for_host(self, address: str, timeout_s: float = 5.0) -> HostRecord:
        """Wait until ``address`` is announced (``TimeoutError`` otherwise)."""
        address = checksum(address)
        await self.start()
        async with asyncio.timeout(timeout_s):
            while True:
                self._changed.clear()
                for record in self._records(None):
                    if record.address == address:
                        return record
                await self._changed.wait()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._zc is not None:
            await self._zc.async_close()
            self._zc = None

    def __repr__(self) -> str:
        return f"MdnsSource(interfaces={self.interfaces!r}, hosts={len(self._announcements)})"
