"""Hosts for the epoch / PoC tests: a py-evm chain with short epochs, and per host its orchestrator, its public
and callback apps on loopback sockets, and real in-process ML node apps serving the tiny GGUF model.

A ``PoCHost`` carries exactly the parts of a ``NodeRuntime`` the epoch routes and the callback API read (the full
runtime needs an HTTP RPC endpoint; py-evm is in-process), built from the same classes the runtime uses.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tests.fixtures.servers import serve_app
from tests.fixtures.tiny_gguf import write_tiny_gguf
from web3 import AsyncWeb3

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.epochs import EpochsClient, model_key
from dinfer.chain.contracts.inference import InferenceClient
from dinfer.chain.contracts.registry import HardwareNode, RegistryClient
from dinfer.chain.deploy import Deployment, bind, deploy_network
from dinfer.chain.txqueue import TxSender
from dinfer.config import MLNodeSettings, NodeSettings, Settings
from dinfer.crypto import Keypair
from dinfer.devnet import with_params
from dinfer.genesis import Genesis
from dinfer.mlnode.app import create_app
from dinfer.node.app import create_callback_app, create_public_app
from dinfer.node.broker import Broker
from dinfer.node.chain_view import ChainView
from dinfer.node.poc_batches import PoCBatchStore
from dinfer.node.poc_orchestrator import PoCOrchestrator
from dinfer.node.store import NodeStore
from support import build_once

TINY = "dinfer/tiny-random-llama"
PARAMS = {"epoch_length_blocks": 60, "poc_generate_blocks": 20, "poc_validate_blocks": 15,
          "model_loading_blocks": 5, "end_of_epoch_blocks": 5, "min_poc_slot_nodes": 0}
"""Short epochs; every transaction mines a block on py-evm, so the stages leave room for a few per host."""
HOST_SETTINGS = NodeSettings(poc_poll_s=0.05, poc_stop_margin_blocks=6, poc_batch_size=64, poc_retry_min_s=0.01,
                             poc_retry_max_s=0.05, poc_fetch_timeout_s=5.0, poc_model_load_timeout_s=120.0)


def models_dir(root: Path) -> Path:
    """A directory where ML nodes find ``dinfer/tiny-random-llama.gguf`` by model id."""
    (root / "dinfer").mkdir(parents=True, exist_ok=True)
    write_tiny_gguf(root / "dinfer" / "tiny-random-llama.gguf")
    return root


async def deploy(chain: EthTesterBackend, owner: Keypair, genesis: Genesis, **params: int) -> Deployment:
    """The whole network with the short-epoch parameters (deployed once per chain head and parameter set, then
    restored from a snapshot: ``support.build_once``)."""
    merged = {**PARAMS, **params}

    async def build() -> Deployment:
        return await deploy_network(chain.w3, TxSender(chain.w3, owner, poll_interval=0.01),
                                    with_params(genesis, merged), treasury=owner.address)

    deployment = await build_once(chain, f"network:{owner.address}:{sorted(merged.items())}", build)
    return copy.deepcopy(deployment)


@dataclass
class PoCHost:
    keypair: Keypair
    w3: AsyncWeb3
    registry: RegistryClient
    epochs: EpochsClient
    chain: ChainView
    store: NodeStore
    poc_batches: PoCBatchStore
    broker: Broker
    poc: PoCOrchestrator = field(init=False)
    settings: Settings = field(default_factory=Settings)
    """What the apps read from a runtime besides the parts above (e.g. ``node.max_body_bytes``)."""
    url: str = ""
    ml_urls: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.keypair.address


def clients(chain: EthTesterBackend, deployment: Deployment, sender: TxSender | None) -> tuple[Any, ...]:
    registry = RegistryClient(bind(chain.w3, "Registry", deployment.address("Registry")), sender)
    epochs = EpochsClient(bind(chain.w3, "Epochs", deployment.address("Epochs")), sender)
    inference = InferenceClient(bind(chain.w3, "Inference", deployment.address("Inference")), sender)
    return registry, epochs, inference


@asynccontextmanager
async def running_host(chain: EthTesterBackend, deployment: Deployment, keypair: Keypair, tmp: Path, models: Path,
                    node_ids: list[str], http: httpx.AsyncClient, *, settings: NodeSettings = HOST_SETTINGS,
                    register: bool = True) -> AsyncIterator[PoCHost]:
    """A registered host with ``node_ids`` ML nodes (tiny model loaded, declared on chain), all servers up."""
    async with AsyncExitStack() as stack:
        sender = TxSender(chain.w3, keypair, poll_interval=0.01)
        stack.push_async_callback(sender.close)
        registry, epochs, inference = clients(chain, deployment, sender)
        store = await NodeStore.open(tmp / f"{keypair.address}.sqlite")
        stack.push_async_callback(store.close)
        batches = await PoCBatchStore.open(store)
        broker = Broker(http)
        stack.push_async_callback(broker.close)

        async def height() -> int:
            return int(await chain.w3.eth.block_number)

        async def block_hash(number: int) -> str:
            return "0x" + bytes((await chain.w3.eth.get_block(number))["hash"]).hex()

        host = PoCHost(keypair, chain.w3, registry, epochs, ChainView(registry, epochs, inference), store, batches,
                       broker)
        callback = await stack.enter_async_context(serve_app(create_callback_app(host)))  # type: ignore[arg-type]
        host.poc = PoCOrchestrator(address=keypair.address, epochs=epochs, registry=registry, broker=broker,
                                   settings=settings.model_copy(update={"callback_url": callback + "/v1/poc"}),
                                   store=store, batches=batches, http=http, height=height, block_hash=block_hash)
        host.url = await stack.enter_async_context(serve_app(create_public_app(host)))  # type: ignore[arg-type]
        for node_id in node_ids:
            app = create_app(MLNodeSettings(node_id=node_id, models_dir=models, engine_threads=1))
            url = await stack.enter_async_context(serve_app(app))
            host.ml_urls[node_id] = url
            entry = broker.add(node_id, url)
            await entry.client.inference_up(TINY, ["--n_ctx", "512"])
        await broker.poll_once()
        if register:
            await registry.register_host(host.url, "{}", 10**18)
            await registry.submit_hardware_diff([HardwareNode(n, (TINY,), "cpu", 100) for n in node_ids], [])
        yield host


async def genesis_group(chain: EthTesterBackend, deployment: Deployment, owner: Keypair,
                        hosts: list[PoCHost]) -> None:
    """Epoch 1 by governance: every host in the tiny model's group, ML nodes allocated (what the devnet does)."""
    _, epochs, _ = clients(chain, deployment, TxSender(chain.w3, owner, poll_interval=0.01))
    epoch = await epochs.current_epoch()
    await epochs.add_group(epoch, model_key(TINY), [h.address for h in hosts], [100] * len(hosts))
    await epochs.allocate_genesis_nodes(epoch, TINY)


