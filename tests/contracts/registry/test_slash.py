"""Registry.slash: only authorised dinfer contracts; takes bonded first, then unbonding; sweep to treasury."""

from __future__ import annotations

import pytest

from dinfer.chain.contracts.registry import RegistryClient
from dinfer.errors import TxReverted
from support import events

ETH = 10**18


@pytest.fixture
async def hosted(registry: RegistryClient, actors, sender_for) -> RegistryClient:
    await registry.with_sender(sender_for(actors.host)).register_host("http://h", "{}", 10 * ETH)
    return registry


async def test_non_slasher_refused(hosted: RegistryClient, actors, sender_for) -> None:
    for who in (actors.owner, actors.non_owner, actors.host):
        with pytest.raises(TxReverted.named("NotSlasher")):
            await hosted.with_sender(sender_for(who))._transact("slash", actors.host.address, 1000)
    assert await hosted.collateral_of(actors.host.address) == 10 * ETH


async def test_slash_by_authorised_contract_account(hosted: RegistryClient, actors, sender_for) -> None:
    await hosted.set_slasher(actors.host2.address, True)
    slasher = hosted.with_sender(sender_for(actors.host2))
    receipt = await slasher._transact("slash", actors.host.address, 1000)
    assert events(hosted.contract, receipt, "HostSlashed") == [
        {"host": actors.host.address, "slasher": actors.host2.address, "fraction_bps": 1000, "amount": ETH}
    ]
    assert await hosted.collateral_of(actors.host.address) == 9 * ETH
    assert await hosted.slashed_balance() == ETH
    with pytest.raises(TxReverted.named("FractionAbove100Percent")):
        await slasher._transact("slash", actors.host.address, 10_001)
    with pytest.raises(TxReverted.named("UnknownHost")):
        await slasher._transact("slash", actors.non_owner.address, 100)
    await hosted.set_slasher(actors.host2.address, False)
    with pytest.raises(TxReverted.named("NotSlasher")):
        await slasher._transact("slash", actors.host.address, 1000)


async def test_slash_reaches_unbonding_collateral(hosted: RegistryClient, actors, sender_for) -> None:
    await hosted.set_slasher(actors.host2.address, True)
    await hosted.with_sender(sender_for(actors.host)).request_unbond(8 * ETH)
    await hosted.with_sender(sender_for(actors.host2))._transact("slash", actors.host.address, 5000)
    host = await hosted.get_host(actors.host.address)
    assert (host.collateral, host.unbonding) == (0, 5 * ETH)  # 5 ETH slashed: 2 bonded + 3 unbonding
    assert not await hosted.is_active_host(actors.host.address)


async def test_sweep_to_treasury(hosted: RegistryClient, actors, sender_for, chain) -> None:
    with pytest.raises(TxReverted.named("NothingToWithdraw")):
        await hosted.sweep_slashed()
    await hosted.set_slasher(actors.host2.address, True)
    await hosted.with_sender(sender_for(actors.host2))._transact("slash", actors.host.address, 2000)
    before = await chain.w3.eth.get_balance(actors.treasury.address)
    receipt = await hosted.with_sender(sender_for(actors.non_owner)).sweep_slashed()
    assert events(hosted.contract, receipt, "SlashedSentToTreasury")[0]["amount"] == 2 * ETH
    assert await chain.w3.eth.get_balance(actors.treasury.address) == before + 2 * ETH
    assert await hosted.slashed_balance() == 0
