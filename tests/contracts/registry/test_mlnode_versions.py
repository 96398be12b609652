"""Registry ML-node version plan: schedule, read-through flip at the height, cancel, activate."""

from __future__ import annotations

import pytest

from dinfer.chain.contracts.registry import RegistryClient
from dinfer.errors import TxReverted
from support import events


async def test_initial_version_from_genesis(registry: RegistryClient, genesis) -> None:
    assert await registry.current_mlnode_version() == genesis.mlnode_version
    assert await registry.mlnode_upgrade_plan() is None


async def test_flips_at_height_without_a_keeper(registry: RegistryClient, chain) -> None:
    height = await chain.w3.eth.block_number + 5
    receipt = await registry.schedule_mlnode_upgrade("v0.3.9", height)
    assert events(registry.contract, receipt, "MLNodeUpgradeScheduled") == [
        {"target_version": "v0.3.9", "upgrade_height": height}
    ]
    assert await registry.mlnode_upgrade_plan() == ("v0.3.9", height)
    # eth-tester mines one block per tx; views run against the latest block
    while await chain.w3.eth.block_number < height - 1:
        await chain.mine(1)
    assert await registry.current_mlnode_version() == "v0.1.0"
    await chain.mine(1)
    assert await registry.current_mlnode_version() == "v0.3.9"
    assert await registry.mlnode_upgrade_plan() is None
    receipt = await registry.activate_mlnode_upgrade()
    assert events(registry.contract, receipt, "MLNodeVersionActivated") == [{"version": "v0.3.9", "height": height}]
    with pytest.raises(TxReverted.named("NoActivatablePlan")):
        await registry.activate_mlnode_upgrade()


async def test_scheduling_next_plan_materialises_previous(registry: RegistryClient, chain) -> None:
    h1 = await chain.w3.eth.block_number + 2
    await registry.schedule_mlnode_upgrade("v0.3.9", h1)
    await chain.mine(3)
    receipt = await registry.schedule_mlnode_upgrade("v0.3.10", await chain.w3.eth.block_number + 10)
    assert events(registry.contract, receipt, "MLNodeVersionActivated")[0]["version"] == "v0.3.9"
    assert await registry.current_mlnode_version() == "v0.3.9"


async def test_cancel_before_height(registry: RegistryClient, chain) -> None:
    with pytest.raises(TxReverted.named("NoUpgradePlanned")):
        await registry.cancel_mlnode_upgrade()
    height = await chain.w3.eth.block_number + 10
    await registry.schedule_mlnode_upgrade("v0.3.9", height)
    receipt = await registry.cancel_mlnode_upgrade()
    assert events(registry.contract, receipt, "MLNodeUpgradeCancelled")[0]["target_version"] == "v0.3.9"
    await chain.mine(12)
    assert await registry.current_mlnode_version() == "v0.1.0"


async def test_cancel_after_height_refused(registry: RegistryClient, chain) -> None:
    await registry.schedule_mlnode_upgrade("v0.3.9", await chain.w3.eth.block_number + 2)
    await chain.mine(3)
    with pytest.raises(TxReverted.named("UpgradeAlreadyActive")):
        await registry.cancel_mlnode_upgrade()
    assert await registry.current_mlnode_version() == "v0.3.9"


async def test_bad_plans(registry: RegistryClient, chain, actors, sender_for) -> None:
    now = await chain.w3.eth.block_number
    with pytest.raises(TxReverted.named("UpgradeHeightInPast")):
        await registry.schedule_mlnode_upgrade("v0.3.9", now)
    with pytest.raises(TxReverted.named("EmptyVersion")):
        await registry.schedule_mlnode_upgrade("", now + 10)
    with pytest.raises(TxReverted.named("NotOwner")):
        await registry.with_sender(sender_for(actors.non_owner)).schedule_mlnode_upgrade("v9", now + 10)
    assert await registry.mlnode_upgrade_plan() is None
