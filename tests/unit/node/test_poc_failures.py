"""Failure paths of the PoC orchestration: bad callbacks, a dead ML node, a peer hiding its leaves, bad leaves."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from poc_hosts import (
    HOST_SETTINGS,
    TINY,
    deploy,
    genesis_group,
    mine_to,
    restarted,
    running_host,
    tick_all,
    wait_for_leaves,
)
from tests.fixtures.servers import free_port

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.epochs import EpochsClient, model_key
from dinfer.chain.contracts.registry import HardwareNode
from dinfer.chain.deploy import bind
from dinfer.genesis import Genesis
from dinfer.node.poc_batches import Leaves
from dinfer.node.poc_orchestrator import FETCH_ATTEMPTS
from dinfer.node.poc_validator import BatchRef, check_leaves


def _ref(leaves: Leaves) -> BatchRef:
    return BatchRef(100, "0x" + "11" * 20, "n1", TINY, len(leaves), "0x" + leaves.root().hex())


def test_check_leaves_names_each_mismatch() -> None:
    good = Leaves([1, 4, 9], [1.0, 1.1, 1.2])
    assert check_leaves(_ref(good), good, r_target=1.3) == ""
    assert "2 leaves served, 3 committed" in check_leaves(_ref(good), Leaves([1, 4], [1.0, 1.1]), 1.3)
    assert "distinct" in check_leaves(_ref(good), Leaves([1, 4, 4], [1.0, 1.1, 1.2]), 1.3)
    assert "distinct" in check_leaves(_ref(good), Leaves([4, 1, 9], [1.1, 1.0, 1.2]), 1.3)
    assert "r_target" in check_leaves(_ref(good), good, r_target=1.15)
    tampered = Leaves([1, 4, 9], [1.0, 1.1, 1.25])
    assert "Merkle root" in check_leaves(_ref(good), tampered, 1.3)


async def test_callback_refuses_bad_batches(chain: EthTesterBackend, actors: Any, genesis: Genesis, tmp_path: Path,
                                            models: Path, http: httpx.AsyncClient) -> None:
    deployment = await deploy(chain, actors.owner, genesis)
    async with running_host(chain, deployment, actors.host, tmp_path, models, [], http) as host:
        url = host.poc.callback_url + "/generated"
        nonces, distances = [3, 8], [1.0, 1.2]
        root = "0x" + Leaves(nonces, distances).root().hex()
        body = {"node_id": "a-ml0", "public_key": host.address, "block_hash": "0x" + "ab" * 32,
                "block_height": 61, "nonces": nonces, "distances": distances, "merkle_root": root}
        cases = [
            ({**body, "merkle_root": "0x" + "00" * 32}, 400, "does not match"),
            ({**body, "distances": [1.0]}, 400, "differ in length"),
            ({**body, "distances": [1.0, 9.0]}, 400, "bad leaf"),
            ({**body, "public_key": actors.host2.address}, 403, "not for this host"),
            (body, 409, "not generating"),
        ]
        for payload, status, message in cases:
            resp = await http.post(url, json=payload)
            assert resp.status_code == status, resp.text
            assert message in resp.json()["error"]["message"]
        assert len(await host.poc_batches.leaves(61, "a-ml0")) == 0


async def test_dead_ml_node_and_hidden_leaves(chain: EthTesterBackend, actors: Any, genesis: Genesis,
                                              tmp_path: Path, models: Path, http: httpx.AsyncClient) -> None:
    """A's second ML node is down: A still commits its live node. B hides its leaves: A reports it failed after
    FETCH_ATTEMPTS fetches, so B's batch is invalid and B gets no weight in epoch 2."""
    deployment = await deploy(chain, actors.owner, genesis)
    async with running_host(chain, deployment, actors.host, tmp_path, models, ["a-ml0"], http) as a, \
            running_host(chain, deployment, actors.host2, tmp_path, models, ["b-ml0"], http) as b:
        a.broker.add("a-dead", f"http://127.0.0.1:{free_port()}")
        await a.registry.submit_hardware_diff([HardwareNode("a-dead", (TINY,), "cpu", 100)], [])
        hosts = [a, b]
        await genesis_group(chain, deployment, actors.owner, hosts)
        params = await a.registry.params()
        p = await a.epochs.genesis_block() + params.epoch_length_blocks
        g, v = params.poc_generate_blocks, params.poc_validate_blocks

        await mine_to(chain, p)
        await tick_all(hosts)
        assert ("generate", "a-dead") in a.poc.cycle.steps.failures
        assert a.poc.cycle.steps.done[("generate", "a-ml0")] == "ok"
        await tick_all(hosts)  # a due retry runs at the same height; the live node is not disturbed
        assert a.poc.cycle.steps.attempts(("generate", "a-dead")) >= 1
        assert "a-dead" not in a.poc.cycle.generating
        await wait_for_leaves([a, b], p)

        await mine_to(chain, p + g - a.poc.settings.poc_stop_margin_blocks)
        await tick_all(hosts)
        on_chain = {(x.host, x.node_id) for x in await a.epochs.get_poc_batches(p)}
        assert on_chain == {(a.address, "a-ml0"), (b.address, "b-ml0")}

        await b.poc_batches.prune(p + 1)  # B no longer serves what it committed
        await mine_to(chain, p + g)
        key = ("validate", b.address, "b-ml0")
        for _ in range(FETCH_ATTEMPTS * 20):
            await tick_all(hosts)
            if a.poc.cycle.steps.is_done(key):
                break
        verdict = a.poc.cycle.verdicts[f"{b.address}/b-ml0"]
        assert verdict["sampled_ok"] == 0 and verdict["passed"] is False
        assert "leaves unavailable" in verdict["reason"]
        fails = {(x.host, x.node_id): x.fails for x in await a.epochs.get_poc_batches(p)}
        assert fails[(b.address, "b-ml0")] == 1 and fails[(a.address, "a-ml0")] == 0

        await mine_to(chain, p + g + v)
        await tick_all(hosts)
        assert await a.epochs.current_epoch() == 2
        group = await a.epochs.get_group(2, model_key(TINY))
        assert list(group.members) == [a.address]
        # the dead node's load keeps failing and is retried; the live one is back to inference
        assert a.broker.get("a-ml0").state == "INFERENCE"
        assert ("load", 2, "a-dead") in a.poc.cycle.steps.failures



