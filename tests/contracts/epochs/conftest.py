"""Fixtures for the Epochs contract tests: Epochs (+ PoC) deployed by the owner next to the genesis Registry."""

from __future__ import annotations

import pytest

from dinfer.chain.contracts.epochs import EpochsClient
from dinfer.chain.deploy import bind, deploy_contract
from support import build_once


@pytest.fixture
async def epochs(chain, registry, actors, sender_for) -> EpochsClient:  # type: ignore[no-untyped-def]
    sender = sender_for(actors.owner)

    async def build() -> str:
        client = EpochsClient(await deploy_contract(chain.w3, sender, "Epochs", registry.address), sender)
        poc = await deploy_contract(chain.w3, sender, "PoC", client.address, registry.address)
        await client.set_poc(poc.address)
        return client.address

    return EpochsClient(bind(chain.w3, "Epochs", await build_once(chain, "epochs", build)), sender)
