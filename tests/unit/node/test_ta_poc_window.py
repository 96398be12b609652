"""The TA inside the PoC window (issue #14 part 2): the PoC order over ``Epochs.poc_eligible``, and a clear 503 with
Retry-After at the end of the PoC when no member kept an ML node serving the model — nothing written anywhere."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from poc_hosts import TINY, clients, deploy, mine_to

from dinfer.auth import sign_headers
from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.epochs import model_key
from dinfer.chain.contracts.registry import HardwareNode, RegistryClient
from dinfer.chain.txqueue import TxSender
from dinfer.config import NodeSettings
from dinfer.crypto import Keypair
from dinfer.genesis import Genesis
from dinfer.http_errors import HTTPError
from dinfer.http_stream import StreamClient
from dinfer.node.broker import Broker
from dinfer.node.chain_view import ChainView
from dinfer.node.chain_writer import ChainWriter
from dinfer.node.executor import Executor
from dinfer.node.metrics import NodeMetrics
from dinfer.node.remote import ExecutorPeer
from dinfer.node.store import NodeStore
from dinfer.node.ta import TransferAgent
from dinfer.ratelimit import RateLimiter


async def make_ta(chain: EthTesterBackend, actors: Any, genesis: Genesis, store: NodeStore, http: httpx.AsyncClient,
                  slot_nodes: int) -> TransferAgent:
    """Two hosts in the genesis group of the tiny model, each with one declared ML node; ``slot_nodes`` of them
    keep serving during the PoC (governance allocation with zero demand)."""
    deployment = await deploy(chain, actors.owner, genesis, min_poc_slot_nodes=slot_nodes)
    owner = TxSender(chain.w3, actors.owner, poll_interval=0.01)
    _, epochs, _ = clients(chain, deployment, owner)
    hosts = [actors.host, actors.host2]
    for host in hosts:
        registry = RegistryClient(clients(chain, deployment, None)[0].contract, TxSender(chain.w3, host,
                                                                                            poll_interval=0.01))
        await registry.register_host("http://127.0.0.1:9", "{}", 10**18)
        await registry.submit_hardware_diff([HardwareNode(f"ml-{host.address[2:6]}", (TINY,), "cpu", 100)], [])
    await epochs.add_group(1, model_key(TINY), [h.address for h in hosts], [100, 100])
    await epochs.allocate_genesis_nodes(1, TINY)
    sender = TxSender(chain.w3, actors.host, poll_interval=0.01)
    registry, epochs, inference = clients(chain, deployment, sender)
    await clients(chain, deployment, TxSender(chain.w3, actors.client, poll_interval=0.01))[2].deposit(10**18)
    writer = ChainWriter(inference)
    return TransferAgent(address=actors.host.address, settings=NodeSettings(), chain=ChainView(registry, epochs,
                         inference), store=store, writer=writer,
                         executor=Executor(Broker(http), store, writer, address=actors.host.address, ttft_timeout=5),
                         peers=ExecutorPeer(StreamClient(), actors.host.private_key), limiter=RateLimiter(600),
                         metrics=NodeMetrics())


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[NodeStore]:  # type: ignore[no-untyped-def]
    store = await NodeStore.open(tmp_path / "node.sqlite")
    yield store
    await store.close()


def signed(client: Keypair, ta: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"model": TINY, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
    return body, {**sign_headers(body, client.private_key, ta), "content-type": "application/json"}


async def test_no_eligible_executor_during_poc_is_503_until_the_poc_ends(  # type: ignore[no-untyped-def]
    chain: EthTesterBackend, actors, genesis: Genesis, store: NodeStore, http: httpx.AsyncClient
) -> None:
    ta = await make_ta(chain, actors, genesis, store, http, slot_nodes=0)
    try:
        window = await ta.chain.poc_window(1)
        outside = await ta.chain.group(TINY)
        assert outside is not None and not outside.in_poc and outside.eligible == [True, True]

        await mine_to(chain, window.start + 1)
        ta.chain = ChainView(ta.chain.registry, ta.chain.epochs, ta.chain.inference)  # no cached head
        body, headers = signed(actors.client, ta.address)
        accepted = await ta.admit("chat", body, headers)
        assert accepted.group.in_poc and accepted.group.eligible == [False, False]
        with pytest.raises(HTTPError) as refused:
            await ta.dispatch(accepted)
        err = refused.value
        assert err.status == 503 and err.code == "poc_no_eligible_executor"
        assert f"until block {window.end}" in str(err) and "POC_SLOT" in str(err)
        blocks_left = window.end - await ta.chain.head()
        assert int(err.headers["Retry-After"]) == max(1, round(blocks_left * await ta.chain.seconds_per_block()))
        # nothing written: no marker (the same signed request may come back after the PoC), no record, no start
        assert store.seen.get(accepted.inference_id) is None
        assert await store.get_inference(accepted.inference_id) is None
        assert ta.reserved.get(accepted.signed.client, 0) == 0 and not ta.pending_starts

        await mine_to(chain, window.end)
        ta.chain = ChainView(ta.chain.registry, ta.chain.epochs, ta.chain.inference)
        after = await ta.chain.group(TINY)
        assert after is not None and not after.in_poc and after.eligible == [True, True]
    finally:
        await ta.writer.close()
