"""deploy_sessions: Sessions bound to a Registry; a zero registry is refused."""

from __future__ import annotations

import pytest

from dinfer.chain.contracts.sessions import SessionsClient
from dinfer.chain.deploy import deploy_sessions
from dinfer.errors import TxReverted


async def test_deploy_binds_the_registry(chain, registry, actors, sender_for) -> None:
    contract = await deploy_sessions(chain.w3, sender_for(actors.owner), registry.address.lower())
    sessions = SessionsClient(contract)
    assert await sessions.registry_address() == registry.address
    assert (await sessions.next_job_id(), await sessions.treasury_balance()) == (1, 0)


async def test_zero_registry_is_refused(chain, actors, sender_for) -> None:
    with pytest.raises(TxReverted.named("ZeroAddress")):
        await deploy_sessions(chain.w3, sender_for(actors.owner), "0x" + "00" * 20)