async def test_restart_mid_cycle_adopts_generation_and_local_args_apply(
        chain: EthTesterBackend, actors: Any, genesis: Genesis, tmp_path: Path, models: Path,
        http: httpx.AsyncClient) -> None:
    """The host restarts while its ML node generates: the new orchestrator adopts the run (same cycle, seed) and
    commits it; after the switch the node is loaded with the snapshot args merged with the local ones."""
    deployment = await deploy(chain, actors.owner, genesis)
    local = HOST_SETTINGS.model_copy(update={"local_model_args": {TINY: ["--n_ctx", "256", "--seed", "7"]}})
    async with running_host(chain, deployment, actors.host, tmp_path, models, ["a-ml0"], http, settings=local) as a:
        await genesis_group(chain, deployment, actors.owner, [a])
        params = await a.registry.params()
        p = await a.epochs.genesis_block() + params.epoch_length_blocks
        g, v = params.poc_generate_blocks, params.poc_validate_blocks
        await mine_to(chain, p)
        await a.poc.tick()
        seed = a.poc.cycle.seed_hash
        fresh = restarted(a)
        await fresh.tick()
        assert fresh.cycle.generating == {"a-ml0": TINY} and fresh.cycle.seed_hash == seed
        assert (await a.broker.get("a-ml0").client.pow_status())["block_height"] == p  # not restarted
        await wait_for_leaves([a], p)
        await mine_to(chain, p + g - fresh.settings.poc_stop_margin_blocks)
        await fresh.tick()
        (batch,) = await a.epochs.get_poc_batches(p)
        assert batch.node_id == "a-ml0" and batch.nonce_count == len(await a.poc_batches.leaves(p, "a-ml0"))
        await mine_to(chain, p + g + v)
        await fresh.tick()
        entry = a.broker.get("a-ml0")
        assert entry.state == "INFERENCE" and entry.epoch == 2
        assert entry.epoch_models[TINY]["model_args"] == ["--n_ctx", "256", "--seed", "7"]
        assert fresh.loader.targets["a-ml0"].args == ("--n_ctx", "256", "--seed", "7")


async def test_run_survives_a_broken_chain_and_stops_on_request(chain: EthTesterBackend, actors: Any, genesis: Genesis,
                                                                tmp_path: Path, models: Path,
                                                                http: httpx.AsyncClient) -> None:
    """Epochs bound to an address without the contract: every tick fails, the loop logs, keeps going, stops."""
    deployment = await deploy(chain, actors.owner, genesis)
    async with running_host(chain, deployment, actors.host, tmp_path, models, [], http) as a:
        fresh = restarted(a)
        fresh.epochs = EpochsClient(bind(chain.w3, "Epochs", deployment.address("Registry")), None)
        stop = asyncio.Event()
        task = asyncio.create_task(fresh.run(stop))
        for _ in range(100):
            await chain.mine(1)
            await asyncio.sleep(0.05)
            if fresh.last_error:
                break
        assert fresh.last_error and not task.done()
        assert fresh.status()["error"] == fresh.last_error
        stop.set()
        await asyncio.wait_for(task, 10)
