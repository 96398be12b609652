"""A whole PoC cycle, block by block, on a real py-evm chain: two hosts, real ML node apps, real llama.cpp loads.

generate → callbacks stored → stop + seal + submit_poc_batch → peers fetch leaves over HTTP and recompute a sample
on their own ML node → submit_poc_validation → switch_epoch (one host switches, the other sees it) → the new
epoch's snapshot model loaded back on the ML nodes, broker epoch data updated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from poc_hosts import TINY, deploy, genesis_group, mine_to, running_host, tick_all, wait_for_leaves

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.epochs import model_key
from dinfer.epochs_clock import Stage
from dinfer.genesis import Genesis


async def test_full_cycle_forms_the_next_epoch_from_poc(chain: EthTesterBackend, actors: Any, genesis: Genesis,
                                                         tmp_path: Path, models: Path,
                                                         http: httpx.AsyncClient) -> None:
    deployment = await deploy(chain, actors.owner, genesis)
    async with running_host(chain, deployment, actors.host, tmp_path, models, ["a-ml0"], http) as a, \
            running_host(chain, deployment, actors.host2, tmp_path, models, ["b-ml0"], http) as b:
        hosts = [a, b]
        await genesis_group(chain, deployment, actors.owner, hosts)
        params = await a.registry.params()
        genesis_block = await a.epochs.genesis_block()
        L, g, v = params.epoch_length_blocks, params.poc_generate_blocks, params.poc_validate_blocks
        p = genesis_block + L

        # Before the first cycle: INFERENCE, the broker learns epoch 1's models, nothing is reloaded.
        await tick_all(hosts)
        assert a.poc.stage == Stage.INFERENCE and a.poc.cycle is None
        assert a.broker.get("a-ml0").epoch == 1 and TINY in a.broker.get("a-ml0").epoch_models

        # POC_GENERATE: both ML nodes switch to PoC, seeded with the hash of block p - 1.
        await mine_to(chain, p)
        await tick_all(hosts)
        seed = "0x" + bytes((await chain.w3.eth.get_block(p - 1))["hash"]).hex()
        assert a.poc.cycle is not None and a.poc.cycle.seed_hash == seed
        for host, node in ((a, "a-ml0"), (b, "b-ml0")):
            status = await host.broker.get(node).client.pow_status()
            assert status["state"] == "POC" and status["block_height"] == p
        await wait_for_leaves(hosts, p)

        # Stop margin: generation stops, leaves are sealed, one batch per node goes on chain.
        await mine_to(chain, p + g - a.poc.settings.poc_stop_margin_blocks)
        await tick_all(hosts)
        batches = {(x.host, x.node_id): x for x in await a.epochs.get_poc_batches(p)}
        assert set(batches) == {(a.address, "a-ml0"), (b.address, "b-ml0")}
        for host, node in ((a, "a-ml0"), (b, "b-ml0")):
            sealed = await host.poc_batches.committed_leaves(p, node)
            assert sealed is not None
            commit, leaves = sealed
            root = leaves.root()
            on_chain = batches[(host.address, node)]
            assert on_chain.nonce_count == commit.nonce_count == len(leaves) > 0
            assert bytes(on_chain.merkle_root) == root and on_chain.model_id == TINY
            assert all(d < params.poc_r_target_ppm / 1e6 for d in leaves.distances)
            assert (await host.broker.get(node).client.pow_status())["status"] == "STOPPED"

        # The public route serves exactly the committed leaves.
        served = (await http.get(f"{b.url}/v1/poc/batches/{p}/b-ml0")).json()
        assert served["host"] == b.address and served["merkle_root"] == "0x" + bytes(
            batches[(b.address, "b-ml0")].merkle_root).hex()

        # POC_VALIDATE: each host validates the other's batch with its own ML node.
        await mine_to(chain, p + g)
        await tick_all(hosts)
        samples = min(params.poc_validation_samples, batches[(b.address, "b-ml0")].nonce_count)
        assert a.poc.cycle.verdicts[f"{b.address}/b-ml0"]["sampled_ok"] == samples
        assert a.poc.cycle.verdicts[f"{b.address}/b-ml0"]["passed"] is True
        after = {(x.host, x.node_id): (x.passes, x.fails) for x in await a.epochs.get_poc_batches(p)}
        assert after == {(a.address, "a-ml0"): (1, 0), (b.address, "b-ml0"): (1, 0)}

        # SET_NEW_VALIDATORS: A switches, B sees it; both reload the snapshot model and record epoch 2.
        await mine_to(chain, p + g + v)
        await tick_all(hosts)
        assert await a.epochs.current_epoch() == 2 and await a.epochs.switched_cycle() == p
        assert a.poc.cycle.steps.done[("switch",)] == "switched by this host"
        assert b.poc.cycle.steps.done[("switch",)] == "switched by another host"
        group = await a.epochs.get_group(2, model_key(TINY))
        tpn = (await a.epochs.get_epoch_model(2, TINY)).throughput_per_nonce
        assert set(group.members) == {a.address, b.address}
        assert dict(zip(group.members, group.weights, strict=True)) == {
            h.address: batches[(h.address, n)].nonce_count * tpn for h, n in ((a, "a-ml0"), (b, "b-ml0"))}
        for host, node in ((a, "a-ml0"), (b, "b-ml0")):
            entry = host.broker.get(node)
            assert entry.state == "INFERENCE" and entry.models == [TINY]
            assert entry.epoch == 2 and entry.epoch_models[TINY]["model_args"] == ["--n_ctx", "512"]
            assert entry.epoch_ml_nodes[TINY]["poc_weight"] == batches[(host.address, node)].nonce_count * tpn
            assert host.poc.loader.targets[node].reason == "weighted"


async def test_poc_slot_node_keeps_serving_and_keeps_its_weight(chain: EthTesterBackend, actors: Any,
                                                                 genesis: Genesis, tmp_path: Path, models: Path,
                                                                 http: httpx.AsyncClient) -> None:
    deployment = await deploy(chain, actors.owner, genesis, min_poc_slot_nodes=1)
    async with running_host(chain, deployment, actors.host, tmp_path, models, ["a-ml0"], http) as a, \
            running_host(chain, deployment, actors.host2, tmp_path, models, ["b-ml0"], http) as b:
        hosts = [a, b]
        await genesis_group(chain, deployment, actors.owner, hosts)
        slot = [(h, n) for h, n in ((a, "a-ml0"), (b, "b-ml0")) if await a.epochs.is_poc_slot(1, TINY, h.address, n)]
        assert len(slot) == 1
        (slot_host, slot_node), = slot
        miner, miner_node = (b, "b-ml0") if slot_host is a else (a, "a-ml0")
        params = await a.registry.params()
        p = await a.epochs.genesis_block() + params.epoch_length_blocks
        g, v = params.poc_generate_blocks, params.poc_validate_blocks

        await mine_to(chain, p)
        await tick_all(hosts)
        assert slot_node in slot_host.poc.cycle.slot_nodes and slot_node not in slot_host.poc.cycle.generating
        assert (await slot_host.broker.get(slot_node).client.state())["state"] == "INFERENCE"
        await wait_for_leaves([miner], p)
        await mine_to(chain, p + g - a.poc.settings.poc_stop_margin_blocks)
        await tick_all(hosts)
        assert [(x.host, x.node_id) for x in await a.epochs.get_poc_batches(p)] == [(miner.address, miner_node)]
        await mine_to(chain, p + g)
        await tick_all(hosts)
        assert slot_host.poc.cycle.verdicts[f"{miner.address}/{miner_node}"]["passed"] is True
        await mine_to(chain, p + g + v)
        await tick_all(hosts)

        group = await a.epochs.get_group(2, model_key(TINY))
        assert set(group.members) == {a.address, b.address}  # the slot node's host kept its preserved weight
        assert (await slot_host.broker.get(slot_node).client.state())["state"] == "INFERENCE"
        assert slot_host.poc.loader.targets[slot_node].reason == "weighted"
        assert slot_host.poc.cycle.steps.done[("load", 2, slot_node)] == f"already serving {TINY}"
        assert miner.poc.cycle.steps.done[("load", 2, miner_node)] == f"loaded {TINY}"

