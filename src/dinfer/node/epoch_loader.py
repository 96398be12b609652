"""Puts an epoch's models on this host's ML nodes: broker epoch data, then ``inference/up`` where needed.

``sync`` reads the current epoch's snapshot models (``Epochs.epoch_models`` / ``get_epoch_model``) and this host's
``ml_nodes`` in them, records them per ML node on the broker (``update_node_with_epoch_data``), and — when asked to
load (after the epoch switch of a PoC cycle) — sends ``inference/up`` to each enabled ML node that is not already
serving its target model with the same arguments (``dinfer.node.epoch_models``). An epoch without snapshot models
(a governance-formed epoch that predates snapshots) falls back to the Registry's governance models.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

from dinfer.chain.contracts.epochs import EpochsClient
from dinfer.chain.contracts.registry import Model, RegistryClient
from dinfer.config import NodeSettings
from dinfer.errors import DinferError
from dinfer.node.admin_api import MLNODE_KEY, RegisterMLNode
from dinfer.node.broker import Broker, MLNodeEntry
from dinfer.node.epoch_models import LoadTarget, merge_model_args, pick_model
from dinfer.node.poc_steps import StepBook
from dinfer.node.store import NodeStore

log = logging.getLogger(__name__)

REREAD_S = 10.0
"""Shortest interval between two re-reads of an epoch whose data looked incomplete (see ``EpochLoader._stale``)."""


@dataclass(frozen=True)
class EpochData:
    epoch: int
    models: dict[str, Model]
    """Model id → the epoch's snapshot (or the governance model when the epoch has no snapshots)."""
    snapshot: bool
    ml_nodes: dict[str, dict[str, dict[str, Any]]]
    """Model id → node id → this host's ``MLNodeInfo`` (as a dict) in the epoch."""
    registered: dict[str, tuple[str, ...]]
    """This host's ML nodes on chain → their models."""


def _as_dict(value: Any) -> dict[str, Any]:
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else dict(value)


