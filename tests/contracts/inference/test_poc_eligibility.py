"""Executor eligibility during PoC (issue #14 part 2): inside ``Epochs.poc_window`` only ACTIVE members with a
POC_SLOT node for the model may execute; the contract replays the PoC order (``walk(poc=True)``), accepts either
order for ``POC_EDGE_BLOCKS`` after each edge of the window, and nothing changes outside it."""

from __future__ import annotations

import pytest
from inference_ledger import DEFAULT_MODEL, Ledger

from dinfer.chain.contracts.epochs import MemberStatus, PoCWindow, WalkCode
from dinfer.chain.contracts.inference import InferenceStatus, ReassignRecord
from dinfer.chain.contracts.registry import HardwareNode, RegistryClient
from dinfer.selection import POC_EDGE_BLOCKS, eligible_flags, next_active_after
from support import events

SLOT_NODES = 2  # min_poc_slot_nodes: two of the four members keep a node serving during PoC


def reasons(ledger: Ledger, receipt) -> list[str]:  # type: ignore[no-untyped-def]
    return [e["reason"] for e in events(ledger.inference.contract, receipt, "RecordRejected")]


async def next_block(ledger: Ledger) -> int:
    return int(await ledger.chain.w3.eth.block_number) + 1


async def mine_to(ledger: Ledger, height: int) -> None:
    gap = height - await next_block(ledger)
    assert gap >= 0, f"already past block {height}"
    if gap:
        await ledger.chain.mine(gap)


@pytest.fixture
async def allocated(ledger: Ledger) -> Ledger:
    """Every member declares one ML node serving the model; governance allocates the genesis group's nodes."""
    for member in ledger.members:
        host = RegistryClient(ledger.registry.contract, ledger.sender_for(member))
        await host.submit_hardware_diff([HardwareNode(f"node-{member.address[2:8]}", (DEFAULT_MODEL,), "cpu", 10)], [])
    await ledger.registry.propose_param("min_poc_slot_nodes", SLOT_NODES)
    await ledger.epochs.allocate_genesis_nodes(1, DEFAULT_MODEL)
    return ledger


async def slots(ledger: Ledger) -> list[bool]:
    return [await ledger.epochs.poc_eligible(1, ledger.model, m) for m in ledger.group]


async def test_poc_window_is_fixed_at_each_epoch_start(ledger: Ledger) -> None:
    length = await ledger.registry.param("epoch_length_blocks")
    stages = await ledger.registry.param("poc_generate_blocks") + await ledger.registry.param("poc_validate_blocks")
    genesis = await ledger.epochs.genesis_block()
    window = await ledger.epochs.poc_window(1)
    assert window == PoCWindow(genesis + length, genesis + length + stages)
    assert not window.contains(genesis + length - 1) and window.contains(genesis + length)
    assert not window.contains(genesis + length + stages)
    receipt = await ledger.epochs.advance_epoch()  # governance switch mid-epoch: the next cycle's PoC ends epoch 2
    assert await ledger.epochs.poc_window(2) == PoCWindow(genesis + length, genesis + length + stages)
    assert receipt["blockNumber"] < genesis + length
    await mine_to(ledger, genesis + length + 3)
    await ledger.epochs.advance_epoch()
    assert await ledger.epochs.poc_window(3) == PoCWindow(genesis + 2 * length, genesis + 2 * length + stages)
    assert await ledger.epochs.poc_window(4) == PoCWindow(0, 0)  # not started yet


async def test_unallocated_group_is_not_restricted(ledger: Ledger) -> None:
    """A governance group without ML-node allocation has no POC_SLOT information: the PoC order is the normal one."""
    assert await slots(ledger) == [True] * 4
    rec = await ledger.record()
    walk = await ledger.epochs.walk(1, ledger.model, rec.inference_id, None, ledger.max_draws, poc=True)
    assert (walk.member, walk.skipped) == (rec.executor, rec.skipped)
    window = await ledger.epochs.poc_window(1)
    await mine_to(ledger, window.start + POC_EDGE_BLOCKS + 1)
    rec = await ledger.record()
    assert reasons(ledger, await ledger.start(rec)) == []


