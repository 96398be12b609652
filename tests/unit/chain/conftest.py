"""A real anvil per test module (multi-process backend)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from dinfer.chain.anvil import AnvilProcess


@pytest.fixture
async def anvil() -> AsyncIterator[AnvilProcess]:
    node = await AnvilProcess.start(block_time=0.2, accounts=5)
    yield node
    node.stop()
