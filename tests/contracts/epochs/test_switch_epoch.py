"""PoC batches → switch_epoch: groups with hand-computed weights, ml_nodes, snapshots, settlement, withdrawals."""

from __future__ import annotations

import dataclasses

import pytest
from epochs_helpers import SMOL, TINY, mine_to, next_block, register_host_with_nodes

from dinfer.chain.contracts.epochs import EpochsClient, model_key
from dinfer.chain.contracts.registry import HardwareNode, RegistryClient
from dinfer.errors import TxReverted
from support import events

ROOT = b"\x11" * 32


@pytest.fixture
async def hosts(chain, registry, actors, sender_for):  # type: ignore[no-untyped-def]
    """Three hosts, each with node "a" (SmolLM) and node "b" (tiny model)."""
    keys = [actors.host, actors.host2, chain.accounts[6]]
    for i, k in enumerate(keys):
        nodes = [HardwareNode("a", (SMOL,), "cpu", 10 + i), HardwareNode("b", (TINY,), "cpu", 100 + i)]
        await register_host_with_nodes(registry, sender_for(k), nodes)
    return keys


async def cycle_start(epochs: EpochsClient, registry: RegistryClient, chain) -> int:  # type: ignore[no-untyped-def]
    genesis, length = await epochs.genesis_block(), await registry.param("epoch_length_blocks")
    h = await next_block(chain)
    start = genesis + length if h <= genesis + length else genesis + ((h - genesis) // length + 1) * length
    await mine_to(chain, start)
    return start


async def test_cycle_forms_groups_and_settles(epochs, registry, chain, hosts, sender_for, actors) -> None:  # type: ignore[no-untyped-def]
    as_ = [epochs.with_sender(sender_for(k)) for k in hosts]
    start = await cycle_start(epochs, registry, chain)
    counts = {(0, "a"): 5, (0, "b"): 7, (1, "a"): 3, (1, "b"): 2, (2, "a"): 4, (2, "b"): 1}
    for (i, node), n in counts.items():
        await as_[i].submit_poc_batch(2, node, SMOL if node == "a" else TINY, n, ROOT)
    with pytest.raises(TxReverted.named("DuplicateBatch")):
        await as_[0].submit_poc_batch(2, "a", SMOL, 1, ROOT)
    assert len(await epochs.get_poc_batches(start)) == 6
    assert [b.nonce_count for b in await epochs.get_poc_batches_for_model(start, SMOL)] == [5, 3, 4]
    assert await epochs.calculate_node_weight(start, hosts[0].address, "a") == 5 * 1000
    g, v = await registry.param("poc_generate_blocks"), await registry.param("poc_validate_blocks")
    await mine_to(chain, start + g)
    # host 1 fails host 0's node "a"; host 2 passes host 1's node "b" once and host 0 fails it once (tie: valid)
    await as_[1].submit_poc_validation(2, hosts[0].address, "a", 3, 4)
    await as_[2].submit_poc_validation(2, hosts[1].address, "b", 4, 4)
    await as_[0].submit_poc_validation(2, hosts[1].address, "b", 0, 4)
    assert await epochs.calculate_node_weight(start, hosts[0].address, "a") == 0
    assert await epochs.calculate_node_weight(start, hosts[1].address, "b") == 2 * 100
    assert await epochs.calculate_model_power(start, SMOL) == (3 + 4) * 1000
    with pytest.raises(TxReverted.named("WrongStage")):
        await epochs.switch_epoch()
    await mine_to(chain, start + g + v)
    receipt = await as_[2].switch_epoch()
    print(f"switch_epoch gas, 3 hosts x 2 models: {receipt['gasUsed']}")
    with pytest.raises(TxReverted.named("AlreadySwitched")):
        await epochs.switch_epoch()
    assert await epochs.current_epoch() == 2 and await epochs.switched_cycle() == start
    smol, tiny = model_key(SMOL), model_key(TINY)
    group = await epochs.get_group(2, smol)
    assert group.members == (hosts[1].address, hosts[2].address) and group.weights == (3000, 4000)
    tiny_group = await epochs.get_group(2, tiny)
    assert tiny_group.weights == (700, 200, 100)
    assert [(await epochs.contract.functions.member_at(2, tiny, i).call())[1] for i in range(3)] == [700, 900, 1000]
    info = await epochs.group_info(2, SMOL)
    assert (info.size, info.total_weight, info.total_throughput) == (2, 7000, 11 + 12)
    nodes = await epochs.get_ml_nodes(2, TINY, hosts[0].address)
    assert [(n.node_id, n.throughput, n.poc_weight, n.pre_poc_slot) for n in nodes] == [("b", 100, 700, True)]
    assert await epochs.participants(2) == [h.address for h in hosts]
    assert await epochs.participant_weight(2, hosts[1].address) == 3000 + 200
    assert (await epochs.participant_coverage(2, hosts[0].address)).full is False
    assert (await epochs.participant_coverage(2, hosts[1].address)).full is True
    assert await epochs.epoch_models(2) == [SMOL, TINY]
    # min_poc_slot_nodes = 1: exactly one node per model keeps serving during epoch 2's PoC
    formed = events(epochs.contract, receipt, "TimeslotsAllocated")
    assert [e["poc_slot_nodes"] for e in formed] == [1, 1]

    # governance changes the price mid-epoch: epoch 2 keeps its snapshot
    model = await registry.get_governance_model(SMOL)
    await registry.update_model(dataclasses.replace(model, price_per_token=model.price_per_token * 3))
    assert await epochs.snapshot_price(2, smol) == model.price_per_token
    assert (await epochs.get_epoch_model(2, SMOL)).price_per_token == model.price_per_token

    # settlement of epoch 2 at the next switch: nobody mines, POC_SLOT nodes keep their weight
    reward = await registry.param("epoch_reward_wei")
    await epochs.fund_rewards(reward * 3)
    start2 = await cycle_start(epochs, registry, chain)
    await mine_to(chain, start2 + g + v)
    receipt = await epochs.switch_epoch()
    settled = {e["participant"]: e for e in events(epochs.contract, receipt, "RewardSettled")}
    total = 7000 + 1000
    bonus = await registry.param("coverage_bonus_bps")
    expected = {
        hosts[0].address: reward * 700 // total,
        hosts[1].address: reward * 3200 // total * (10_000 + bonus) // 10_000,
        hosts[2].address: reward * 4100 // total * (10_000 + bonus) // 10_000,
    }
    assert {p: e["amount"] for p, e in settled.items()} == expected
    assert await epochs.reward_pool() == reward * 3 - sum(expected.values())
    preserved = sum([await epochs.participant_weight(3, h.address) for h in hosts])
    assert 0 < preserved < total  # only the POC_SLOT nodes kept weight
    before = await chain.w3.eth.get_balance(hosts[1].address)
    r = await as_[1].withdraw_rewards()
    fee = r["gasUsed"] * r["effectiveGasPrice"]
    assert await chain.w3.eth.get_balance(hosts[1].address) == before + expected[hosts[1].address] - fee
    with pytest.raises(TxReverted.named("NothingToWithdraw")):
        await as_[1].withdraw_rewards()


async def test_poc_batch_reverts(epochs, registry, chain, hosts, sender_for, actors) -> None:  # type: ignore[no-untyped-def]
    host = epochs.with_sender(sender_for(hosts[0]))
    with pytest.raises(TxReverted.named("WrongStage")):
        await host.submit_poc_batch(2, "a", SMOL, 1, ROOT)
    start = await cycle_start(epochs, registry, chain)
    with pytest.raises(TxReverted.named("WrongEpoch")):
        await host.submit_poc_batch(1, "a", SMOL, 1, ROOT)
    with pytest.raises(TxReverted.named("NotHost")):
        await epochs.with_sender(sender_for(actors.non_owner)).submit_poc_batch(2, "a", SMOL, 1, ROOT)
    with pytest.raises(TxReverted.named("UnknownNode")):
        await host.submit_poc_batch(2, "zz", SMOL, 1, ROOT)
    with pytest.raises(TxReverted.named("ModelNotServed")):
        await host.submit_poc_batch(2, "a", TINY, 1, ROOT)
    with pytest.raises(TxReverted.named("ZeroCount")):
        await host.submit_poc_batch(2, "a", SMOL, 0, ROOT)
    await host.submit_poc_batch(2, "a", SMOL, 9, ROOT)
    other = epochs.with_sender(sender_for(hosts[1]))
    with pytest.raises(TxReverted.named("WrongStage")):
        await other.submit_poc_validation(2, hosts[0].address, "a", 1, 1)
    await mine_to(chain, start + await registry.param("poc_generate_blocks"))
    with pytest.raises(TxReverted.named("SelfValidation")):
        await host.submit_poc_validation(2, hosts[0].address, "a", 1, 1)
    with pytest.raises(TxReverted.named("UnknownBatch")):
        await other.submit_poc_validation(2, hosts[0].address, "b", 1, 1)
    with pytest.raises(TxReverted.named("BadSample")):
        await other.submit_poc_validation(2, hosts[0].address, "a", 2, 1)
    with pytest.raises(TxReverted.named("BadSample")):
        await other.submit_poc_validation(2, hosts[0].address, "a", 0, 0)
    await other.submit_poc_validation(2, hosts[0].address, "a", 1, 1)
    with pytest.raises(TxReverted.named("DuplicateValidation")):
        await other.submit_poc_validation(2, hosts[0].address, "a", 1, 1)
    [batch] = await epochs.get_poc_batches_for_node(start, hosts[0].address, "a")
    assert (batch.nonce_count, batch.passes, batch.fails, batch.valid) == (9, 1, 0, True)
