"""Registry hosts: registration with collateral, updates, unbonding and withdrawal."""

from __future__ import annotations

import pytest

from dinfer.chain.contracts.registry import RegistryClient
from dinfer.errors import TxReverted
from support import events

ETH = 10**18


@pytest.fixture
def as_host(registry: RegistryClient, actors, sender_for) -> RegistryClient:
    return registry.with_sender(sender_for(actors.host))  # type: ignore[return-value]


async def test_register_host(as_host: RegistryClient, actors) -> None:
    receipt = await as_host.register_host("http://127.0.0.1:9000", '{"gpu": "none"}', ETH)
    assert events(as_host.contract, receipt, "HostRegistered") == [
        {"host": actors.host.address, "url": "http://127.0.0.1:9000", "collateral": ETH}
    ]
    host = await as_host.get_host(actors.host.address)
    assert (host.url, host.metadata, host.collateral) == ("http://127.0.0.1:9000", '{"gpu": "none"}', ETH)
    assert await as_host.get_hosts() == [actors.host.address]
    assert await as_host.is_active_host(actors.host.address)
    assert await as_host.collateral_of(actors.host.address) == ETH


@pytest.mark.parametrize(("url", "collateral", "reason"), [
    ("http://h", 0, "ZeroCollateral"),
    ("http://h", 10**16 - 1, "InsufficientCollateral"),
    ("", ETH, "EmptyUrl"),
])
async def test_register_refusals(as_host: RegistryClient, actors, url: str, collateral: int, reason: str) -> None:
    with pytest.raises(TxReverted.named(reason)):
        await as_host.register_host(url, "{}", collateral)
    assert not await as_host.is_host(actors.host.address)
    assert await as_host.get_hosts() == []


async def test_duplicate_registration_refused(as_host: RegistryClient, actors) -> None:
    await as_host.register_host("http://h", "{}", ETH)
    with pytest.raises(TxReverted.named("HostAlreadyRegistered")):
        await as_host.register_host("http://h2", "{}", ETH)
    assert (await as_host.get_host(actors.host.address)).url == "http://h"
    assert await as_host.collateral_of(actors.host.address) == ETH


async def test_update_and_add_collateral(as_host: RegistryClient, actors) -> None:
    with pytest.raises(TxReverted.named("NotHost")):
        await as_host.update_host("http://x", "{}")
    with pytest.raises(TxReverted.named("NotHost")):
        await as_host.add_collateral(ETH)
    await as_host.register_host("http://h", "{}", ETH)
    receipt = await as_host.update_host("http://new", '{"region": "eu"}')
    assert events(as_host.contract, receipt, "HostUpdated")[0]["url"] == "http://new"
    with pytest.raises(TxReverted.named("EmptyUrl")):
        await as_host.update_host("", "{}")
    receipt = await as_host.add_collateral(ETH)
    assert events(as_host.contract, receipt, "CollateralAdded")[0]["collateral"] == 2 * ETH
    with pytest.raises(TxReverted.named("ZeroAmount")):
        await as_host.add_collateral(0)
    host = await as_host.get_host(actors.host.address)
    assert (host.url, host.collateral) == ("http://new", 2 * ETH)


async def test_unbond_and_withdraw(as_host: RegistryClient, actors, chain) -> None:
    await as_host.register_host("http://h", "{}", 2 * ETH)
    with pytest.raises(TxReverted.named("AmountExceedsCollateral")):
        await as_host.request_unbond(3 * ETH)
    with pytest.raises(TxReverted.named("ZeroAmount")):
        await as_host.request_unbond(0)
    with pytest.raises(TxReverted.named("NothingToWithdraw")):
        await as_host.withdraw_unbonded()
    receipt = await as_host.request_unbond(ETH)
    release = events(as_host.contract, receipt, "UnbondRequested")[0]["release_block"]
    assert release == receipt["blockNumber"] + 100
    with pytest.raises(TxReverted.named("UnbondingNotElapsed")):
        await as_host.withdraw_unbonded()
    await chain.mine(100)
    balance = await chain.w3.eth.get_balance(actors.host.address)
    receipt = await as_host.withdraw_unbonded()
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert await chain.w3.eth.get_balance(actors.host.address) == balance + ETH - gas_cost
    assert events(as_host.contract, receipt, "UnbondedWithdrawn") == [{"host": actors.host.address, "amount": ETH}]
    host = await as_host.get_host(actors.host.address)
    assert (host.collateral, host.unbonding) == (ETH, 0)


async def test_unknown_host_query(registry: RegistryClient, actors) -> None:
    with pytest.raises(TxReverted.named("UnknownHost")):
        await registry.get_host(actors.non_owner.address)
