"""Fixtures for the Validation contract tests (helpers live in ``validation_helpers``)."""

from __future__ import annotations

import pytest
from validation_helpers import VLedger, make_vledger


@pytest.fixture
async def vl(chain, registry, genesis, actors, sender_for) -> VLedger:  # type: ignore[no-untyped-def]
    """Registry + Epochs + Inference + Validation, four group members, a client with 1 ETH deposited."""
    return await make_vledger(chain, registry, genesis, actors, sender_for)