async def mine_to(chain: EthTesterBackend, height: int) -> None:
    now = int(await chain.w3.eth.block_number)
    assert now <= height, f"already at block {now}, past {height}"
    if height > now:
        await chain.mine(height - now)


async def tick_all(hosts: list[PoCHost]) -> None:
    for host in hosts:
        await host.poc.tick()


async def wait_for_leaves(hosts: list[PoCHost], poc_start: int, minimum: int = 3, timeout: float = 60) -> None:
    """Until every generating node of every host has stored ``minimum`` leaves through the callback API."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        counts = {(h.address, n): len(await h.poc_batches.leaves(poc_start, n))
                  for h in hosts for n in (h.poc.cycle.generating if h.poc.cycle else {})}
        if counts and all(c >= minimum for c in counts.values()):
            return
        assert asyncio.get_running_loop().time() < deadline, f"leaves stored so far: {counts}"
        await asyncio.sleep(0.2)


def restarted(host: PoCHost) -> PoCOrchestrator:
    """A fresh orchestrator over the same store, broker and chain: what a restarted host process builds."""
    old = host.poc
    fresh = PoCOrchestrator(address=old.address, settings=old.settings, epochs=old.epochs, registry=old.registry,
                            broker=old.broker, store=old.store, batches=old.batches, http=old.http,
                            height=old._height, block_hash=old._block_hash)
    host.poc = fresh
    return fresh
