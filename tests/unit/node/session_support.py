"""Real parts for the session tests: py-evm chain + Registry + Sessions, a real ML-node process serving the tiny
GGUF, NodeStore SQLite, the broker, and a ``SessionService`` over them. Nothing is mocked."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.fixtures.processes import mlnode_process
from tests.fixtures.servers import free_port
from tests.fixtures.tiny_gguf import write_tiny_gguf

from dinfer import crypto
from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.contracts.sessions import SessionsClient
from dinfer.chain.deploy import deploy_sessions
from dinfer.config import NodeSettings
from dinfer.crypto import Keypair
from dinfer.node.broker import Broker
from dinfer.node.checkpoints import ProofSubmitter
from dinfer.node.session_context import MLNodeTokenizer
from dinfer.node.session_service import SessionService, SignedPrompt
from dinfer.node.session_store import SessionStore
from dinfer.node.store import NodeStore

TINY = "dinfer/tiny-random-llama"
PRICE = 10**8
"""Wei per token (the genesis price of the tiny model)."""
DEPOSIT_TOKENS = 100_000


@pytest.fixture(scope="module")
def mlnode_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One ML-node process per test module with the tiny model loaded (n_ctx 512, like the genesis model)."""
    tmp = tmp_path_factory.mktemp("session-mlnode")
    model = write_tiny_gguf(tmp / "tiny.gguf")
    with mlnode_process(free_port(), "v0.1.0", "ml0", tmp, "--threads", "1") as url:
        resp = httpx.post(f"{url}/api/v1/inference/up", timeout=120,
                          json={"model": TINY, "model_path": str(model), "additional_args": ["--n_ctx", "512"]})
        assert resp.status_code == 200, resp.text
        yield url


@dataclass
class SessionEnv:
    chain: EthTesterBackend
    service: SessionService
    client_sessions: SessionsClient
    host_sessions: SessionsClient
    store: SessionStore
    broker: Broker
    client: Keypair
    host: Keypair
    http: httpx.AsyncClient
    node_store: NodeStore
    extra: dict[str, Any] = field(default_factory=dict)

    async def new_job(self, deposit_tokens: int = DEPOSIT_TOKENS, host: str | None = None,
                      model: str = TINY) -> int:
        receipt = await self.client_sessions.create_session(host or self.host.address, model, PRICE, 3600, 600,
                                                            deposit=PRICE * deposit_tokens)
        return self.client_sessions.job_id_of(receipt)

    def auth(self, job_id: int, key: Keypair | None = None, timestamp: int | None = None) -> dict[str, Any]:
        ts = int(time.time()) if timestamp is None else timestamp
        sig = crypto.sign_session_auth(self.chain_id, self.client_sessions.address, job_id, self.host.address, ts,
                                       (key or self.client).private_key)
        return {"timestamp": ts, "signature": "0x" + sig.hex()}

    @property
    def chain_id(self) -> int:
        return self.service.chain_id

    def signed(self, job_id: int, index: int, content: str, *, key: Keypair | None = None,
               timestamp: int | None = None, nonce: bytes | None = None) -> SignedPrompt:
        ts = int(time.time()) if timestamp is None else timestamp
        nonce = nonce or secrets.token_bytes(32)
        sig = crypto.sign_prompt(job_id, index, ts, nonce, content, (key or self.client).private_key)
        return SignedPrompt(index, ts, "0x" + nonce.hex(), "0x" + sig.hex())

    def receipt(self, job_id: int, cumulative: int, key: Keypair | None = None) -> str:
        sig = crypto.sign_receipt(self.chain_id, self.client_sessions.address, job_id, cumulative,
                                  (key or self.client).private_key)
        return "0x" + sig.hex()

    async def close(self) -> None:
        await self.service.close()
        await self.node_store.close()
        await self.broker.close()
        await self.http.aclose()


async def make_env(chain: EthTesterBackend, registry: RegistryClient, actors: Any, sender_for: Any, mlnode: str,
                   db: Path, **settings: Any) -> SessionEnv:
    """Host registered, Sessions deployed, the service built exactly as ``start_sessions`` builds it."""
    collateral = await registry.param("min_collateral_wei")
    await registry.with_sender(sender_for(actors.host))._transact("register_host", "http://h.test", "{}",
                                                                  value=collateral)
    contract = await deploy_sessions(chain.w3, sender_for(actors.owner), registry.address)
    client_sessions = SessionsClient(contract, sender_for(actors.client))
    host_sessions = SessionsClient(contract, sender_for(actors.host))
    return await build_service(chain, registry, actors, host_sessions, client_sessions, mlnode, db, **settings)


async def build_service(chain: EthTesterBackend, registry: RegistryClient, actors: Any,
                        host_sessions: SessionsClient, client_sessions: SessionsClient, mlnode: str, db: Path,
                        **settings: Any) -> SessionEnv:
    node_store = await NodeStore.open(db)
    store = await SessionStore.open(node_store)
    http = httpx.AsyncClient()
    broker = Broker(http)
    broker.add("ml0", mlnode)
    await broker.poll_once()

    async def block_time() -> int:
        return int((await chain.w3.eth.get_block("latest"))["timestamp"])

    async def no_pending() -> bool:
        return False  # py-evm mines every transaction at once

    submitter = ProofSubmitter(host_sessions, registry, store, block_time=block_time, has_pending_tx=no_pending)
    node = NodeSettings(**{"session_receipt_wait_s": 0.5, **settings})
    service = await SessionService.create(
        settings=node, address=actors.host.address, chain_id=await chain.w3.eth.chain_id, sessions=host_sessions,
        registry=registry, store=store, broker=broker, tokenizer=MLNodeTokenizer(broker, default_window=512),
        submitter=submitter)
    return SessionEnv(chain, service, client_sessions, host_sessions, store, broker, actors.client, actors.host,
                      http, node_store)
