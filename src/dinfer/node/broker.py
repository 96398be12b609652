"""The broker: this host's pool of ML nodes, their polled states, and the least-busy pick.

Node states come from each ML node's ``GET /api/v1/state`` (UNKNOWN/INFERENCE/POC/STOPPED/FAILED); a node that does
not answer is UNREACHABLE. A request goes to the least busy enabled node in INFERENCE serving its model, where
"busy" is what the ML node reports (queue depth + in flight) plus what this host has dispatched since the last poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from dinfer.errors import NodeError, NodeUnavailable
from dinfer.http_stream import StreamClient
from dinfer.node.mlnode_client import MLNodeClient, MLNodeEndpoint
from dinfer.retry import sleep_or_stop

log = logging.getLogger(__name__)

UNREACHABLE = "UNREACHABLE"


class NoNodeAvailable(NodeError):
    """No enabled ML node of this host is serving the model right now (HTTP 503 on the executor API)."""


@dataclass
class MLNodeEntry:
    """The broker's view of one ML node (Gonka's ``NodeState``)."""

    node_id: str
    client: MLNodeClient
    enabled: bool = True
    state: str = "UNKNOWN"
    models: list[str] = field(default_factory=list)
    queue_depth: int = 0
    reported_in_flight: int = 0
    dispatched: int = 0
    """Requests this host sent and that have not completed."""
    served: int = 0
    failures: int = 0
    last_error: str = ""
    last_poll: float = 0.0
    epoch_models: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Model id → the epoch snapshot's model (args merged) this node should load (filled by the epoch logic)."""
    epoch: int = 0
    """Epoch ``epoch_models`` / ``epoch_ml_nodes`` belong to (0 until the orchestrator first syncs)."""
    epoch_ml_nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Model id → this node's ``MLNodeInfo`` in the epoch (weight, throughput, timeslots) where it has one."""

    @property
    def load(self) -> int:
        return self.queue_depth + max(self.reported_in_flight, self.dispatched)

    def serves(self, model: str) -> bool:
        return self.enabled and self.state == "INFERENCE" and model in self.models

    def as_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id, "url": self.client.endpoint.base_url, "version": self.client.endpoint.version,
            "enabled": self.enabled, "state": self.state, "models": self.models, "queue_depth": self.queue_depth,
            "in_flight": self.reported_in_flight, "dispatched": self.dispatched, "served": self.served,
            "failures": self.failures, "last_error": self.last_error, "last_poll": self.last_poll,
            "epoch": self.epoch, "epoch_models": sorted(self.epoch_models), "epoch_ml_nodes": self.epoch_ml_nodes,
        }


class Broker:
    """Keeps the ML nodes' states fresh and hands out the least busy one per model."""

    def __init__(self, http: httpx.AsyncClient, streams: StreamClient | None = None, *,
                 poll_interval: float = 2.0) -> None:
        self.http = http
        self._own_streams = streams is None
        self.streams = StreamClient() if streams is None else streams
        """Inference streams to the ML nodes (the runtime passes its own; a broker made without one owns it)."""
        self.poll_interval = poll_interval
        self._nodes: dict[str, MLNodeEntry] = {}
        self._changed = asyncio.Event()

    async def close(self) -> None:
        """Close the inference streams' connections when this broker made them."""
        if self._own_streams:
            await self.streams.close()

    # ------------------------------------------------------------ membership

    def add(self, node_id: str, base_url: str, version: str | None = None) -> MLNodeEntry:
        if node_id in self._nodes:
            raise NodeError(f"ML node {node_id!r} is already registered")
        entry = MLNodeEntry(node_id, MLNodeClient(MLNodeEndpoint(base_url, version), self.http, self.streams))
        self._nodes[node_id] = entry
        return entry

    def remove(self, node_id: str) -> None:
        self._get(node_id)
        del self._nodes[node_id]

    def set_enabled(self, node_id: str, enabled: bool) -> MLNodeEntry:
        entry = self._get(node_id)
        entry.enabled = enabled
        return entry

    def _get(self, node_id: str) -> MLNodeEntry:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise NodeError(f"unknown ML node {node_id!r}") from None

    def get(self, node_id: str) -> MLNodeEntry:
        return self._get(node_id)

    def nodes(self) -> list[MLNodeEntry]:
        return list(self._nodes.values())

    def update_node_with_epoch_data(self, node_id: str, epoch: int, models: dict[str, dict[str, Any]],
                                    ml_nodes: dict[str, dict[str, Any]]) -> MLNodeEntry:
        """Record the epoch's models this node should load (snapshot, args merged) and its ``MLNodeInfo`` per model.

        ``inference/up`` commands issued by the epoch orchestrator read ``epoch_models``; the values replace the
        previous epoch's wholesale.
        """
        entry = self._get(node_id)
        entry.epoch, entry.epoch_models, entry.epoch_ml_nodes = epoch, dict(models), dict(ml_nodes)
        return entry

    def set_version(self, version: str | None) -> None:
        """Point every ML-node client at ``version``'s routes at once (no request sees a mix)."""
        for entry in self._nodes.values():
            entry.client = entry.client.at_version(version)

    # ------------------------------------------------------------ state polling

    async def poll_node(self, entry: MLNodeEntry) -> None:
        try:
            snap = await entry.client.state()
        except (NodeUnavailable, NodeError, ValueError) as exc:
            if entry.state != UNREACHABLE:
                log.warning("ML node %s unreachable: %s", entry.node_id, exc)
            entry.state, entry.last_error = UNREACHABLE, str(exc)
        else:
            entry.state = str(snap.get("state", "UNKNOWN"))
            entry.models = [str(m) for m in snap.get("models", [])]
            entry.queue_depth = int(snap.get("queue_depth", 0))
            entry.reported_in_flight = int(snap.get("in_flight", 0))
            entry.last_error = str(snap.get("error") or "")
        entry.last_poll = time.time()

    async def poll_once(self) -> None:
        await asyncio.gather(*(self.poll_node(e) for e in list(self._nodes.values())))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll_once()
            await sleep_or_stop(stop, self.poll_interval)

    # ------------------------------------------------------------ dispatch

    def models(self) -> set[str]:
        """Models some enabled node serves now."""
        return {m for e in self._nodes.values() if e.enabled and e.state == "INFERENCE" for m in e.models}

    def pick(self, model: str) -> MLNodeEntry:
        """Least busy enabled node in INFERENCE that serves ``model``."""
        candidates = [e for e in self._nodes.values() if e.serves(model)]
        if not candidates:
            states = ", ".join(
                f"{e.node_id}={e.state}{'' if e.enabled else '(disabled)'}" for e in self._nodes.values()
            )
            detail = states or "no ML nodes registered"
            raise NoNodeAvailable(f"no ML node serving {model!r} is ready ({detail})")
        return min(candidates, key=lambda e: (e.load, e.served))

    @asynccontextmanager
    async def dispatch(self, model: str) -> AsyncIterator[MLNodeEntry]:
        """Reserve the least busy node for one request; counts the outcome."""
        entry = self.pick(model)
        entry.dispatched += 1
        try:
            yield entry
        except BaseException:
            entry.failures += 1
            raise
        else:
            entry.served += 1
        finally:
            entry.dispatched -= 1
