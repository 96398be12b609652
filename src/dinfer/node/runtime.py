"""NodeRuntime: everything one host node owns — settings, keys, SQLite, chain clients, broker, roles, background
tasks — built once at start-up and shared by the public and admin apps (no module globals).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from fastapi import Request
from web3 import AsyncWeb3

from dinfer import __version__
from dinfer.build_info import build_info
from dinfer.chain.backends import connect
from dinfer.chain.contracts.epochs import EpochsClient
from dinfer.chain.contracts.inference import InferenceClient, ValidationClient
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.deploy import Deployment, bind, verify_deployment
from dinfer.chain.events import ChainEvent, EventPoller
from dinfer.chain.txqueue import TxSender
from dinfer.config import Settings
from dinfer.crypto import Keypair
from dinfer.epochs_clock import Stage
from dinfer.errors import ChainError, ConfigError
from dinfer.http_errors import read_limited_body
from dinfer.http_stream import StreamClient
from dinfer.node.admin_api import restore_nodes
from dinfer.node.announcer import Announcer
from dinfer.node.broker import Broker
from dinfer.node.chain_outbox import ChainOutbox
from dinfer.node.chain_view import ChainView
from dinfer.node.chain_writer import ChainWriter
from dinfer.node.executor import Executor
from dinfer.node.gateway import Gateway, start_gateway
from dinfer.node.listener import Listener
from dinfer.node.metrics import NodeMetrics
from dinfer.node.mlnode_recovery import MLNodeRecovery
from dinfer.node.poc_batches import PoCBatchStore
from dinfer.node.poc_orchestrator import PoCOrchestrator
from dinfer.node.remote import ExecutorPeer
from dinfer.node.session_service import SessionService, start_sessions
from dinfer.node.store import NodeStore
from dinfer.node.ta import TransferAgent
from dinfer.node.upgrades import VersionManager, registration_loader
from dinfer.node.validator import InferenceValidator
from dinfer.ratelimit import RateLimiter
from dinfer.retry import sleep_or_stop

log = logging.getLogger(__name__)


@dataclass
class NodeRuntime:
    settings: Settings
    keypair: Keypair
    deployment: Deployment
    w3: AsyncWeb3
    http: httpx.AsyncClient
    """Control calls (ML-node states and loads, PoC, validators, discovery)."""
    streams: StreamClient
    """The inference hops: TA → executor, executor → ML node (``dinfer.http_stream``)."""
    store: NodeStore
    sender: TxSender
    registry: RegistryClient
    epochs: EpochsClient
    inference: InferenceClient
    chain: ChainView
    writer: ChainWriter
    broker: Broker
    executor: Executor
    ta: TransferAgent
    listener: Listener
    metrics: NodeMetrics
    versions: VersionManager | None = None
    """ML-node version manager (set in ``start``; see ``node/upgrades.py``)."""
    sessions: SessionService | None = None
    """Session role (WebSocket ``/v1/ws`` + ``/v1/sessions``), set in ``start``; see ``node/session_service.py``."""
    poc_batches: PoCBatchStore | None = None
    """PoC leaves received from this host's ML nodes (callback API) and their seals; set in ``start``."""
    poc: PoCOrchestrator | None = None
    """Epoch / PoC orchestrator (``node/poc_orchestrator.py``); None when ``node.poc_enabled`` is false."""
    validator: InferenceValidator | None = None
    """Validator role (``node/validator.py``); None when ``node.validation_enabled`` is false."""
    gateway: Gateway | None = None
    """API-key gateway (``node/gateway.py``); None unless ``node.key_encryption_key`` is set."""
    announcer: Announcer | None = None
    """Discovery announcements (mDNS / DHT / HTTP directories, ``node/announcer.py``); None when none is set up."""
    recovery: MLNodeRecovery | None = None
    """Reloads ML nodes whose engine crashed or whose process restarted blank (``node/mlnode_recovery.py``)."""
    code_hashes: dict[str, str] = field(default_factory=dict)
    """keccak of each contract's runtime code, verified against the chain at start (``verify_deployment``)."""
    _validation: ValidationClient | None = None
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def address(self) -> str:
        return self.keypair.address

    @classmethod
    async def start(cls, settings: Settings) -> NodeRuntime:
        node = settings.node
        if node.private_key is None:
            raise ConfigError("node.private_key is required (set DINFER_NODE__PRIVATE_KEY)")
        keypair = Keypair.from_private_key(node.private_key.get_secret_value())
        if settings.chain.deployment_file is None:
            raise ConfigError("chain.deployment_file is required (the JSON written by `dinfer deploy` / the devnet)")
        deployment = Deployment.load(settings.chain.deployment_file)
        w3 = connect(settings.chain.rpc_urls, connections_per_url=settings.chain.connections_per_url,
                     request_timeout=settings.chain.request_timeout_s,
                     health_interval=settings.chain.health_interval_s)
        chain_id = await w3.eth.chain_id
        if chain_id != deployment.chain_id:
            raise ConfigError(f"RPC chain id {chain_id} differs from the deployment's {deployment.chain_id}")
        try:  # build identity: refuse to run against contracts this build was not compiled from
            code_hashes = await verify_deployment(w3, deployment)
        except ConfigError:
            await w3.provider.disconnect()
            raise
        build = build_info()
        log.info("build identity: dinfer %s, commit %s%s, chain %d, contracts %s, ABI hashes %s (ABI and bytecode "
                 "match this build)", build.version, build.commit or "unknown", " (modified)" if build.dirty else "",
                 chain_id, deployment.contracts, {n: h[:16] for n, h in deployment.abi_hashes.items()})
        http = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        store = await NodeStore.open(Path(node.data_dir) / "node.sqlite")
        sender = TxSender(w3, keypair, receipt_timeout=settings.chain.tx_receipt_timeout_s,
                          fee_bump_percent=settings.chain.tx_fee_bump_percent)
        registry = RegistryClient(bind(w3, "Registry", deployment.address("Registry")), sender)
        epochs = EpochsClient(bind(w3, "Epochs", deployment.address("Epochs")), sender)
        inference = InferenceClient(bind(w3, "Inference", deployment.address("Inference")), sender)
        chain = ChainView(registry, epochs, inference)
        streams = StreamClient()
        broker = Broker(http, streams)
        limiter = RateLimiter(per_minute=node.rate_limit_per_minute)
        metrics = NodeMetrics()
        rt_holder: dict[str, TransferAgent] = {}

        async def on_outcome(kind: str, iid: str, outcome: str, detail: str) -> None:
            metrics.chain_records.labels(kind=kind, outcome=outcome).inc()
            await rt_holder["ta"].on_chain_outcome(kind, iid, outcome, detail)

        writer = ChainWriter(inference, max_records=node.batch_max_records, max_delay=node.batch_max_delay_s,
                             on_outcome=on_outcome)
        executor = Executor(broker, store, writer, address=keypair.address, ttft_timeout=node.ttft_timeout_s,
                            metrics=metrics)
        peers = ExecutorPeer(streams, keypair.private_key)
        ta = TransferAgent(address=keypair.address, settings=node, chain=chain, store=store, writer=writer,
                           executor=executor, peers=peers, limiter=limiter, metrics=metrics)
        rt_holder["ta"] = ta
        cursor = store.cursor_store()
        listener = Listener(keypair.address, store, chain, executor, peers, http,
                            max_tokens_default=node.max_tokens_default)
        rt = cls(settings, keypair, deployment, w3, http, streams, store, sender, registry, epochs, inference, chain,
                 writer, broker, executor, ta, listener, metrics)
        rt.code_hashes = code_hashes
        try:
            rt.gateway = await start_gateway(rt)  # first: a wrong key-encryption key stops the start here
        except ConfigError:
            await rt.stop()  # close the store, RPC pool and HTTP client: their threads would keep the process alive
            raise
        validation = await rt.validation()
        if node.validation_enabled:
            rt.validator = rt._make_validator()
        poller = EventPoller(w3, [inference.contract, validation.contract], cursor, "inference", rt._on_event,
                             start_block=deployment.block, confirmations=settings.chain.confirmations)
        pool = w3.provider
        metrics.bind(queue_depth=lambda: writer.depth,
                     rpc_stats=lambda: (pool.stats().healthy, pool.stats().failures),  # type: ignore[attr-defined]
                     mlnode_states=lambda: [n.state for n in broker.nodes()])
        restored = await restore_nodes(rt)
        writer.outbox = await ChainOutbox.open(store)  # chain records owed from before a crash go out again
        try:
            await writer.replay()
        except ChainError as exc:  # they stay in the outbox for the next start
            log.warning("outbox replay failed: %s", exc)
        rt.sessions = await start_sessions(rt)
        # ML-node versions (design §5): pick the version before the first poll, then follow the chain.
        async def height() -> int:
            return int(await w3.eth.block_number)

        rt.versions = VersionManager(broker, registry, height, store, node, loader=registration_loader(store, registry))
        await rt.versions.sync_version_from_chain()
        await broker.poll_once()
        rt._tasks = [
            asyncio.create_task(broker.run(rt._stop), name="broker-poll"),
            asyncio.create_task(poller.run(rt._stop), name="listener"),
            asyncio.create_task(rt.versions.run(rt._stop), name="mlnode-versions"),
            asyncio.create_task(rt._start_recovery().run(rt._stop), name="mlnode-recovery"),
            asyncio.create_task(rt._prune_payloads(), name="payload-retention"),
        ]
        if rt.validator is not None:
            rt._tasks.append(asyncio.create_task(rt.validator.run(rt._stop), name="validator"))
        # Epochs and PoC (docs/epochs.md): follow the stage clock, drive this host's ML nodes through each cycle.
        rt.poc_batches = await PoCBatchStore.open(store)
        if node.poc_enabled:
            async def block_hash(number: int) -> str:
                return "0x" + bytes((await w3.eth.get_block(number))["hash"]).hex()

            rt.poc = PoCOrchestrator(address=keypair.address, settings=node, epochs=epochs, registry=registry,
                                     broker=broker, store=store, batches=rt.poc_batches, http=http, height=height,
                                     block_hash=block_hash)
            rt._tasks.append(asyncio.create_task(rt.poc.run(rt._stop), name="poc-orchestrator"))
        rt.announcer = await rt._start_announcer()
        log.info("host node %s started (dinfer %s, chain %d, Registry %s, %d ML node(s) restored)", keypair.address,
                 __version__, chain_id, deployment.address("Registry"), restored)
        return rt

    def _start_recovery(self) -> MLNodeRecovery:
        """ML-node crash recovery; it stays out of the way while the PoC orchestrator drives the nodes (any stage but
        INFERENCE)."""

        def may_load() -> bool:
            return self.poc is None or self.poc.stage in (None, Stage.INFERENCE)

        self.recovery = MLNodeRecovery(self.broker, self.store, registration_loader(self.store, self.registry),
                                       may_load=may_load)
        return self.recovery

    async def validation(self) -> ValidationClient:
        """The Validation contract the Inference contract trusts (looked up once)."""
        if self._validation is None:
            self._validation = await self.inference.validation_client()
        return self._validation

    def _make_validator(self) -> InferenceValidator:
        async def rate_bps() -> int:
            return int(await self.registry.param("validation_rate_bps"))

        async def threshold() -> float:
            return int(await self.registry.param("validation_score_threshold_ppm")) / 1_000_000

        return InferenceValidator(self.address, self.keypair.private_key, store=self.store, chain=self.chain,
                                  inference=self.inference, validation=self.validation, broker=self.broker,
                                  http=self.http, rate_bps=rate_bps, threshold=threshold)

    async def _start_announcer(self) -> Announcer | None:
        """Announce this host on the discovery channels ``node.discovery`` enables (docs/sdk.md, discovery)."""
        disc = self.settings.node.discovery
        if not (disc.mdns or disc.dht_port or disc.http_services):
            return None
        if not await self.registry.is_host(self.address):
            log.warning("discovery announcements are off: %s is not a registered host yet", self.address)
            return None
        models = sorted({m for n in await self.registry.get_nodes(self.address) for m in n.models})
        metadata = orjson.loads((await self.registry.get_host(self.address)).metadata or "{}")
        announcer = Announcer(disc, self.keypair.private_key, self.settings.node.public_url, models, metadata)
        await announcer.start()
        return announcer

    async def _on_event(self, event: ChainEvent) -> None:
        await self.listener.handle(event)
        if self.validator is not None:
            await self.validator.handle(event)

    async def _prune_payloads(self) -> None:
        """Drop payloads and ``inference_seen`` markers older than ``node.payload_retention_s`` (checked every
        tenth of it, at most hourly)."""
        retention = self.settings.node.payload_retention_s
        while not self._stop.is_set():
            dropped = await self.store.prune_payloads(retention)
            if dropped:
                log.info("dropped %d payload(s) past the %.0f s retention window", dropped, retention)
            # a marker outlives its request's window and its start's expiry by far at any sane retention
            markers = self.store.seen.prune(retention)
            if markers:
                log.info("dropped %d inference_seen marker(s) past the %.0f s retention window", markers, retention)
            await sleep_or_stop(self._stop, min(retention / 10, 3600.0))

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.versions is not None:
            await self.versions.close()
        await self.listener.close()
        if self.validator is not None:
            await self.validator.close()
        if self.announcer is not None:
            with contextlib.suppress(Exception):
                await self.announcer.stop()
        if self.sessions is not None:
            await self.sessions.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.drain(timeout=5.0), timeout=15.0)
        await self.writer.close()
        await self.sender.close()
        await self.store.close()
        await self.http.aclose()
        await self.streams.close()
        await self.w3.provider.disconnect()

    async def read_body(self, request: Request) -> bytes:
        """The request body, refusing more than ``max_body_bytes`` (413) without reading it all."""
        return await read_limited_body(request, self.settings.node.max_body_bytes)

    def identity(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "dinfer_version": __version__,
            "chain_id": self.deployment.chain_id,
            "contracts": self.deployment.contracts,
            "abi_hashes": self.deployment.abi_hashes,
            "public_url": self.settings.node.public_url,
            "git_commit": build_info().commit,
            "build": build_info().as_dict(),
            "code_hashes": self.code_hashes,
        }
