"""Fixtures shared by the whole suite: an in-process chain and a deployed Registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.deploy import bind, deploy_network
from dinfer.chain.txqueue import TxSender
from dinfer.crypto import Keypair
from dinfer.genesis import Genesis, load_genesis


@pytest.fixture(scope="session")
def genesis() -> Genesis:
    return load_genesis()


@pytest.fixture
async def chain() -> AsyncIterator[EthTesterBackend]:
    """A fresh py-evm chain per test (cheap: ~20 ms)."""
    backend = await EthTesterBackend.start()
    yield backend
    await backend.close()


@dataclass
class Actors:
    """Role-named accounts (STYLE: tests use actors like `non_owner`)."""

    owner: Keypair
    host: Keypair
    host2: Keypair
    client: Keypair
    non_owner: Keypair
    treasury: Keypair


@pytest.fixture
def actors(chain: EthTesterBackend) -> Actors:
    a = chain.accounts
    return Actors(owner=a[0], host=a[1], host2=a[2], client=a[3], non_owner=a[4], treasury=a[5])


@pytest.fixture
def sender_for(chain: EthTesterBackend):  # type: ignore[no-untyped-def]
    """``sender_for(keypair)`` → a ``TxSender`` for that account (one per account per test)."""
    senders: dict[str, TxSender] = {}

    def make(account: Keypair) -> TxSender:
        if account.address not in senders:
            senders[account.address] = TxSender(chain.w3, account, poll_interval=0.01)
        return senders[account.address]

    return make


@pytest.fixture
async def registry(chain: EthTesterBackend, genesis: Genesis, actors: Actors, sender_for) -> RegistryClient:  # type: ignore[no-untyped-def]
    """Registry deployed with the genesis parameters and models; acts as the owner."""
    deployment = await deploy_network(chain.w3, sender_for(actors.owner), genesis, treasury=actors.treasury.address)
    contract = bind(chain.w3, "Registry", deployment.address("Registry"))
    return RegistryClient(contract, sender_for(actors.owner))
