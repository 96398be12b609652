"""Fixtures for the Inference contract tests (helpers live in ``inference_ledger``)."""

from __future__ import annotations

import pytest
from inference_ledger import Ledger, make_ledger


@pytest.fixture
async def ledger(chain, registry, genesis, actors, sender_for) -> Ledger:  # type: ignore[no-untyped-def]
    """Registry + Epochs + Inference, four executor hosts in the epoch-1 group, a TA, a client with 1 ETH."""
    return await make_ledger(chain, registry, genesis, actors, sender_for)
