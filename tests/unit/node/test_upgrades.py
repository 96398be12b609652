"""VersionManager against the real Registry (py-evm) and real ML node apps on loopback sockets.

Each "ML node host" is one base URL serving several ML node versions side by side, routed by their version prefix
(what nginx does in deployment, see deploy/nginx/mlnode.conf); tests/e2e/test_mlnode_upgrade.py uses real nginx.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send
from tests.fixtures.servers import serve_app

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.config import MLNodeSettings, NodeSettings
from dinfer.mlnode.app import create_app
from dinfer.node.broker import Broker
from dinfer.node.store import NodeStore
from dinfer.node.upgrades import LAST_USED_KEY, VersionManager

GENESIS, NEW = "v0.1.0", "v0.3.9"
SETTINGS = NodeSettings(mlnode_upgrade_retry_s=0.05, mlnode_stop_drain_s=2.0, mlnode_block_poll_s=0.05)


class VersionRouter:
    """ASGI app sending ``/{version}/...`` to that version's ML node app; versions in ``down`` answer 502."""

    def __init__(self, apps: dict[str, FastAPI]) -> None:
        self.apps = apps
        self.down: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        version = scope["path"].split("/")[1]
        app = self.apps.get(version)
        if app is None or version in self.down:
            await send({"type": "http.response.start", "status": 502, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"bad gateway"})
            return
        await app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()
        async with AsyncExitStack() as stack:
            for app in self.apps.values():
                await stack.enter_async_context(app.router.lifespan_context(app))
            await send({"type": "lifespan.startup.complete"})
            await receive()
        await send({"type": "lifespan.shutdown.complete"})


@asynccontextmanager
async def ml_host(node_id: str, versions: tuple[str, ...]) -> AsyncIterator[tuple[str, VersionRouter]]:
    router = VersionRouter({v: create_app(MLNodeSettings(node_id=node_id, version=v)) for v in versions})
    async with serve_app(router) as url:
        yield url, router


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[NodeStore]:
    s = await NodeStore.open(tmp_path / "node.sqlite")
    yield s
    await s.close()



def manager(broker: Broker, registry: RegistryClient, chain: EthTesterBackend, store: NodeStore,
            settings: NodeSettings = SETTINGS) -> VersionManager:
    async def height() -> int:
        return int(await chain.w3.eth.block_number)

    return VersionManager(broker, registry, height, store, settings)


async def state_of(http: httpx.AsyncClient, base: str, version: str) -> str:
    return str((await http.get(f"{base}/{version}/api/v1/state")).json()["state"])


def versions_in_use(broker: Broker) -> set[str | None]:
    return {e.client.endpoint.version for e in broker.nodes()}


async def schedule(registry: RegistryClient, chain: EthTesterBackend, version: str, ahead: int = 3) -> int:
    height = int(await chain.w3.eth.block_number) + ahead
    await registry.schedule_mlnode_upgrade(version, height)
    return height


async def test_first_start_uses_the_chain_version(registry: RegistryClient, chain: EthTesterBackend,
                                                  store: NodeStore, http: httpx.AsyncClient) -> None:
    async with ml_host("a", (GENESIS,)) as (base, _):
        broker = Broker(http)
        broker.add("a", base)
        vm = manager(broker, registry, chain, store)
        assert await vm.sync_version_from_chain() == GENESIS
        assert versions_in_use(broker) == {GENESIS}
        assert await store.kv_get(LAST_USED_KEY) == GENESIS
        assert broker.get("a").state == "UNKNOWN"  # reached through /v0.1.0/api/v1/state


async def test_switch_at_height_moves_every_client_and_stops_the_old_version(
        registry: RegistryClient, chain: EthTesterBackend, store: NodeStore, http: httpx.AsyncClient) -> None:
    async with ml_host("a", (GENESIS, NEW)) as (base_a, _), ml_host("b", (GENESIS, NEW)) as (base_b, _):
        broker = Broker(http)
        broker.add("a", base_a)
        broker.add("b", base_b, GENESIS)
        vm = manager(broker, registry, chain, store)
        await vm.sync_version_from_chain()
        height = await schedule(registry, chain, NEW)
        await vm.on_block()
        assert vm.version == GENESIS and vm.plan == (NEW, height) and vm.status()["prepared"] == NEW
        assert versions_in_use(broker) == {GENESIS}
        await chain.mine(height - int(await chain.w3.eth.block_number))
        await vm.on_block()
        assert vm.version == NEW and versions_in_use(broker) == {NEW}
        assert await store.kv_get(LAST_USED_KEY) == NEW
        assert [(s.old, s.new, s.height) for s in vm.switches] == [(GENESIS, NEW, height)]
        await vm.wait_retired()
        assert sorted((r["node_id"], r["version"], r["ok"]) for r in vm.stopped) == [("a", GENESIS, True),
                                                                                      ("b", GENESIS, True)]
        for base in (base_a, base_b):
            assert await state_of(http, base, GENESIS) == "STOPPED"
            assert await state_of(http, base, NEW) == "UNKNOWN"


