"""Epochs statuses: set_status only by Inference, governance override, sticky INVALID, reset at epoch switch."""

from __future__ import annotations

import pytest
from epochs_helpers import address_of

from dinfer.chain.contracts.epochs import EpochsClient, MemberStatus
from dinfer.errors import TxReverted
from support import events


async def test_set_status_only_by_inference(epochs: EpochsClient, actors, sender_for) -> None:  # type: ignore[no-untyped-def]
    member = address_of("s", 0)
    for who in (actors.owner, actors.host):
        with pytest.raises(TxReverted.named("NotInference")):
            await EpochsClient(epochs.contract, sender_for(who))._transact("set_status", member, 1)
    receipt = await epochs.set_inference(actors.host.address)
    assert events(epochs.contract, receipt, "InferenceContractSet") == [{"inference": actors.host.address}]
    inference = EpochsClient(epochs.contract, sender_for(actors.host))
    receipt = await inference._transact("set_status", member, MemberStatus.INACTIVE)
    assert events(epochs.contract, receipt, "StatusChanged") == [
        {"epoch": 1, "member": member, "status": MemberStatus.INACTIVE}
    ]
    assert await epochs.status_of(1, member) == MemberStatus.INACTIVE
    with pytest.raises(TxReverted.named("UnknownStatus")):
        await inference._transact("set_status", member, 3)
    with pytest.raises(TxReverted.named("NotOwner")):
        await inference.set_inference(actors.host2.address)
    with pytest.raises(TxReverted.named("ZeroAddress")):
        await epochs.set_inference("0x" + "00" * 20)


async def test_epoch_switch_resets_inactive_but_invalid_sticks(epochs: EpochsClient, actors, sender_for) -> None:  # type: ignore[no-untyped-def]
    down, cheat = address_of("s", 1), address_of("s", 2)
    await epochs.governance_set_status(down, MemberStatus.INACTIVE)
    await epochs.governance_set_status(cheat, MemberStatus.INVALID)
    assert await epochs.status_of(1, cheat) == MemberStatus.INVALID
    with pytest.raises(TxReverted.named("NotOwner")):
        await EpochsClient(epochs.contract, sender_for(actors.non_owner)).advance_epoch()
    receipt = await epochs.advance_epoch()
    assert events(epochs.contract, receipt, "EpochAdvanced") == [{"epoch": 2}]
    assert await epochs.current_epoch() == 2
    assert await epochs.status_of(2, down) == MemberStatus.ACTIVE
    assert await epochs.status_of(1, down) == MemberStatus.INACTIVE  # history is kept
    assert await epochs.status_of(2, cheat) == MemberStatus.INVALID
    assert await epochs.status_of(0, cheat) == MemberStatus.ACTIVE  # before it was caught
    receipt = await epochs.clear_invalid(cheat)
    assert events(epochs.contract, receipt, "InvalidCleared") == [{"member": cheat}]
    assert await epochs.status_of(2, cheat) == MemberStatus.ACTIVE
    with pytest.raises(TxReverted.named("NotInvalid")):
        await epochs.clear_invalid(cheat)


async def test_governance_refusals_and_ownership(epochs: EpochsClient, actors, sender_for) -> None:  # type: ignore[no-untyped-def]
    stranger = EpochsClient(epochs.contract, sender_for(actors.non_owner))
    with pytest.raises(TxReverted.named("NotOwner")):
        await stranger.governance_set_status(address_of("s", 3), MemberStatus.INACTIVE)
    with pytest.raises(TxReverted.named("NotOwner")):
        await stranger.clear_invalid(address_of("s", 3))
    with pytest.raises(TxReverted.named("UnknownStatus")):
        await epochs._transact("governance_set_status", [address_of("s", 3)], 7)
    receipt = await epochs._transact("transfer_ownership", actors.non_owner.address)
    assert events(epochs.contract, receipt, "OwnershipTransferred") == [
        {"previous_owner": actors.owner.address, "new_owner": actors.non_owner.address}
    ]
    await stranger.advance_epoch()
    with pytest.raises(TxReverted.named("NotOwner")):
        await epochs.advance_epoch()


async def test_status_history_survives_later_changes(epochs: EpochsClient) -> None:
    member = address_of("h", 0)
    await epochs.governance_set_status(member, MemberStatus.INACTIVE)  # epoch 1
    await epochs.advance_epoch()
    await epochs.advance_epoch()
    await epochs.governance_set_status(member, MemberStatus.INACTIVE)  # epoch 3
    await epochs.governance_set_status(member, MemberStatus.ACTIVE)
    await epochs.governance_set_status(member, MemberStatus.INVALID)
    await epochs.advance_epoch()
    await epochs.clear_invalid(member)
    await epochs.governance_set_status(member, MemberStatus.INACTIVE)  # epoch 4
    expected = [
        MemberStatus.ACTIVE,
        MemberStatus.INACTIVE,
        MemberStatus.ACTIVE,
        MemberStatus.ACTIVE,
        MemberStatus.INACTIVE,
        MemberStatus.ACTIVE,
    ]
    assert [await epochs.status_of(e, member) for e in range(6)] == expected