async def test_walk_skips_members_without_poc_slot(allocated: Ledger) -> None:
    ledger = allocated
    poc_slot = await slots(ledger)
    assert sum(poc_slot) == SLOT_NODES
    active = [True] * 4
    rec = await ledger.record(active=eligible_flags(active, poc_slot, True),
                              where=lambda executor, skipped: len(skipped) > 0)
    walk = await ledger.epochs.walk(1, ledger.model, rec.inference_id, None, ledger.max_draws, poc=True)
    assert (walk.code, walk.member, walk.skipped) == (WalkCode.OK, rec.executor, rec.skipped)
    assert all(not poc_slot[ledger.group.index(m)] for m in rec.skipped)  # ACTIVE, but no POC_SLOT node
    normal = await ledger.epochs.walk(1, ledger.model, rec.inference_id, None, ledger.max_draws, poc=False)
    assert normal.member == rec.skipped[0] and normal.skipped == ()
    # no member with a POC_SLOT node is ACTIVE: the PoC order has nobody
    for m in ledger.group:
        if poc_slot[ledger.group.index(m)]:
            await ledger.epochs.governance_set_status(m, MemberStatus.INACTIVE)
    walk = await ledger.epochs.walk(1, ledger.model, rec.inference_id, None, ledger.max_draws, poc=True)
    assert walk.code == WalkCode.NO_ACTIVE


async def test_starts_follow_the_poc_order_inside_the_window(allocated: Ledger) -> None:
    ledger = allocated
    poc_slot = await slots(ledger)
    active = [True] * 4
    poc = eligible_flags(active, poc_slot, True)

    def differs(executor: str | None, skipped: list[str]) -> bool:
        return not poc_slot[ledger.group.index(executor)]  # the normal order's executor has no POC_SLOT node

    window = await ledger.epochs.poc_window(1)
    # before the window: the normal order; a PoC-order record names an ACTIVE member in `skipped`
    normal_rec = await ledger.record(where=differs)
    poc_rec = await ledger.record(active=poc, where=lambda e, s: len(s) > 0)
    assert reasons(ledger, await ledger.start(normal_rec, poc_rec)) == ["SkippedExecutorActive"]

    # the first POC_EDGE_BLOCKS of the window: both orders (a TA may have decided just before it began)
    await mine_to(ledger, window.start)
    normal_rec = await ledger.record(where=differs)
    poc_rec = await ledger.record(active=poc, where=lambda e, s: len(s) > 0)
    receipt = await ledger.start(normal_rec, poc_rec)
    assert reasons(ledger, receipt) == [] and len(events(ledger.inference.contract, receipt, "InferenceStarted")) == 2

    # inside the window, past its edge: only the PoC order
    await mine_to(ledger, window.start + POC_EDGE_BLOCKS)
    normal_rec = await ledger.record(where=differs)
    poc_rec = await ledger.record(active=poc, where=lambda e, s: len(s) > 0)
    assert reasons(ledger, await ledger.start(normal_rec, poc_rec)) == ["WrongExecutor"]
    info = await ledger.inference.get_inference(poc_rec.inference_id)
    assert info.status == InferenceStatus.STARTED and list(info.skipped) == list(poc_rec.skipped)
    assert (await ledger.inference.get_inference(normal_rec.inference_id)).status == InferenceStatus.NONE

    # a reassign inside the window goes to the next member with a POC_SLOT node
    failed = poc_rec.executor
    nxt = next_active_after(poc_rec.inference_id, ledger.weights, poc, ledger.group.index(failed), ledger.max_draws)
    if nxt is not None:
        receipt = await ledger.as_(ledger.ta).reassign([ReassignRecord(poc_rec.inference_id, failed,
                                                                       ledger.group[nxt])])
        assert reasons(ledger, receipt) == []
        assert (await ledger.inference.get_inference(poc_rec.inference_id)).executor == ledger.group[nxt]

    # after the window (past its trailing edge): the normal order again
    await mine_to(ledger, window.end + POC_EDGE_BLOCKS)
    normal_rec = await ledger.record(where=differs)
    poc_rec = await ledger.record(active=poc, where=lambda e, s: len(s) > 0)
    assert reasons(ledger, await ledger.start(normal_rec, poc_rec)) == ["SkippedExecutorActive"]
