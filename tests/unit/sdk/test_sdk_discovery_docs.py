"""The examples of docs/sdk/discovery.md run against a real discovery service, chain and mDNS on loopback."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.fixtures.servers import serve_app
from tests.unit.sdk.sdk_discovery_support import TINY

from dinfer.chain.contracts.registry import RegistryClient
from dinfer.crypto import Keypair
from dinfer.discovery_service import create_discovery_app

DOC = Path(__file__).resolve().parents[3] / "docs" / "sdk" / "discovery.md"


def _examples() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S):
        exec(compile(block, str(DOC), "exec"), namespace)
    return namespace


async def test_announce_then_discover_examples(capsys) -> None:  # type: ignore[no-untyped-def]
    examples = _examples()
    key = Keypair.generate()
    async with serve_app(create_discovery_app()) as base:
        posted = await examples["example_announce"](base, key.private_key)
        assert posted["address"] == key.address
        lines = await examples["example_discover"](base)
    assert lines == [f"{key.address} http://127.0.0.1:9000 ('http',)"]
    printed = capsys.readouterr().out
    assert "'http': (True, 1.0" in printed and "'mdns': (True, 1.0" in printed


async def test_registry_example(registry: RegistryClient, chain, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dinfer.chain.deploy import Deployment

    examples = _examples()
    deployment = tmp_path / "deployment.json"
    Deployment(chain_id=1, deployer="0x" + "00" * 20, block=0,
               contracts={"Registry": registry.address}).save(deployment)
    # the example connects over JSON-RPC; the in-process chain has none, so bind its provider in place of connect()
    examples["connect"] = lambda urls: chain.w3
    source = await examples["example_registry"]("http://unused", str(deployment))
    try:
        assert source.watching and await source.discover(TINY) == []
    finally:
        await source.close()
