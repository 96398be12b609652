"""Fixtures for the Sessions contract tests: the genesis Registry, actors.host registered, Sessions deployed."""

from __future__ import annotations

import pytest
from sessions_helpers import DEPOSIT, MAX_DURATION, MODEL, PRICE, PROOF_INTERVAL

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.contracts.sessions import SessionsClient
from dinfer.chain.deploy import bind, deploy_sessions
from support import build_once


@pytest.fixture
async def sessions(chain: EthTesterBackend, registry: RegistryClient, actors, sender_for) -> SessionsClient:  # type: ignore[no-untyped-def]
    """Sessions deployed against the genesis Registry (actors.host registered with the minimum collateral);
    the client acts as actors.client."""
    async def build() -> str:
        collateral = await registry.param("min_collateral_wei")
        host_registry = registry.with_sender(sender_for(actors.host))
        await host_registry._transact("register_host", "http://host.test:9000", "{}", value=collateral)
        return str((await deploy_sessions(chain.w3, sender_for(actors.owner), registry.address)).address)

    address = await build_once(chain, "sessions", build)
    return SessionsClient(bind(chain.w3, "Sessions", address), sender_for(actors.client))


@pytest.fixture
def host_sessions(sessions: SessionsClient, actors, sender_for) -> SessionsClient:  # type: ignore[no-untyped-def]
    """The same contract, acting as the session's host."""
    return SessionsClient(sessions.contract, sender_for(actors.host))


@pytest.fixture
async def job(sessions: SessionsClient, actors) -> int:  # type: ignore[no-untyped-def]
    """An ACTIVE session: actors.client → actors.host, DEPOSIT for MAX_TOKENS tokens at PRICE."""
    receipt = await sessions.create_session(
        actors.host.address, MODEL, PRICE, MAX_DURATION, PROOF_INTERVAL, deposit=DEPOSIT
    )
    return sessions.job_id_of(receipt)
