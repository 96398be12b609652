"""Helpers of the discovery tests: governance model ids, hosts registered on the py-evm chain, signed announcements."""

from __future__ import annotations

import json
import time
from typing import Any

from dinfer.announce import Announcement, sign_announcement
from dinfer.chain.contracts.registry import HardwareNode, RegistryClient
from dinfer.crypto import Keypair

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TINY = "dinfer/tiny-random-llama"
ETH = 10**18


async def register_host(registry: RegistryClient, sender: Any, url: str, metadata: str | dict[str, Any],
                        models: list[str], collateral: int = ETH) -> RegistryClient:
    """Register the sender's account as a host with one ML node per model; returns the client acting as it."""
    client = registry.with_sender(sender)
    assert isinstance(client, RegistryClient)
    raw = metadata if isinstance(metadata, str) else json.dumps(metadata)
    await client.register_host(url, raw, collateral)
    if models:
        await client.submit_hardware_diff([HardwareNode(f"n{i}", (m,), "cpu", 10) for i, m in enumerate(models)], [])
    return client


def announcement(key: Keypair | None = None, url: str = "http://127.0.0.1:9000", models: tuple[str, ...] = (SMOL,),
                 metadata: dict[str, Any] | None = None, age_s: float = 0) -> Announcement:
    """A signed announcement by ``key`` (a fresh one by default) dated ``age_s`` seconds ago."""
    key = key or Keypair.generate()
    return sign_announcement(key.private_key, url, models, metadata or {}, timestamp=int(time.time() - age_s))
