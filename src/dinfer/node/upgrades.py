"""ML-node version manager: switches every ML-node client to the chain's version at the upgrade height.

Governance schedules ``(target_version, upgrade_height)`` on the Registry; ``current_mlnode_version()`` reads
through to the target from that height on. The manager follows the block height, and when the chain's version
differs from the one in use it:

1. checks each ML node under the new prefix (``{base}/{version}/api/v1/state``) and loads the node's models there
   when they are missing (the same ``inference/up`` as registration) — done ahead of the height when a plan is seen;
2. swaps all clients at once with ``Broker.set_version`` (a synchronous swap: no request sees a mix);
3. persists ``last_used_version`` in the node's SQLite KV;
4. in the background waits for the old version's in-flight requests to finish, then ``POST /api/v1/stop`` on it
   through the old prefix.

If any new-version ML node is not ready the host keeps serving on the old version, logs an ERROR, records the
failure (``status()``, shown in ``/admin/stats``) and retries every ``mlnode_upgrade_retry_s`` — it never drops to
zero capacity. Rollback is the same path: governance schedules the previous version at a later height.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from dinfer.config import NodeSettings
from dinfer.errors import ChainError, NodeError
from dinfer.node.admin_api import MLNODE_KEY, RegisterMLNode
from dinfer.node.broker import Broker
from dinfer.node.mlnode_client import MLNodeClient
from dinfer.node.store import NodeStore
from dinfer.retry import sleep_or_stop

log = logging.getLogger(__name__)

LAST_USED_KEY = "mlnode_version/last_used"
"""SQLite KV key of the version the clients used last (outside ``mlnode/``, which holds registrations)."""
DRAIN_GRACE_S = 0.5
"""Wait after the switch before reading the old version's in-flight count: a request dispatched just before the
swap may still be on its way to the ML node."""


class VersionSource(Protocol):
    """What the manager reads from the chain (``RegistryClient`` provides it)."""

    async def current_mlnode_version(self) -> str: ...

    async def mlnode_upgrade_plan(self) -> tuple[str, int] | None: ...


Height = Callable[[], Awaitable[int]]
ModelLoader = Callable[[str, MLNodeClient], Awaitable[None]]
"""``(node_id, client on the new prefix)`` → load that node's registered models there."""


class ModelCatalog(Protocol):
    async def get_governance_model(self, model_id: str) -> Any: ...


def registration_loader(store: NodeStore, catalog: ModelCatalog) -> ModelLoader:
    """Load a node's first registered model on another version with the governance ``model_args`` (as registration)."""

    async def load(node_id: str, client: MLNodeClient) -> None:
        key = MLNODE_KEY.format(node_id)
        raw = await store.kv_get(key)
        if raw is None:
            raise NodeError(f"ML node {node_id} has no registration record to load its models from")
        spec = RegisterMLNode.model_validate_json(raw)
        model = await catalog.get_governance_model(spec.models[0])
        await client.inference_up(model.id, list(model.model_args), spec.model_path)

    return load


@dataclass
class SwitchFailure:
    """The last switch that could not happen; the host still serves on ``serving``."""

    target: str
    serving: str | None
    problems: list[str]
    attempts: int
    since: float


@dataclass
class Switch:
    old: str | None
    new: str
    height: int
    reason: str
    at: float