class EpochLoader:
    def __init__(self, *, address: str, settings: NodeSettings, epochs: EpochsClient, registry: RegistryClient,
                 broker: Broker, store: NodeStore) -> None:
        self.address = address
        self.settings = settings
        self.epochs = epochs
        self.registry = registry
        self.broker = broker
        self.store = store
        self.data: EpochData | None = None
        self.targets: dict[str, LoadTarget] = {}
        self.loaded: dict[str, tuple[str, tuple[str, ...]]] = {}
        """ML node → (model, args) this loader last loaded on it."""
        self._read_at = 0.0

    async def read(self, epoch: int) -> EpochData:
        ids = list(await self.epochs.epoch_models(epoch))
        snapshot = bool(ids)
        if snapshot:
            models = {m: await self.epochs.get_epoch_model(epoch, m) for m in ids}
        else:
            models = {m.id: m for m in await self.registry.get_governance_models()}
        ml_nodes: dict[str, dict[str, dict[str, Any]]] = {}
        for model_id in models if snapshot else ():
            infos = await self.epochs.get_ml_nodes(epoch, model_id, self.address)
            ml_nodes[model_id] = {i.node_id: _as_dict(i) for i in infos}
        registered = {n.node_id: n.models for n in await self.registry.get_nodes(self.address)}
        return EpochData(epoch, models, snapshot, ml_nodes, registered)

    def _target(self, data: EpochData, node_id: str, mined: str | None) -> LoadTarget | None:
        weighted = {m: {n for n, info in infos.items() if int(info.get("poc_weight", 0)) > 0}
                    for m, infos in data.ml_nodes.items()}
        picked = pick_model(node_id, list(data.models), weighted, mined, data.registered.get(node_id, ()))
        if picked is None:
            return None
        model_id, reason = picked
        local = self.settings.local_model_args.get(model_id, [])
        return LoadTarget(node_id, model_id, tuple(merge_model_args(data.models[model_id].model_args, local)), reason)

    def _record(self, data: EpochData, entry: MLNodeEntry) -> None:
        registered = data.registered.get(entry.node_id, ())
        models = {}
        for model_id in (m for m in data.models if m in registered):
            model = data.models[model_id]
            local = self.settings.local_model_args.get(model_id, [])
            models[model_id] = {**asdict(model), "model_args": merge_model_args(model.model_args, local),
                                "snapshot": data.snapshot}
        ml_nodes = {m: infos[entry.node_id] for m, infos in data.ml_nodes.items() if entry.node_id in infos}
        self.broker.update_node_with_epoch_data(entry.node_id, data.epoch, models, ml_nodes)

    def _stale(self, epoch: int) -> bool:
        """Re-read on a new epoch; while the epoch has no snapshot yet (governance still forming it) or an ML node
        is missing from the chain's list (registered since), re-read at most every ``REREAD_S`` seconds."""
        if self.data is None or self.data.epoch != epoch:
            return True
        missing = any(e.node_id not in self.data.registered for e in self.broker.nodes())
        return (missing or not self.data.snapshot) and time.monotonic() - self._read_at >= REREAD_S

    async def sync(self, *, load: bool, steps: StepBook | None = None, mined: dict[str, str] | None = None) -> None:
        """Refresh the broker's epoch data (re-read when the epoch changed); with ``load``, run the load steps."""
        epoch = await self.epochs.current_epoch()
        fresh = self._stale(epoch)
        if fresh:
            previous, self.data, self._read_at = self.data, await self.read(epoch), time.monotonic()
            if previous is None or (previous.epoch, previous.snapshot, list(previous.models)) != (
                    epoch, self.data.snapshot, list(self.data.models)):
                log.info("epoch %d: %d model(s) %s (%s)", epoch, len(self.data.models), ", ".join(self.data.models),
                         "snapshot" if self.data.snapshot else "no snapshot yet: governance models")
        data = self.data
        assert data is not None
        for entry in self.broker.nodes():
            if fresh or entry.epoch != epoch:
                self._record(data, entry)
        if not load or steps is None:
            return
        mined = mined or {}
        jobs = []
        for entry in self.broker.nodes():
            key = ("load", epoch, entry.node_id)
            if entry.enabled and entry.node_id in data.registered and steps.due(key):
                jobs.append(self._load_step(data, entry, mined.get(entry.node_id), steps, key))
        await asyncio.gather(*jobs)

    async def _load_step(self, data: EpochData, entry: MLNodeEntry, mined: str | None, steps: StepBook,
                         key: tuple[Any, ...]) -> None:
        target = self._target(data, entry.node_id, mined)
        if target is None:
            steps.give_up(key, "epoch has none of its models")
            log.warning("epoch %d: ML node %s serves none of the epoch's models", data.epoch, entry.node_id)
            return
        self.targets[entry.node_id] = target
        try:
            steps.succeed(key, await self._load(entry, target, mined is not None))
        except (DinferError, OSError, ValueError) as exc:
            attempts = steps.fail(key, str(exc))
            log.warning("epoch %d: loading %s on %s failed (attempt %d): %s", data.epoch, target.model_id,
                        entry.node_id, attempts, exc)

    async def _load(self, entry: MLNodeEntry, target: LoadTarget, mined: bool) -> str:
        current = (target.model_id, target.args)
        await self.broker.poll_node(entry)
        serving = entry.state == "INFERENCE" and target.model_id in entry.models
        if serving and not mined and self.loaded.get(entry.node_id, current) == current:
            return f"already serving {target.model_id}"
        model_path = await self._model_path(entry.node_id, target.model_id)
        log.info("loading %s on ML node %s (%s, args %s)", target.model_id, entry.node_id, target.reason,
                 " ".join(target.args))
        await entry.client.inference_up(target.model_id, list(target.args), model_path,
                                        timeout=self.settings.poc_model_load_timeout_s)
        self.loaded[entry.node_id] = current
        await self.broker.poll_node(entry)
        return f"loaded {target.model_id}"

    async def _model_path(self, node_id: str, model_id: str) -> str | None:
        """The GGUF path the operator registered the node with, when it is for this model (its first model)."""
        raw = await self.store.kv_get(MLNODE_KEY.format(node_id))
        if raw is None:
            return None
        spec = RegisterMLNode.model_validate_json(raw)
        return spec.model_path if spec.models and spec.models[0] == model_id else None

    def status(self) -> dict[str, Any]:
        return {"epoch": self.data.epoch if self.data else None,
                "models": sorted(self.data.models) if self.data else [],
                "targets": {n: asdict(t) for n, t in self.targets.items()}}
