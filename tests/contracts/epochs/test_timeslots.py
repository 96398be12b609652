"""Timeslots: allocate_genesis_nodes for governance groups, min_poc_slot_nodes with zero demand, POC_SLOT picks that
cover the measured demand × safety, the throughput views, and POC_SLOT weights preserved across a switch."""

from __future__ import annotations

import pytest
from epochs_helpers import SMOL, TINY, mine_to, next_poc_start, register_host_with_nodes, switch_height

from contracts.inference.inference_ledger import Ledger, make_ledger
from dinfer.chain.contracts.epochs import EpochsClient, model_key
from dinfer.chain.contracts.registry import HardwareNode, RegistryClient
from dinfer.errors import TxReverted
from support import events

ROOT = b"\x22" * 32


async def poc_slots(epochs: EpochsClient, epoch: int, model_id: str, hosts: list[str]) -> set[tuple[str, str]]:
    """(host, node_id) of the group's POC_SLOT nodes, checked against is_poc_slot."""
    picked = set()
    for host in hosts:
        for node in await epochs.get_ml_nodes(epoch, model_id, host):
            assert await epochs.is_poc_slot(epoch, model_id, host, node.node_id) is node.poc_slot
            if node.poc_slot:
                picked.add((host, node.node_id))
    return picked


async def test_allocate_genesis_nodes_splits_weights_and_keeps_min_nodes(  # type: ignore[no-untyped-def]
    epochs: EpochsClient, registry: RegistryClient, chain, actors, sender_for
) -> None:
    a, b, c = actors.host, actors.host2, chain.accounts[6]
    await register_host_with_nodes(registry, sender_for(a), [
        HardwareNode("a1", (SMOL,), "cpu", 10), HardwareNode("a2", (SMOL, TINY), "cpu", 20),
        HardwareNode("a3", (TINY,), "cpu", 30),
    ])
    await register_host_with_nodes(registry, sender_for(b), [HardwareNode("b1", (SMOL,), "cpu", 40)])
    await register_host_with_nodes(registry, sender_for(c), [HardwareNode("c1", (TINY,), "cpu", 50)])
    hosts = [a.address, b.address, c.address]
    smol, tiny = model_key(SMOL), model_key(TINY)
    await epochs.add_group(1, smol, hosts, [101, 50, 7])
    with pytest.raises(TxReverted.named("NotOwner")):
        await epochs.with_sender(sender_for(actors.non_owner)).allocate_genesis_nodes(1, SMOL)
    with pytest.raises(TxReverted.named("NoGroup")):
        await epochs.allocate_genesis_nodes(1, TINY)
    with pytest.raises(TxReverted.named("EpochInPast")):
        await epochs.allocate_genesis_nodes(0, SMOL)

    receipt = await epochs.allocate_genesis_nodes(1, SMOL)
    # a: 101 over its two SmolLM nodes (the remainder to the first); b: one node; c serves no SmolLM node
    got = {h: [(n.node_id, n.throughput, n.poc_weight, n.pre_poc_slot) for n in await epochs.get_ml_nodes(1, SMOL, h)]
           for h in hosts}
    assert got == {a.address: [("a1", 10, 51, True), ("a2", 20, 50, True)], b.address: [("b1", 40, 50, True)],
                   c.address: []}
    [picked] = await poc_slots(epochs, 1, SMOL, hosts)  # min_poc_slot_nodes = 1 and no demand: one node
    throughput = {"a1": 10, "a2": 20, "b1": 40}[picked[1]]
    assert events(epochs.contract, receipt, "TimeslotsAllocated") == [
        {"epoch": 1, "model_key": smol, "demand_tps": 0, "expected_throughput": throughput, "poc_slot_nodes": 1}
    ]
    info = await epochs.group_info(1, SMOL)
    assert (info.size, info.total_weight, info.total_throughput, info.expected_throughput, info.real_throughput) == (
        3, 158, 70, throughput, 0
    )
    with pytest.raises(TxReverted.named("AlreadyAllocated")):
        await epochs.allocate_genesis_nodes(1, SMOL)

    # more POC_SLOT nodes wanted than there are: every weighted node keeps serving
    await registry.propose_param("min_poc_slot_nodes", 5)
    await epochs.add_group(1, tiny, [a.address, c.address], [10, 4])
    receipt = await epochs.allocate_genesis_nodes(1, TINY)
    assert await poc_slots(epochs, 1, TINY, hosts) == {(a.address, "a2"), (a.address, "a3"), (c.address, "c1")}
    assert [(e["poc_slot_nodes"], e["expected_throughput"]) for e in events(epochs.contract, receipt,
                                                                           "TimeslotsAllocated")] == [(3, 100)]
    assert [n.poc_weight for n in await epochs.get_ml_nodes(1, TINY, a.address)] == [5, 5]

    # min_poc_slot_nodes = 0 with zero demand: nothing keeps serving (a future epoch's group)
    await registry.propose_param("min_poc_slot_nodes", 0)
    await epochs.add_group(2, smol, [b.address], [9])
    await epochs.allocate_genesis_nodes(2, SMOL)
    assert await poc_slots(epochs, 2, SMOL, hosts) == set()
    assert (await epochs.group_info(2, SMOL)).expected_throughput == 0
    # min = 2: exactly two of the three SmolLM nodes
    await registry.propose_param("min_poc_slot_nodes", 2)
    await epochs.add_group(3, smol, hosts, [101, 50, 7])
    await epochs.allocate_genesis_nodes(3, SMOL)
    assert len(await poc_slots(epochs, 3, SMOL, hosts)) == 2


