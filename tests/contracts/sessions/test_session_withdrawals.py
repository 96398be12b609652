"""Sessions pull payments: withdraw_earnings (hosts), withdraw_refund (clients), sweep_treasury (anyone)."""

from __future__ import annotations

from typing import Any

import pytest
from sessions_helpers import DEPOSIT, split

from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.contracts.sessions import SessionsClient
from dinfer.errors import TxReverted
from support import events

TOKENS = 2_000


def _gas_cost(receipt: dict[str, Any]) -> int:
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


@pytest.fixture
async def settled(chain, sessions: SessionsClient, host_sessions: SessionsClient, job: int) -> int:  # type: ignore[no-untyped-def]
    """The ``job`` session with TOKENS proven, completed by its client."""
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 1)
    await host_sessions.submit_proof_of_work(job, TOKENS)
    await sessions.complete_session(job)
    return job


async def test_host_withdraws_earnings(chain, sessions, host_sessions, settled: int, actors) -> None:
    host_earnings = split(TOKENS)[0]
    before = await chain.w3.eth.get_balance(actors.host.address)
    receipt = await host_sessions.withdraw_earnings()
    after = await chain.w3.eth.get_balance(actors.host.address)
    assert after - before == host_earnings - _gas_cost(receipt)
    assert await sessions.earnings(actors.host.address) == 0
    assert events(sessions.contract, receipt, "EarningsWithdrawn") == [
        {"host": actors.host.address, "amount": host_earnings}
    ]
    assert await chain.w3.eth.get_balance(sessions.address) == DEPOSIT - host_earnings
    with pytest.raises(TxReverted.named("NothingToWithdraw")):
        await host_sessions.withdraw_earnings()


async def test_client_withdraws_refund(chain, sessions, settled: int, actors) -> None:
    refund = DEPOSIT - sum(split(TOKENS))
    before = await chain.w3.eth.get_balance(actors.client.address)
    receipt = await sessions.withdraw_refund()
    after = await chain.w3.eth.get_balance(actors.client.address)
    assert after - before == refund - _gas_cost(receipt)
    assert await sessions.refunds(actors.client.address) == 0
    assert events(sessions.contract, receipt, "RefundWithdrawn") == [
        {"client": actors.client.address, "amount": refund}
    ]
    with pytest.raises(TxReverted.named("NothingToWithdraw")):
        await sessions.withdraw_refund()


async def test_treasury_fee_goes_to_the_registry_treasury(chain, sessions, settled: int, actors, sender_for) -> None:
    fee = split(TOKENS)[1]
    anyone = SessionsClient(sessions.contract, sender_for(actors.non_owner))
    before = await chain.w3.eth.get_balance(actors.treasury.address)
    receipt = await anyone.sweep_treasury()
    assert await chain.w3.eth.get_balance(actors.treasury.address) - before == fee
    assert await sessions.treasury_balance() == 0
    assert events(sessions.contract, receipt, "TreasurySwept") == [{"treasury": actors.treasury.address, "amount": fee}]
    with pytest.raises(TxReverted.named("NothingToWithdraw")):
        await anyone.sweep_treasury()


async def test_sweep_follows_a_treasury_change(chain, sessions, registry: RegistryClient, settled: int, actors) -> None:
    await registry.set_treasury(actors.host2.address)
    before = await chain.w3.eth.get_balance(actors.host2.address)
    receipt = await sessions.sweep_treasury()
    assert await chain.w3.eth.get_balance(actors.host2.address) - before == split(TOKENS)[1]
    assert events(sessions.contract, receipt, "TreasurySwept")[0]["treasury"] == actors.host2.address


async def test_nothing_is_withdrawable_while_a_session_is_active(chain, sessions, host_sessions, job: int) -> None:
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 1)
    await host_sessions.submit_proof_of_work(job, TOKENS)
    for withdraw in (host_sessions.withdraw_earnings, sessions.withdraw_refund, sessions.sweep_treasury):
        with pytest.raises(TxReverted.named("NothingToWithdraw")):
            await withdraw()
    assert await chain.w3.eth.get_balance(sessions.address) == DEPOSIT


async def test_balances_accumulate_over_sessions(chain, sessions, host_sessions, settled: int, actors) -> None:
    receipt = await sessions.create_session(
        actors.host.address, "dinfer/tiny-random-llama", 10**9, 3_600, 300, deposit=DEPOSIT
    )
    await sessions.complete_session(sessions.job_id_of(receipt))
    assert await sessions.refunds(actors.client.address) == 2 * DEPOSIT - sum(split(TOKENS))
    receipt = await sessions.withdraw_refund()
    assert events(sessions.contract, receipt, "RefundWithdrawn")[0]["amount"] == 2 * DEPOSIT - sum(split(TOKENS))
