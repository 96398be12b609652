"""``MLNodeRecovery``: a host reloads an ML node that came back blank (UNKNOWN) with its registered model — a real
in-process ML node running llama.cpp on the tiny model, the genesis Registry on py-evm for the model's args."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from poc_hosts import TINY
from tests.fixtures.servers import serve_app

from dinfer.chain.contracts.registry import RegistryClient
from dinfer.config import MLNodeSettings
from dinfer.mlnode.app import create_app
from dinfer.node.admin_api import MLNODE_KEY, RegisterMLNode
from dinfer.node.broker import Broker
from dinfer.node.mlnode_recovery import MLNodeRecovery
from dinfer.node.store import NodeStore
from dinfer.node.upgrades import registration_loader


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[NodeStore]:
    store = await NodeStore.open(tmp_path / "node.sqlite")
    yield store
    await store.close()


async def _register(store: NodeStore, url: str, *, load: bool) -> None:
    spec = RegisterMLNode(node_id="ml", url=url, models=[TINY], load=load)
    await store.kv_set(MLNODE_KEY.format("ml"), spec.model_dump_json())


async def test_a_blank_mlnode_is_reloaded_only_when_allowed_and_registered_to_load(
    store: NodeStore, registry: RegistryClient, models: Path, http: httpx.AsyncClient
) -> None:
    async with serve_app(create_app(MLNodeSettings(node_id="ml", models_dir=models, engine_threads=1))) as url:
        broker = Broker(http)
        entry = broker.add("ml", url)
        await broker.poll_node(entry)
        assert entry.state == "UNKNOWN"  # a restarted ML node: nothing loaded
        allowed = False
        recovery = MLNodeRecovery(broker, store, registration_loader(store, registry), grace_s=0,
                                  may_load=lambda: allowed)

        await _register(store, url, load=False)
        allowed = True
        await recovery.once()  # registered without load: the operator loads it, not the host
        assert entry.state == "UNKNOWN" and recovery.recovered == 0

        await _register(store, url, load=True)
        allowed = False
        await recovery.once()  # the PoC orchestrator owns the nodes right now
        assert entry.state == "UNKNOWN" and recovery.recovered == 0

        allowed = True
        await recovery.once()
        assert entry.state == "INFERENCE" and entry.models == [TINY] and recovery.recovered == 1
        await recovery.once()  # serving: nothing more to do
        assert recovery.recovered == 1
