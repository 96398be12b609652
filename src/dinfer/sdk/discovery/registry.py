"""Registry discovery: active hosts read from the Registry contract, kept fresh by its events.

A host is listed when ``is_active_host`` (registered with at least the minimum collateral). Its models are the
ones its ML nodes declare on chain (``get_nodes``), its stake is its bonded collateral, and its metadata is
parsed with ``parse_metadata``: a host whose metadata does not follow the schema is skipped with a warning and
counted in ``stats.rejected`` (the chain accepts any string; the SDK does not guess).
"""

from __future__ import annotations

import asyncio
import logging
import time

from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.events import ChainEvent, EventPoller, SqliteCursorStore
from dinfer.crypto import checksum
from dinfer.sdk.discovery.source import MeasuredSource
from dinfer.sdk.hosts import HostRecord, MetadataError, parse_metadata

__all__ = ["HOST_EVENTS", "RegistrySource"]

log = logging.getLogger(__name__)

HOST_EVENTS = frozenset({
    "HostRegistered", "HostUpdated", "CollateralAdded", "UnbondRequested", "UnbondedWithdrawn", "HostSlashed",
    "HardwareNodeAdded", "HardwareNodeRemoved",
})
"""Registry events that change what discovery reports about the host in their ``host`` argument."""


class RegistrySource(MeasuredSource):
    """Hosts from the Registry contract.

    Example:
        >>> source = RegistrySource(RegistryClient(bind(w3, "Registry", address)))      # doctest: +SKIP
        >>> hosts = await source.discover("HuggingFaceTB/SmolLM2-135M-Instruct")          # doctest: +SKIP
        >>> source.start_watching()   # follow HostRegistered/HostUpdated/... events      # doctest: +SKIP
    """

    name = "registry"

    def __init__(self, registry: RegistryClient, *, cache_ttl_s: float = 30.0, poll_interval_s: float = 1.0) -> None:
        super().__init__()
        self.registry = registry
        self.cache_ttl_s = cache_ttl_s
        self.poll_interval_s = poll_interval_s
        self._hosts: dict[str, HostRecord] = {}
        self._loaded_at: float | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_stop = asyncio.Event()
        self._watch_ready = asyncio.Event()
        self.events_handled = 0

    @property
    def watching(self) -> bool:
        """True while the event watcher runs: the cache then follows the chain and never expires."""
        return self._watch_task is not None and not self._watch_task.done() and self._watch_ready.is_set()

    async def _discover(self, model: str | None) -> list[HostRecord]:
        fresh = self._loaded_at is not None and time.monotonic() - self._loaded_at < self.cache_ttl_s
        if self.watching or fresh:
            self.stats.cache_hits += 1
        else:
            await self.refresh()
        return [h for h in self._hosts.values() if model is None or h.serves(model)]

    async def refresh(self) -> None:
        """Reload every host from the chain (replaces the cache)."""
        addresses = await self.registry.get_hosts()
        records = await asyncio.gather(*(self._read_host(a) for a in addresses))
        self._hosts = {r.address: r for r in records if r is not None}
        self._loaded_at = time.monotonic()

    async def _read_host(self, address: str) -> HostRecord | None:
        if not await self.registry.is_active_host(address):
            return None
        host, nodes = await asyncio.gather(self.registry.get_host(address), self.registry.get_nodes(address))
        try:
            metadata = parse_metadata(host.metadata) if host.metadata.strip() else parse_metadata({})
        except MetadataError as exc:
            self.stats.rejected += 1
            log.warning("registry discovery: skipping host %s: %s", address, exc)
            return None
        models = tuple(dict.fromkeys(m for n in nodes for m in n.models))
        return HostRecord(address=address, url=host.url, models=models, metadata=metadata, stake=host.collateral,
                          sources=(self.name,), seen_at=time.time())

    async def _on_event(self, event: ChainEvent) -> None:
        if event.name not in HOST_EVENTS or "host" not in event.args:
            return
        address = checksum(str(event.args["host"]))
        record = await self._read_host(address)
        if record is None:
            self._hosts.pop(address, None)
        else:
            self._hosts[record.address] = record
        self.events_handled += 1

    async def watch(self, stop: asyncio.Event | None = None) -> None:
        """Load every host, then follow the Registry's host events until ``stop`` is set (or cancelled)."""
        stop = stop or self._watch_stop
        w3 = self.registry.contract.w3
        head = await w3.eth.block_number
        await self.refresh()
        cursors = SqliteCursorStore(":memory:")
        poller = EventPoller(w3, [self.registry.contract], cursors, "sdk-discovery-registry", self._on_event,
                             start_block=head + 1, poll_interval=self.poll_interval_s)
        self._watch_ready.set()
        try:
            await poller.run(stop)
        finally:
            self._watch_ready.clear()
            await cursors.close()

    def start_watching(self) -> asyncio.Task[None]:
        """Run ``watch()`` in the background (stopped by ``close()``)."""
        if self._watch_task is None or self._watch_task.done():
            self._watch_stop.clear()
            self._watch_task = asyncio.create_task(self.watch(self._watch_stop), name="registry-discovery-watch")
        return self._watch_task

    async def wait_watching(self, timeout_s: float = 30.0) -> None:
        """Wait until the watcher has loaded the hosts and follows events."""
        await asyncio.wait_for(self._watch_ready.wait(), timeout_s)

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_stop.set()
            try:
                await asyncio.wait_for(self._watch_task, 10)
            except (TimeoutError, asyncio.CancelledError):
                self._watch_task.cancel()
            except Exception as exc:  # the watcher died earlier (e.g. RPC down at start); report, do not raise
                log.warning("registry discovery watcher ended with %s", exc)
            self._watch_task = None
