"""Registry ownership (two-step), slashers and treasury settings."""

from __future__ import annotations

import pytest

from dinfer.chain.contracts.registry import RegistryClient
from dinfer.errors import TxReverted
from support import events


async def test_two_step_transfer(registry: RegistryClient, actors, sender_for) -> None:
    receipt = await registry.transfer_ownership(actors.non_owner.address)
    started = events(registry.contract, receipt, "OwnershipTransferStarted")
    assert started[0]["pending_owner"] == actors.non_owner.address
    assert await registry.owner() == actors.owner.address
    with pytest.raises(TxReverted.named("NotPendingOwner")):
        await registry.with_sender(sender_for(actors.host)).accept_ownership()
    receipt = await registry.with_sender(sender_for(actors.non_owner)).accept_ownership()
    assert events(registry.contract, receipt, "OwnershipTransferred")[0]["new_owner"] == actors.non_owner.address
    assert await registry.owner() == actors.non_owner.address
    with pytest.raises(TxReverted.named("NotOwner")):
        await registry.propose_param("expiration_blocks", 30)


async def test_transfer_to_zero_refused(registry: RegistryClient) -> None:
    with pytest.raises(TxReverted.named("ZeroAddress")):
        await registry.transfer_ownership("0x" + "00" * 20)


async def test_set_slasher_and_treasury_owner_only(registry: RegistryClient, actors, sender_for) -> None:
    outsider = registry.with_sender(sender_for(actors.non_owner))
    with pytest.raises(TxReverted.named("NotOwner")):
        await outsider.set_slasher(actors.non_owner.address)
    with pytest.raises(TxReverted.named("NotOwner")):
        await outsider.set_treasury(actors.non_owner.address)
    receipt = await registry.set_slasher(actors.host2.address, True)
    assert events(registry.contract, receipt, "SlasherSet") == [{"slasher": actors.host2.address, "allowed": True}]
    assert await registry._call("slashers", actors.host2.address) is True
    receipt = await registry.set_treasury(actors.client.address)
    assert events(registry.contract, receipt, "TreasurySet") == [{"treasury": actors.client.address}]
    assert await registry._call("treasury") == actors.client.address
