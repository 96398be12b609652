"""Brings this host's ML nodes back into service after a crash.

The broker only observes states. Two of them mean an ML node that should serve has stopped serving without anyone
asking it to: FAILED (its engine subprocess died: ``inference/up`` recovers, docs/mlnode.md) and UNKNOWN (the ML
node process itself restarted and came back blank). ``MLNodeRecovery`` reloads such a node's registered model with
``inference/up`` — the same load registration and version switches use — with capped exponential backoff per node.
STOPPED and POC are left alone (an operator or the PoC cycle put them there), as are disabled nodes, nodes
registered with ``load = false``, and every node while ``may_load()`` says no (the PoC orchestrator owns the ML
nodes outside the INFERENCE stage).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from dinfer.errors import DinferError
from dinfer.node.admin_api import MLNODE_KEY, RegisterMLNode
from dinfer.node.broker import Broker, MLNodeEntry
from dinfer.node.store import NodeStore
from dinfer.node.upgrades import ModelLoader
from dinfer.retry import RetryPolicy, sleep_or_stop

log = logging.getLogger(__name__)

RECOVERABLE = ("FAILED", "UNKNOWN")
"""Broker states of a node that stopped serving by itself (engine crash, ML-node restart)."""


@dataclass
class _Attempts:
    first_seen: float
    count: int = 0
    next_at: float = 0.0


class MLNodeRecovery:
    """Every ``interval_s``: reload each enabled, load-registered node the broker last saw FAILED or UNKNOWN."""

    def __init__(self, broker: Broker, store: NodeStore, load: ModelLoader, *,
                 may_load: Callable[[], bool] = lambda: True, interval_s: float = 2.0, grace_s: float = 6.0,
                 policy: RetryPolicy | None = None) -> None:
        self.broker = broker
        self.store = store
        self.load = load
        self.may_load = may_load
        self.interval_s = interval_s
        self.grace_s = grace_s
        """How long a node must stay FAILED/UNKNOWN before a reload (a registration may be loading it right now)."""
        self.policy = policy or RetryPolicy(min_backoff=2.0, max_backoff=60.0, max_retries=1_000_000)
        self.recovered = 0
        """Reloads that succeeded (``/admin/stats``, tests)."""
        self._attempts: dict[str, _Attempts] = {}

    async def run(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, self.interval_s):
            try:
                await self.once()
            except Exception:  # one bad round must not end recovery for good
                log.exception("ML-node recovery round failed")

    async def once(self) -> None:
        if not self.may_load():
            return
        await asyncio.gather(*(self._recover(e) for e in self.broker.nodes() if self._due(e)))

    def _due(self, entry: MLNodeEntry) -> bool:
        if not entry.enabled or entry.state not in RECOVERABLE:
            self._attempts.pop(entry.node_id, None)  # serving (or deliberately not): a later crash starts afresh
            return False
        now = time.monotonic()
        tries = self._attempts.setdefault(entry.node_id, _Attempts(first_seen=now))
        return now - tries.first_seen >= self.grace_s and now >= tries.next_at

    async def _recover(self, entry: MLNodeEntry) -> None:
        raw = await self.store.kv_get(MLNODE_KEY.format(entry.node_id))
        if raw is None or not RegisterMLNode.model_validate_json(raw).load:
            return
        tries = self._attempts[entry.node_id]
        tries.count += 1
        tries.next_at = time.monotonic() + self.policy.delay(tries.count)
        log.warning("ML node %s is %s (%s); reloading its model (attempt %d)", entry.node_id, entry.state,
                    entry.last_error or "no error reported", tries.count)
        try:
            await self.load(entry.node_id, entry.client)
        except (DinferError, OSError, ValueError) as exc:
            log.warning("reloading ML node %s failed: %s; next try in %.0f s", entry.node_id, exc,
                        tries.next_at - time.monotonic())
            return
        await self.broker.poll_node(entry)
        if entry.state == "INFERENCE":
            self.recovered += 1
            self._attempts.pop(entry.node_id, None)
            log.info("ML node %s serves %s again", entry.node_id, ", ".join(entry.models))
