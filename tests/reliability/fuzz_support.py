"""Fuzz fixtures: the real servers the ``test_fuzz_*`` files attack, each on 127.0.0.1.

The servers run in this process on a background event loop (``FuzzLoop``) so that hypothesis drives them from plain
synchronous tests (no per-example event loop, one server for the whole run) and this process' RSS is the servers'
memory. ``fuzz_host`` is a complete host node: anvil, the genesis deployment, ``NodeRuntime.start`` (exactly what
``dinfer node run`` builds), its public / admin / callback apps, one in-process ML node with the tiny model loaded
and declared on chain, and a funded session job for the WebSocket tests. Runs that use it start anvil: wrap them in
``flock /tmp/devnet.lock``.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from tests.fixtures.servers import serve_app
from tests.fixtures.tiny_gguf import write_tiny_gguf

from dinfer import crypto
from dinfer.chain.anvil import AnvilProcess
from dinfer.chain.backends import connect
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.contracts.sessions import SessionsClient
from dinfer.chain.deploy import bind, deploy_network
from dinfer.chain.txqueue import TxSender
from dinfer.config import MLNodeSettings, Settings
from dinfer.crypto import Keypair
from dinfer.discovery_service import DiscoveryServiceConfig, create_discovery_app
from dinfer.genesis import Genesis
from dinfer.mlnode.app import create_app as create_mlnode_app
from dinfer.node.app import create_admin_app, create_callback_app, create_public_app
from dinfer.node.runtime import NodeRuntime

T = TypeVar("T")
TINY = "dinfer/tiny-random-llama"
FUZZ_MAX_BODY = 65_536
"""``node.max_body_bytes`` of the fuzzed host: small, so oversize bodies are cheap to send."""
FUZZ_MAX_FRAME = 16_384
"""``node.ws_max_frame_bytes`` of the fuzzed host."""
RSS_BOUND_MB = 150.0
"""Largest RSS growth of this process (the servers live in it) over one fuzz test, after warm-up."""


class FuzzLoop:
    """An event loop on its own thread: ``run(coro)`` waits for a coroutine there, ``enter(cm)`` keeps an async
    context manager open until ``close()``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="fuzz-loop")
        self.thread.start()
        self.stack = AsyncExitStack()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 300) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def enter(self, cm: AbstractAsyncContextManager[T], timeout: float = 300) -> T:
        return self.run(self.stack.enter_async_context(cm), timeout)

    def close(self) -> None:
        try:
            self.run(self.stack.aclose(), timeout=120)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="session")
def fuzz_loop() -> Iterator[FuzzLoop]:
    loop = FuzzLoop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def fuzz_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder where an ML node finds the tiny model by id (``dinfer/tiny-random-llama.gguf``)."""
    root = tmp_path_factory.mktemp("fuzz-models")
    (root / "dinfer").mkdir()
    write_tiny_gguf(root / "dinfer" / "tiny-random-llama.gguf")
    return root


def _mlnode_app(models: Path, node_id: str) -> Any:
    return create_mlnode_app(MLNodeSettings(node_id=node_id, models_dir=models, engine_threads=1,
                                            max_tokens_limit=64))


@pytest.fixture(scope="session")
def fuzz_mlnode(fuzz_loop: FuzzLoop, fuzz_models: Path) -> str:
    """A standalone ML node (its own app, nothing loaded): the target of the ML-node route fuzzing."""
    return fuzz_loop.enter(serve_app(_mlnode_app(fuzz_models, "fuzz-ml")))


@pytest.fixture(scope="session")
def fuzz_discovery(fuzz_loop: FuzzLoop) -> str:
    """The discovery service (announcements and reports only; no chain)."""
    app = create_discovery_app(DiscoveryServiceConfig(watch_registry=False, reports_per_minute=1_000_000))
    return fuzz_loop.enter(serve_app(app))


@dataclass
class FuzzHost:
    """URLs and keys of the fuzzed host node."""

    public: str
    admin: str
    callback: str
    mlnode: str
    runtime: NodeRuntime
    host: Keypair
    client: Keypair
    chain_id: int
    sessions_address: str
    job_id: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return self.public.replace("http://", "ws://") + "/v1/ws"

    def session_auth(self, job_id: int | None = None) -> dict[str, Any]:
        """A valid ``session_init`` auth for the fixture's job (signed by its client)."""
        ts = int(time.time())
        sig = crypto.sign_session_auth(self.chain_id, self.sessions_address, self.job_id if job_id is None else job_id,
                                       self.host.address, ts, self.client.private_key)
        return {"timestamp": ts, "signature": "0x" + sig.hex()}


