"""DHT discovery with ``kademlia``: hosts store signed announcements under ``sha256("dinfer:model:" + model)``.

The client joins the DHT as a node of its own (UDP, ephemeral port) through the configured bootstrap nodes and
looks the model's key up. The value is a JSON list of signed announcements (``dinfer.announce``); each is
verified, and bad signatures, invalid metadata or expired entries are dropped (``stats.rejected``). A DHT cannot
list every key, so ``discover(None)`` looks up the models given as ``models=`` (none → an empty answer).
"""

from __future__ import annotations

import asyncio
import logging
import time

from kademlia.network import Server

from dinfer.announce import DEFAULT_MAX_AGE_S, AnnouncementError, dht_key, parse_dht_value, verify_announcement
from dinfer.sdk.discovery.source import BadDiscoveryResponse, DiscoveryUnavailable, MeasuredSource
from dinfer.sdk.hosts import HostRecord

__all__ = ["DhtSource", "dht_port", "open_dht_node", "parse_bootstrap"]

log = logging.getLogger(__name__)


def parse_bootstrap(nodes: list[str] | list[tuple[str, int]]) -> list[tuple[str, int]]:
    """``["127.0.0.1:8468", ...]`` → ``[("127.0.0.1", 8468), ...]`` (kademlia wants IP literals, not names)."""
    out: list[tuple[str, int]] = []
    for node in nodes:
        if isinstance(node, tuple):
            out.append((str(node[0]), int(node[1])))
            continue
        host, sep, port = node.rpartition(":")
        if not sep or not host or not port.isdecimal() or not 0 < int(port) < 65536:
            raise ValueError(f"DHT bootstrap node must be HOST:PORT, got {node!r}")
        out.append((host, int(port)))
    return out


async def open_dht_node(*, port: int = 0, interface: str = "127.0.0.1", bootstrap: list[tuple[str, int]] | None = None,
                        rpc_timeout_s: float = 2.0) -> tuple[Server, int]:
    """A listening kademlia node bootstrapped from ``bootstrap``; returns it with the number of peers it found.

    ``rpc_timeout_s`` replaces rpcudp's 5 s wait for an answer, so a dead bootstrap node costs little.
    """
    server = Server()
    await server.listen(port, interface=interface)
    server.protocol._wait_timeout = rpc_timeout_s
    peers = await server.bootstrap(bootstrap) if bootstrap else []
    return server, len(peers)


def dht_port(server: Server) -> int:
    """UDP port a started kademlia node listens on."""
    return int(server.transport.get_extra_info("sockname")[1])


class DhtSource(MeasuredSource):
    """Hosts found in the kademlia DHT.

    Example:
        >>> source = DhtSource(["10.0.0.2:8468"], models=["HuggingFaceTB/SmolLM2-135M-Instruct"])   # doctest: +SKIP
        >>> hosts = await source.discover()                                                          # doctest: +SKIP
    """

    name = "dht"

    def __init__(self, bootstrap: list[str] | list[tuple[str, int]], *, models: list[str] | None = None,
                 interface: str = "127.0.0.1", port: int = 0, cache_ttl_s: float = 10.0,
                 rpc_timeout_s: float = 2.0, max_age_s: float = DEFAULT_MAX_AGE_S) -> None:
        super().__init__()
        self.bootstrap = parse_bootstrap(bootstrap)
        if not self.bootstrap:
            raise ValueError("DhtSource needs at least one bootstrap node (HOST:PORT)")
        self.models = list(models or [])
        self.interface = interface
        self.port = port
        self.cache_ttl_s = cache_ttl_s
        self.rpc_timeout_s = rpc_timeout_s
        self.max_age_s = max_age_s
        self._server: Server | None = None
        self._cache: dict[str, tuple[float, list[HostRecord]]] = {}
        self._lock = asyncio.Lock()

    async def _node(self) -> Server:
        async with self._lock:
            if self._server is None:
                self._server, _ = await open_dht_node(port=self.port, interface=self.interface,
                                                      rpc_timeout_s=self.rpc_timeout_s)
            if not self._server.bootstrappable_neighbors():
                peers = await self._server.bootstrap(self.bootstrap)
                if not peers:
                    nodes = ", ".join(f"{h}:{p}" for h, p in self.bootstrap)
                    raise DiscoveryUnavailable(f"no DHT node answered from the bootstrap list ({nodes}); "
                                               "check the addresses and that UDP is reachable")
            return self._server

    async def _discover(self, model: str | None) -> list[HostRecord]:
        models = [model] if model is not None else self.models
        found: dict[str, HostRecord] = {}
        for m in models:
            for record in await self._lookup(m):
                found[record.address] = found[record.address].merged(record) if record.address in found else record
        return list(found.values())

    async def _lookup(self, model: str) -> list[HostRecord]:
        cached = self._cache.get(model)
        if cached is not None and time.monotonic() - cached[0] < self.cache_ttl_s:
            self.stats.cache_hits += 1
            return cached[1]
        server = await self._node()
        raw = await server.get(dht_key(model))
        try:
            items = parse_dht_value(raw)
        except AnnouncementError as exc:
            raise BadDiscoveryResponse(f"DHT record of {model!r} is not a list of announcements: {exc}") from None
        records = []
        for item in items:
            try:
                ann = verify_announcement(item, max_age_s=self.max_age_s)
                record = ann.host_record(self.name)
            except (AnnouncementError, ValueError) as exc:
                self.stats.rejected += 1
                log.warning("DHT discovery: dropping an announcement under %r: %s", model, exc)
                continue
            if record.serves(model):
                records.append(record)
        self._cache[model] = (time.monotonic(), records)
        return records

    async def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
