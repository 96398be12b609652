"""Fixtures shared by the host-node unit tests: one pooled HTTP client per test, the generated tiny models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from poc_hosts import models_dir


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of the tiny GGUF models the PoC tests' ML nodes serve by id."""
    return models_dir(tmp_path_factory.mktemp("models"))
