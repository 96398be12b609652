"""End-to-end fixtures: one real devnet (3 hosts, tiny GGUF model) shared by the host-node e2e tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from network import BackgroundDevnet, make_settings, running
from tests.fixtures.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def network(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[BackgroundDevnet]:
    """3 hosts × 1 ML node serving the tiny model, rate limit 20/min per client (for the 429 test)."""
    with running(make_settings(tmp_path_factory.mktemp("devnet"), tiny_model, host_rate_limit_per_minute=20,
                               host_max_attempts=3)) as net:
        yield net
