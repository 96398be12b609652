"""Pull payments to a contract host: a payout forwards enough gas for a real receive hook, and re-entering
``withdraw_earnings`` from that hook reverts the whole withdrawal (``@nonreentrant`` + balance zeroed first)."""

from __future__ import annotations

from pathlib import Path

import pytest
import vyper
from sessions_helpers import DEPOSIT, MAX_DURATION, MODEL, PRICE, PROOF_INTERVAL, split

from dinfer.chain.contracts.sessions import SessionsClient
from dinfer.errors import TxReverted

TOKENS = 1_500


@pytest.fixture
async def contract_host(chain, sessions: SessionsClient, registry, actors, sender_for):  # type: ignore[no-untyped-def]
    """ReentrantHost registered as a host, with TOKENS proven on a session its client completed."""
    out = vyper.compile_code((Path(__file__).parent / "ReentrantHost.vy").read_text(),
                             output_formats=["abi", "bytecode"])
    owner = sender_for(actors.non_owner)
    deployed = await owner.transact(chain.w3.eth.contract(abi=out["abi"], bytecode=out["bytecode"]).constructor())
    host = chain.w3.eth.contract(address=deployed["contractAddress"], abi=out["abi"])
    await owner.transact(host.functions.register(registry.address, sessions.address),
                         value=await registry.param("min_collateral_wei"))
    receipt = await sessions.create_session(host.address, MODEL, PRICE, MAX_DURATION, PROOF_INTERVAL, deposit=DEPOSIT)
    job = sessions.job_id_of(receipt)
    await chain.set_next_timestamp((await sessions.get_session(job)).start_time + 1)
    await owner.transact(host.functions.prove(job, TOKENS))
    await sessions.complete_session(job)
    return host, owner


async def test_reentrant_withdrawal_reverts_and_keeps_the_balance(chain, sessions, contract_host) -> None:
    host, owner = contract_host
    earned = split(TOKENS)[0]
    assert await sessions.earnings(host.address) == earned
    with pytest.raises(TxReverted):  # the lock's revert carries no reason string
        await owner.transact(host.functions.withdraw(True), gas=300_000)  # mined, so the revert happens on chain
    assert await sessions.earnings(host.address) == earned
    assert await chain.w3.eth.get_balance(host.address) == 0
    assert await host.functions.received().call() == 0


async def test_contract_host_with_a_receive_hook_gets_paid(chain, sessions, contract_host) -> None:
    host, owner = contract_host
    await owner.transact(host.functions.withdraw(False))
    earned = split(TOKENS)[0]
    assert await host.functions.received().call() == earned  # the hook wrote storage: more than a 2300 stipend
    assert await chain.w3.eth.get_balance(host.address) == earned
    assert await sessions.earnings(host.address) == 0
