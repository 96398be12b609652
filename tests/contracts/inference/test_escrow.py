"""Inference.deposit / withdraw / withdraw_earnings: balances, events, exact reverts, ETH really moves."""

from __future__ import annotations

import pytest
from inference_ledger import ETH, Ledger

from dinfer.errors import TxReverted
from support import events


async def test_deposit_and_withdraw(ledger: Ledger) -> None:
    client = ledger.as_(ledger.non_owner)
    receipt = await client.deposit(3 * ETH)
    assert events(ledger.inference.contract, receipt, "Deposited") == [
        {"client": ledger.non_owner.address, "amount": 3 * ETH, "balance": 3 * ETH}
    ]
    assert await ledger.inference.contract.functions.client_index(ledger.non_owner.address).call() == 2
    await client.deposit(ETH)
    assert await ledger.inference.balance_of(ledger.non_owner.address) == 4 * ETH
    w3 = ledger.chain.w3
    before = await w3.eth.get_balance(ledger.non_owner.address)
    receipt = await client.withdraw(ETH)
    assert events(ledger.inference.contract, receipt, "Withdrawn") == [
        {"client": ledger.non_owner.address, "amount": ETH, "balance": 3 * ETH}
    ]
    fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert await w3.eth.get_balance(ledger.non_owner.address) == before + ETH - fee
    assert await ledger.inference.balance_of(ledger.non_owner.address) == 3 * ETH


async def test_deposit_and_withdraw_refusals(ledger: Ledger) -> None:
    client = ledger.as_(ledger.non_owner)
    with pytest.raises(TxReverted.named("ZeroAmount")):
        await client.deposit(0)
    with pytest.raises(TxReverted.named("InsufficientBalance")):
        await client.withdraw(1)  # never deposited
    await client.deposit(ETH)
    with pytest.raises(TxReverted.named("InsufficientBalance")):
        await client.withdraw(ETH + 1)
    with pytest.raises(TxReverted.named("ZeroAmount")):
        await client.withdraw(0)
    assert await ledger.inference.balance_of(ledger.non_owner.address) == ETH


async def test_reserved_funds_cannot_be_withdrawn(ledger: Ledger) -> None:
    rec = await ledger.record(prompt=100, max_tokens=100)
    await ledger.start(rec)
    free = await ledger.inference.balance_of(ledger.client.address)
    assert free == ETH - 200 * ledger.price
    with pytest.raises(TxReverted.named("InsufficientBalance")):
        await ledger.as_(ledger.client).withdraw(ETH)
    await ledger.as_(ledger.client).withdraw(free)


async def test_withdraw_earnings(ledger: Ledger) -> None:
    rec = await ledger.record()
    await ledger.start(rec)
    executor = ledger.member(rec.executor)
    with pytest.raises(TxReverted.named("NothingToWithdraw")):
        await ledger.as_(executor).withdraw_earnings()
    await ledger.finish(rec, prompt=10, completion=5)
    w3 = ledger.chain.w3
    before = await w3.eth.get_balance(executor.address)
    receipt = await ledger.as_(executor).withdraw_earnings()
    assert events(ledger.inference.contract, receipt, "EarningsWithdrawn") == [
        {"host": executor.address, "amount": 15 * ledger.price}
    ]
    fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert await w3.eth.get_balance(executor.address) == before + 15 * ledger.price - fee
    assert await ledger.inference.earnings(executor.address) == 0
    with pytest.raises(TxReverted.named("NothingToWithdraw")):
        await ledger.as_(executor).withdraw_earnings()