async def _start_host(stack: AsyncExitStack, tmp: Path, models: Path, genesis: Genesis) -> FuzzHost:
    anvil = await AnvilProcess.start(block_time=0.2, accounts=6, log_path=tmp / "anvil.log")
    stack.callback(anvil.stop)
    owner, host, client = anvil.accounts[0], anvil.accounts[1], anvil.accounts[2]
    w3 = connect([anvil.url])
    stack.push_async_callback(w3.provider.disconnect)
    owner_tx = TxSender(w3, owner, poll_interval=0.05)
    stack.push_async_callback(owner_tx.close)
    deployment = await deploy_network(w3, owner_tx, genesis, treasury=owner.address)
    deployment.save(tmp / "deployment.json")
    registry = RegistryClient(bind(w3, "Registry", deployment.address("Registry")),
                              TxSender(w3, host, poll_interval=0.05))
    stack.push_async_callback(registry.sender.close)  # type: ignore[union-attr]
    await registry.register_host("http://127.0.0.1:1", "{}", int(await registry.param("min_collateral_wei")))
    settings = Settings(
        chain={"rpc_urls": [anvil.url], "deployment_file": tmp / "deployment.json"},
        node={"private_key": host.private_key, "data_dir": tmp / "host", "poc_enabled": False,
              "validation_enabled": False, "key_encryption_key": secrets.token_hex(32),
              "max_body_bytes": FUZZ_MAX_BODY, "ws_max_frame_bytes": FUZZ_MAX_FRAME, "batch_max_delay_s": 0.2,
              "rate_limit_per_minute": 1_000_000},
    )
    rt = await NodeRuntime.start(settings)
    stack.push_async_callback(rt.stop)
    public = await stack.enter_async_context(serve_app(create_public_app(rt)))
    admin = await stack.enter_async_context(serve_app(create_admin_app(rt)))
    callback = await stack.enter_async_context(serve_app(create_callback_app(rt)))
    mlnode = await stack.enter_async_context(serve_app(_mlnode_app(models, "fuzz-host-ml")))
    async with httpx.AsyncClient(timeout=180) as http:
        resp = await http.post(f"{admin}/admin/mlnodes", json={
            "node_id": "fuzz-host-ml", "url": mlnode, "models": [TINY], "hardware": "cpu", "throughput": 100})
        assert resp.status_code == 201, resp.text
    client_sessions = SessionsClient(bind(w3, "Sessions", deployment.address("Sessions")),
                                     TxSender(w3, client, poll_interval=0.05))
    stack.push_async_callback(client_sessions.sender.close)  # type: ignore[union-attr]
    price = genesis.model(TINY).price_per_token
    receipt = await client_sessions.create_session(host.address, TINY, price, 3600, 600, deposit=price * 100_000)
    return FuzzHost(public, admin, callback, mlnode, rt, host, client, deployment.chain_id,
                    deployment.address("Sessions"), client_sessions.job_id_of(receipt))


@pytest.fixture(scope="session")
def fuzz_host(fuzz_loop: FuzzLoop, fuzz_models: Path, genesis: Genesis,
              tmp_path_factory: pytest.TempPathFactory) -> FuzzHost:
    """A full host node over anvil (see the module docstring)."""
    tmp = tmp_path_factory.mktemp("fuzz-host")

    async def start() -> FuzzHost:
        return await _start_host(fuzz_loop.stack, tmp, fuzz_models, genesis)

    return fuzz_loop.run(start(), timeout=300)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as client:
        yield client


def rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc``; no psutil in the test extras)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class RssWatch:
    """RSS of this process (the servers run in it): ``baseline()`` after warm-up, ``check()`` at the end."""

    def __init__(self, bound_mb: float = RSS_BOUND_MB) -> None:
        self.bound_mb = bound_mb
        self.start = rss_bytes()

    def baseline(self) -> None:
        self.start = rss_bytes()

    def growth_mb(self) -> float:
        return (rss_bytes() - self.start) / 2**20

    def check(self) -> float:
        grown = self.growth_mb()
        assert grown < self.bound_mb, f"RSS grew by {grown:.1f} MB during the fuzz run (bound {self.bound_mb} MB)"
        return grown


@pytest.fixture
def rss() -> Iterator[RssWatch]:
    """Bounded memory: RSS growth over the test (after the test's own warm-up call to ``baseline()``)."""
    watch = RssWatch()
    yield watch
    watch.check()

