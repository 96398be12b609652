"""Fixtures shared by the whole suite: an in-process chain and a deployed Registry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.deploy import bind, deploy_network
from dinfer.chain.txqueue import TxSender
from dinfer.crypto import Keypair
from dinfer.genesis import Genesis, load_genesis
from support import FULL_PROFILE


@pytest.fixture(scope="session")
def genesis() -> Genesis:
    return load_genesis()


@dataclass
class _BaseChain:
    backend: EthTesterBackend
    snapshot: object
    registry_address: str


@pytest.fixture(scope="session")
def _base_chain(genesis: Genesis) -> _BaseChain:
    """One py-evm chain with the genesis Registry deployed once; every test starts from its snapshot."""

    async def build() -> _BaseChain:
        backend = await EthTesterBackend.start()
        owner, treasury = backend.accounts[0], backend.accounts[5]
        deployment = await deploy_network(backend.w3, TxSender(backend.w3, owner, poll_interval=0.01), genesis,
                                          treasury=treasury.address)
        return _BaseChain(backend, backend.tester.take_snapshot(), deployment.address("Registry"))

    return asyncio.run(build())


@pytest.fixture
async def chain(_base_chain: _BaseChain) -> AsyncIterator[EthTesterBackend]:
    """The py-evm chain reset to the post-genesis snapshot (a fresh chain state per test, ~1 ms)."""
    _base_chain.backend.tester.revert_to_snapshot(_base_chain.snapshot)
    yield _base_chain.backend


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
def registry(chain: EthTesterBackend, _base_chain: _BaseChain, actors: Actors, sender_for) -> RegistryClient:  # type: ignore[no-untyped-def]
    """Registry deployed with the genesis parameters and models (treasury = actors.treasury); acts as the owner."""
    return RegistryClient(bind(chain.w3, "Registry", _base_chain.registry_address), sender_for(actors.owner))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Two profiles: ``make test`` (fast) skips tests marked ``slow`` (long end-to-end cycles, fault and soak runs);
    ``make test-full`` (``DINFER_TEST_FULL=1``) runs them too, and ``support.examples`` gives hypothesis more examples.

    End-to-end tests share the session devnet and are timing-sensitive: under pytest-xdist
    (``scripts/run-tests.sh``: ``--dist loadgroup``) they all run in one worker, in collection order."""
    skip_slow = None if FULL_PROFILE else pytest.mark.skip(reason="slow: runs in `make test-full` (DINFER_TEST_FULL=1)")
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.xdist_group("e2e"))
        if skip_slow is not None and item.get_closest_marker("slow") is not None:
            item.add_marker(skip_slow)
