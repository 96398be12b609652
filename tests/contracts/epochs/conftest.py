"""Fixtures for the Epochs contract tests: Epochs deployed by the owner."""

from __future__ import annotations

import pytest

from dinfer.chain.contracts.epochs import EpochsClient
from dinfer.chain.deploy import deploy_contract


@pytest.fixture
async def epochs(chain, actors, sender_for) -> EpochsClient:  # type: ignore[no-untyped-def]
    sender = sender_for(actors.owner)
    return EpochsClient(await deploy_contract(chain.w3, sender, "Epochs"), sender)
