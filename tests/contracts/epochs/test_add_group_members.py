"""Epochs.add_group_members: prefix sums, paging, chunked appends, events, exact reverts."""

from __future__ import annotations

import pytest
from epochs_helpers import address_of

from dinfer.chain.contracts.epochs import EpochsClient, model_key
from dinfer.errors import TxReverted
from support import events

MODEL = model_key("m")


async def test_add_and_read_group(epochs: EpochsClient) -> None:
    members = [address_of("g", i) for i in range(5)]
    weights = [3, 0, 5, 1, 0]
    (receipt,) = await epochs.add_group(1, MODEL, members, weights)
    assert events(epochs.contract, receipt, "GroupMembersAdded") == [
        {"epoch": 1, "model_key": MODEL, "added": 5, "size": 5, "total_weight": 9}
    ]
    assert await epochs.group_size(1, MODEL) == 5
    assert await epochs.total_weight(1, MODEL) == 9
    assert await epochs.contract.functions.member_at(1, MODEL, 2).call() == [members[2], 8]
    assert await epochs.position_of(1, MODEL, members[3]) == 3
    assert await epochs.position_of(1, MODEL, address_of("x", 0)) is None
    group = await epochs.get_group(1, MODEL)
    assert group.members == tuple(members) and group.weights == tuple(weights)
    with pytest.raises(TxReverted.named("IndexOutOfRange")):
        await epochs._call("member_at", 1, MODEL, 5)
    # groups are per (epoch, model): other keys are empty
    assert await epochs.group_size(2, MODEL) == 0 and await epochs.total_weight(1, model_key("other")) == 0


async def test_chunked_append_continues_prefix_sums(epochs: EpochsClient) -> None:
    members = [address_of("big", i) for i in range(300)]
    receipts = await epochs.add_group(1, MODEL, members, [2] * 300)
    assert len(receipts) == 2
    assert await epochs.total_weight(1, MODEL) == 600
    group = await epochs.get_group(1, MODEL)
    assert group.members == tuple(members) and set(group.weights) == {2}


async def test_refusals(epochs: EpochsClient, actors, sender_for) -> None:  # type: ignore[no-untyped-def]
    a, b = address_of("r", 0), address_of("r", 1)
    stranger = EpochsClient(epochs.contract, sender_for(actors.non_owner))
    with pytest.raises(TxReverted.named("NotOwner")):
        await stranger.add_group(1, MODEL, [a], [1])
    with pytest.raises(TxReverted.named("LengthMismatch")):
        await epochs._transact("add_group_members", 1, MODEL, [a, b], [1])
    with pytest.raises(TxReverted.named("EmptyMembers")):
        await epochs._transact("add_group_members", 1, MODEL, [], [])
    with pytest.raises(TxReverted.named("ZeroAddress")):
        await epochs.add_group(1, MODEL, ["0x" + "00" * 20], [1])
    with pytest.raises(TxReverted.named("DuplicateMember")):
        await epochs.add_group(1, MODEL, [a, a], [1, 1])
    with pytest.raises(TxReverted.named("WeightOverflow")):
        await epochs.add_group(1, MODEL, [a, b], [2**95, 2**95])
    await epochs.add_group(1, MODEL, [a], [1])
    with pytest.raises(TxReverted.named("DuplicateMember")):
        await epochs.add_group(1, MODEL, [a], [1])
    await epochs.advance_epoch()
    with pytest.raises(TxReverted.named("EpochInPast")):
        await epochs.add_group(1, MODEL, [b], [1])
    assert await epochs.group_size(1, MODEL) == 1


async def test_client_checks_lengths_before_sending(epochs: EpochsClient) -> None:
    with pytest.raises(ValueError, match="differ in length"):
        await epochs.add_group(1, MODEL, [address_of("l", 0)], [1, 2])