class VersionManager:
    """Owned by the ``NodeRuntime``: ``await sync_version_from_chain()`` at start-up, then ``run(stop)``."""

    def __init__(self, broker: Broker, chain: VersionSource, height: Height, store: NodeStore,
                 settings: NodeSettings, *, loader: ModelLoader | None = None) -> None:
        self.broker = broker
        self.chain = chain
        self._height_fn = height
        self.store = store
        self.settings = settings
        self.loader = loader
        self.version: str | None = None
        self.height = 0
        self.chain_version: str | None = None
        self.plan: tuple[str, int] | None = None
        self.failure: SwitchFailure | None = None
        self.switches: list[Switch] = []
        self.stopped: list[dict[str, Any]] = []
        """Old-version ML nodes told to stop: ``{"node_id", "version", "ok", "error"}``."""
        self._prepared: str | None = None
        self._next_try = 0.0
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ start-up

    async def sync_version_from_chain(self) -> str | None:
        """Pick the version at start-up: the chain's, else ``last_used_version``, else the config default.

        A version the chain switched to while this host was down is caught up here (old version stopped).
        """
        last = await self.store.kv_get(LAST_USED_KEY)
        try:
            self.height = await self._height_fn()
            self.chain_version = await self.chain.current_mlnode_version() or None
            self.plan = await self.chain.mlnode_upgrade_plan()
        except (ChainError, OSError) as exc:
            log.warning("cannot read the ML-node version from the chain (%s); using the stored/default one", exc)
        start = last or self.chain_version or self.settings.mlnode_default_version
        if start is None:
            return None
        self._apply(start)
        await self.store.kv_set(LAST_USED_KEY, start)
        await self.broker.poll_once()
        if self.chain_version and self.chain_version != start:
            log.warning("ML-node version %s became current while this host was down (it used %s); catching up",
                        self.chain_version, start)
            await self._switch(self.chain_version, "catch-up at start-up")
        return self.version

    # ------------------------------------------------------------ background loop

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the block height; re-read the chain every ``mlnode_version_check_interval_s`` regardless."""
        next_check = time.monotonic() + self.settings.mlnode_version_check_interval_s
        while not stop.is_set():
            try:
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.settings.mlnode_version_check_interval_s
                    await self.refresh()
                else:
                    await self.on_block()
            except (ChainError, NodeError, OSError) as exc:
                log.warning("ML-node version check failed: %s", exc)
            await sleep_or_stop(stop, self.settings.mlnode_block_poll_s)

    async def on_block(self) -> None:
        """Act on a new block (or on a due retry): switch at the height, prepare a pending target before it."""
        height = await self._height_fn()
        retry_due = self.failure is not None and time.monotonic() >= self._next_try
        if height == self.height and not retry_due:
            return
        self.height = height
        await self._check_chain()

    async def refresh(self) -> None:
        """Periodic check: re-read the chain version and re-point any client not on the version in use."""
        self.height = await self._height_fn()
        await self._check_chain()
        stale = [e.node_id for e in self.broker.nodes() if e.client.endpoint.version != self.version]
        if stale and self.version is not None and self.failure is None:
            log.info("refreshing ML-node clients %s to version %s", ", ".join(stale), self.version)
            self.broker.set_version(self.version)

    async def _check_chain(self) -> None:
        self.chain_version = await self.chain.current_mlnode_version() or None
        self.plan = await self.chain.mlnode_upgrade_plan()
        if self.chain_version and self.chain_version != self.version:
            # the version was read after the height: a block may have landed in between (seen under load)
            self.height = max(self.height, await self._height_fn())
            if self.failure is None or time.monotonic() >= self._next_try:
                await self._switch(self.chain_version, f"height {self.height}")
        elif self.plan is not None and self.plan[0] not in (self.version, self._prepared):
            if time.monotonic() >= self._next_try:
                await self._prepare_ahead(self.plan[0])

    async def _prepare_ahead(self, target: str) -> None:
        problems = await self._prepare(target)
        if problems:
            self._next_try = time.monotonic() + self.settings.mlnode_upgrade_retry_s
            log.warning("ML-node version %s (due at block %s) is not ready yet: %s", target,
                        self.plan[1] if self.plan else "?", "; ".join(problems))
        else:
            self._prepared = target
            log.info("ML-node version %s is ready on every ML node ahead of its height", target)

    # ------------------------------------------------------------ the switch

    async def _switch(self, target: str, reason: str) -> bool:
        async with self._lock:
            if target == self.version:
                return True
            problems = await self._prepare(target)
            if problems:
                self._fail(target, problems)
                return False
            old = self.version
            old_clients = [(e.node_id, e.client) for e in self.broker.nodes()]
            self.broker.set_version(target)  # synchronous: every client moves before any other task runs
            self.version, self.failure, self._prepared = target, None, None
            self.switches.append(Switch(old, target, self.height, reason, time.time()))
            await self.store.kv_set(LAST_USED_KEY, target)
            log.info("ML-node clients switched %s -> %s (%s)", old, target, reason)
        await self.broker.poll_once()
        if old is not None:
            task = asyncio.create_task(self._retire(old, old_clients), name=f"retire-{old}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return True

    def _fail(self, target: str, problems: list[str]) -> None:
        attempts = self.failure.attempts + 1 if self.failure and self.failure.target == target else 1
        since = self.failure.since if self.failure and self.failure.target == target else time.time()
        self.failure = SwitchFailure(target, self.version, problems, attempts, since)
        retry = self.settings.mlnode_upgrade_retry_s
        self._next_try = time.monotonic() + retry
        log.error("ML-node upgrade to %s not applied (attempt %d): %s; still serving on %s, retrying in %.0fs",
                  target, attempts, "; ".join(problems), self.version, retry)

    async def _prepare(self, target: str) -> list[str]:
        """Make sure every enabled ML node answers under ``target`` and serves what it serves now."""
        results = await asyncio.gather(*(self._prepare_node(e.node_id, e.enabled, e.models, e.client, target)
                                         for e in self.broker.nodes()))
        return [p for p in results if p]

    async def _prepare_node(self, node_id: str, enabled: bool, models: list[str], current: MLNodeClient,
                            target: str) -> str:
        if not enabled:
            return ""
        client = current.at_version(target)
        try:
            snap = await client.state()
            reported = snap.get("version")
            if reported not in (None, target):
                return f"{node_id}: {client.endpoint.api_url('state')} answers as version {reported}"
            if models and not _serves(snap, models):
                if self.loader is None:
                    return f"{node_id}: {target} does not serve {', '.join(models)}"
                log.info("loading %s on ML node %s version %s", ", ".join(models), node_id, target)
                await self.loader(node_id, client)
                if not _serves(await client.state(), models):
                    return f"{node_id}: {target} still does not serve {', '.join(models)} after inference/up"
        except (NodeError, ChainError, ValueError) as exc:
            return f"{node_id}: {exc}"
        return ""

    async def _retire(self, old: str, clients: list[tuple[str, MLNodeClient]]) -> None:
        await asyncio.sleep(DRAIN_GRACE_S)
        await asyncio.gather(*(self._drain_and_stop(old, node_id, client) for node_id, client in clients))

    async def _drain_and_stop(self, old: str, node_id: str, client: MLNodeClient) -> None:
        deadline = time.monotonic() + self.settings.mlnode_stop_drain_s
        busy = 0
        while time.monotonic() < deadline:
            try:
                snap = await client.state()
            except (NodeError, ValueError):
                break
            busy = int(snap.get("in_flight", 0)) + int(snap.get("queue_depth", 0))
            if busy == 0:
                break
            await asyncio.sleep(0.2)
        else:
            log.warning("ML node %s version %s still has %d request(s) after %.0fs; stopping it anyway",
                        node_id, old, busy, self.settings.mlnode_stop_drain_s)
        record: dict[str, Any] = {"node_id": node_id, "version": old, "ok": True, "error": ""}
        try:
            await client.stop()
            log.info("stopped ML node %s version %s (%s)", node_id, old, client.endpoint.api_url("stop"))
        except (NodeError, ValueError) as exc:
            record.update(ok=False, error=str(exc))
            log.warning("could not stop ML node %s version %s: %s", node_id, old, exc)
        self.stopped.append(record)

    def _apply(self, version: str) -> None:
        self.broker.set_version(version)
        self.version = version

    # ------------------------------------------------------------ lifecycle / reporting

    async def close(self) -> None:
        """Cancel pending stops of old versions (host shutting down)."""
        for task in list(self._retiring):
            task.cancel()
        for task in list(self._retiring):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def wait_retired(self) -> None:
        """Wait for the old versions' stops started so far (tests)."""
        await asyncio.gather(*list(self._retiring), return_exceptions=True)

    def status(self) -> dict[str, Any]:
        return {
            "version": self.version, "chain_version": self.chain_version, "height": self.height,
            "plan": {"version": self.plan[0], "height": self.plan[1]} if self.plan else None,
            "prepared": self._prepared, "failure": asdict(self.failure) if self.failure else None,
            "switches": [asdict(s) for s in self.switches], "stopped": list(self.stopped),
        }


def _serves(snap: dict[str, Any], models: list[str]) -> bool:
    served = {str(m) for m in snap.get("models", [])}
    return snap.get("state") == "INFERENCE" and all(m in served for m in models)