async def test_unreachable_new_version_keeps_serving_on_the_old_one_and_retries(
        registry: RegistryClient, chain: EthTesterBackend, store: NodeStore, http: httpx.AsyncClient,
        caplog: pytest.LogCaptureFixture) -> None:
    async with ml_host("a", (GENESIS, NEW)) as (base_a, _), ml_host("b", (GENESIS, NEW)) as (base_b, router_b):
        router_b.down.add(NEW)
        broker = Broker(http)
        broker.add("a", base_a)
        broker.add("b", base_b)
        vm = manager(broker, registry, chain, store)
        await vm.sync_version_from_chain()
        height = await schedule(registry, chain, NEW, ahead=2)
        await chain.mine(height - int(await chain.w3.eth.block_number))
        with caplog.at_level(logging.ERROR, logger="dinfer.node.upgrades"):
            await vm.on_block()
        # all-or-nothing: node a is ready but no client moves while node b is not
        assert vm.version == GENESIS and versions_in_use(broker) == {GENESIS}
        failure = vm.status()["failure"]
        assert failure["target"] == NEW and failure["serving"] == GENESIS and failure["attempts"] == 1
        assert "b: " in failure["problems"][0] and len(failure["problems"]) == 1
        assert any("not applied" in r.message and r.levelno == logging.ERROR for r in caplog.records)
        assert await store.kv_get(LAST_USED_KEY) == GENESIS
        assert await state_of(http, base_a, GENESIS) == "UNKNOWN"  # nothing was stopped
        assert vm.stopped == []

        vm._next_try = 0.0  # retry due now (same block: the retry does not wait for a new one)
        await vm.on_block()
        assert vm.status()["failure"]["attempts"] == 2 and vm.version == GENESIS

        router_b.down.clear()
        vm._next_try = 0.0
        await vm.on_block()
        assert vm.version == NEW and vm.failure is None and versions_in_use(broker) == {NEW}
        await vm.wait_retired()
        assert await state_of(http, base_b, GENESIS) == "STOPPED"


async def test_rollback_to_the_previous_version_uses_the_same_switch(
        registry: RegistryClient, chain: EthTesterBackend, store: NodeStore, http: httpx.AsyncClient) -> None:
    async with ml_host("a", (GENESIS, NEW)) as (base, _):
        broker = Broker(http)
        broker.add("a", base)
        vm = manager(broker, registry, chain, store)
        await vm.sync_version_from_chain()
        h1 = await schedule(registry, chain, NEW, ahead=2)
        await chain.mine(2)
        await vm.on_block()
        await vm.wait_retired()
        assert vm.version == NEW
        h2 = await schedule(registry, chain, GENESIS, ahead=2)  # rollback: the previous version, later height
        await vm.on_block()
        assert vm.version == NEW
        await chain.mine(2)
        await vm.on_block()
        await vm.wait_retired()
        assert vm.version == GENESIS and versions_in_use(broker) == {GENESIS}
        assert await store.kv_get(LAST_USED_KEY) == GENESIS
        assert [(s.old, s.new) for s in vm.switches] == [(GENESIS, NEW), (NEW, GENESIS)]
        assert vm.switches[0].height >= h1 and vm.switches[1].height >= h2
        assert [(r["version"], r["ok"]) for r in vm.stopped] == [(GENESIS, True), (NEW, True)]
        assert await state_of(http, base, NEW) == "STOPPED"


async def test_restart_catches_up_an_upgrade_missed_while_down(
        registry: RegistryClient, chain: EthTesterBackend, store: NodeStore, http: httpx.AsyncClient) -> None:
    async with ml_host("a", (GENESIS, NEW)) as (base, _):
        await store.kv_set(LAST_USED_KEY, GENESIS)  # what the host used before it went down
        await schedule(registry, chain, NEW, ahead=2)
        await chain.mine(3)
        assert await registry.current_mlnode_version() == NEW
        broker = Broker(http)
        broker.add("a", base)
        vm = manager(broker, registry, chain, store)
        assert await vm.sync_version_from_chain() == NEW
        assert [(s.old, s.new, s.reason) for s in vm.switches] == [(GENESIS, NEW, "catch-up at start-up")]
        await vm.wait_retired()
        assert await state_of(http, base, GENESIS) == "STOPPED"
        assert await store.kv_get(LAST_USED_KEY) == NEW


async def test_periodic_refresh_repoints_clients_changed_by_other_means(
        registry: RegistryClient, chain: EthTesterBackend, store: NodeStore, http: httpx.AsyncClient) -> None:
    async with ml_host("a", (GENESIS,)) as (base_a, _), ml_host("b", (GENESIS,)) as (base_b, _):
        broker = Broker(http)
        broker.add("a", base_a)
        vm = manager(broker, registry, chain, store)
        await vm.sync_version_from_chain()
        broker.add("b", base_b)  # registered later without a version
        assert versions_in_use(broker) == {GENESIS, None}
        await vm.refresh()
        assert versions_in_use(broker) == {GENESIS}
        assert vm.switches == [] and vm.stopped == []


async def test_without_a_readable_chain_the_config_default_is_used(
        chain: EthTesterBackend, store: NodeStore, http: httpx.AsyncClient, registry: RegistryClient) -> None:
    async with ml_host("a", ("v0.2.0",)) as (base, _):
        broker = Broker(http)
        broker.add("a", base)
        unreadable = RegistryClient(registry.contract.w3.eth.contract(  # no contract at this address
            address="0x000000000000000000000000000000000000dEaD", abi=registry.contract.abi))
        vm = manager(broker, unreadable, chain, store, NodeSettings(mlnode_default_version="v0.2.0"))
        assert await vm.sync_version_from_chain() == "v0.2.0"
        assert versions_in_use(broker) == {"v0.2.0"} and broker.get("a").state == "UNKNOWN"
        await store.kv_set(LAST_USED_KEY, "v0.1.5")
        vm2 = manager(Broker(http), unreadable, chain, store, NodeSettings(mlnode_default_version="v0.2.0"))
        assert await vm2.sync_version_from_chain() == "v0.1.5"  # last used beats the config default