@pytest.fixture
async def ledger(chain, registry, genesis, actors, sender_for) -> Ledger:  # type: ignore[no-untyped-def]
    """Epochs + PoC + Inference; epoch 1's SmolLM group is four hosts weighted 40/30/20/10."""
    return await make_ledger(chain, registry, genesis, actors, sender_for)


NODE_TPS = 10
ELAPSED = 1_000  # seconds from epoch 1's start to the switch
TOKENS = 3 * 10_000


async def test_demand_picks_enough_nodes_and_poc_slot_keeps_weight(ledger: Ledger) -> None:
    epochs, registry, chain, m = ledger.epochs, ledger.registry, ledger.chain, ledger.group
    for member in ledger.members:  # two SmolLM nodes of 10 tokens/s each per member
        nodes = [HardwareNode(f"n{j}", (SMOL,), "cpu", NODE_TPS) for j in range(2)]
        await RegistryClient(registry.contract, ledger.sender_for(member)).submit_hardware_diff(nodes, [])
    await epochs.allocate_genesis_nodes(1, SMOL)
    assert [[n.poc_weight for n in await epochs.get_ml_nodes(1, SMOL, p)] for p in m] == [
        [20, 20], [15, 15], [10, 10], [5, 5]
    ]
    [(slot_host, slot_node)] = await poc_slots(epochs, 1, SMOL, m)
    slot_weight = {m[0]: 20, m[1]: 15, m[2]: 10, m[3]: 5}[slot_host]
    assert (await epochs.group_info(1, SMOL)).expected_throughput == NODE_TPS

    # demand: three finished inferences of 10,000 tokens in epoch 1
    for _ in range(3):
        rec = await ledger.record(prompt=10, max_tokens=9_990)
        await ledger.start(rec)
        await ledger.finish(rec, prompt=10, completion=9_990)
    assert await ledger.inference.model_tokens(1, ledger.model) == TOKENS

    # PoC: every node but the POC_SLOT one commits a batch (count = 1 + member index + node index)
    start = await next_poc_start(epochs, registry, chain)
    for i, member in enumerate(ledger.members):
        for j in range(2):
            if (member.address, f"n{j}") != (slot_host, slot_node):
                await epochs.with_sender(ledger.sender_for(member)).submit_poc_batch(2, f"n{j}", SMOL, 1 + i + j, ROOT)
    assert await epochs.calculate_node_weight(start, slot_host, slot_node) == 0

    # the switch lands exactly ELAPSED seconds after epoch 1 started: real = 30,000 // 1,000 = 30 tokens/s,
    # demand = 30 × 15,000 / 10,000 = 45 → five 10-tokens/s nodes (50) cover it
    epoch_start = await chain.w3.eth.get_block(await epochs.epoch_start_block(1))
    height = await switch_height(epochs, registry, chain)
    await mine_to(chain, height - 1)
    await chain.set_next_timestamp(epoch_start["timestamp"] + ELAPSED)  # mines block height - 1
    receipt = await epochs.switch_epoch()
    assert receipt["blockNumber"] == height
    assert (await chain.w3.eth.get_block(height))["timestamp"] == epoch_start["timestamp"] + ELAPSED
    assert await registry.param("poc_slot_safety_bps") == 15_000
    allocated = {e["model_key"]: e for e in events(epochs.contract, receipt, "TimeslotsAllocated")}
    assert allocated[ledger.model] == {
        "epoch": 2, "model_key": ledger.model, "demand_tps": 45, "expected_throughput": 50, "poc_slot_nodes": 5
    }
    assert allocated[model_key(TINY)]["poc_slot_nodes"] == 0
    assert len(await poc_slots(epochs, 2, SMOL, m)) == 5

    old, new = await epochs.group_info(1, SMOL), await epochs.group_info(2, SMOL)
    assert (old.expected_throughput, old.real_throughput) == (NODE_TPS, 30)
    assert (new.size, new.total_throughput, new.expected_throughput, new.real_throughput) == (4, 80, 50, 0)
    assert await epochs.measure_model_throughput_for_blocks(1, SMOL) == 30
    assert await epochs.measure_model_throughput_for_blocks(2, SMOL) == 0
    assert await epochs.validate_throughput_performance(1, SMOL) is False  # 10 < 45
    assert await epochs.validate_throughput_performance(2, SMOL) is True  # 50 ≥ 0 so far

    # the epoch-1 POC_SLOT node kept serving and kept its weight without a batch
    weights = {n.node_id: n.poc_weight for n in await epochs.get_ml_nodes(2, SMOL, slot_host)}
    assert weights[slot_node] == slot_weight
    i = m.index(slot_host)
    other = "n1" if slot_node == "n0" else "n0"
    assert weights[other] == (1 + i + int(other[1])) * 1000
    assert await epochs.participant_weight(2, slot_host) == slot_weight + weights[other]
    for j, p in enumerate(m):
        if p != slot_host:
            assert await epochs.participant_weight(2, p) == ((1 + j) + (2 + j)) * 1000
