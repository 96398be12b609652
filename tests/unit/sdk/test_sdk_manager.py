"""``AsyncInferenceManager`` on the py-evm chain (genesis Registry + Sessions deployed for real, hosts registered with
ML nodes so the Registry discovery source lists them) with real loopback servers standing where hosts should be:
opening by criteria walks the ranked hosts and fails naming each, nothing is escrowed or stored for a refused
open, and bad input is refused with typed errors. The serving path (sessions, kills, resumes) runs against real host
nodes in tests/e2e/test_sdk_manager_e2e.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from tests.fixtures.servers import free_port, serve_app

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.registry import HardwareNode, RegistryClient
from dinfer.chain.deploy import Deployment, deploy_sessions
from dinfer.sdk import (
    AsyncConversationStore,
    AsyncDinferClient,
    AsyncInferenceManager,
    Criteria,
    HostAttempt,
    HostSelector,
    LocalBackend,
    NoSuitableHost,
    SessionClosedError,
    SessionOpenFailed,
    SessionSwitchFailed,
)
from dinfer.sdk.manager import ManagedSession

TINY = "dinfer/tiny-random-llama"
DEPOSIT = 10**15


async def register(registry: RegistryClient, sender, host, url: str) -> None:  # type: ignore[no-untyped-def]
    """``host`` registered at ``url`` with one ML node serving TINY (what Registry discovery lists)."""
    as_host = registry.with_sender(sender(host))
    await as_host.register_host(url, '{"region": "local", "hardware": "cpu"}',
                                await registry.param("min_collateral_wei"))
    await as_host.submit_hardware_diff([HardwareNode("ml0", (TINY,), "cpu", 100)], [])


@pytest.fixture
async def not_a_host() -> AsyncIterator[str]:
    """A real web server that is not a dinfer host node (no ``/v1/identity``)."""
    async with serve_app(FastAPI()) as url:
        yield url


@pytest.fixture
async def manager(chain: EthTesterBackend, registry: RegistryClient, actors, sender_for,  # type: ignore[no-untyped-def]
                  not_a_host: str, tmp_path: Path) -> AsyncIterator[AsyncInferenceManager]:
    await register(registry, sender_for, actors.host, not_a_host)
    await register(registry, sender_for, actors.host2, f"http://127.0.0.1:{free_port()}")  # nothing listens
    sessions = await deploy_sessions(chain.w3, sender_for(actors.owner), registry.address)
    deployment = Deployment(chain_id=chain.chain_id, deployer=actors.owner.address, block=0,
                            contracts={"Registry": registry.address, "Sessions": sessions.address})
    client = AsyncDinferClient(actors.client.private_key, chain.w3, deployment)
    async with AsyncInferenceManager(client, selector=HostSelector(stats_path=tmp_path / "stats.sqlite"),
                                     conversations_dir=tmp_path / "conversations") as m:
        yield m
    await client.close()


async def test_open_by_criteria_tries_each_ranked_host_then_names_them_all(
        manager: AsyncInferenceManager, actors, not_a_host: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SessionOpenFailed) as caught:
        await manager.open_session(TINY, DEPOSIT, criteria={"strategy": "lowest_price", "region": "local"})
    attempts = {a.address: a for a in caught.value.attempts}
    assert set(attempts) == {actors.host.address, actors.host2.address}
    assert attempts[actors.host.address].url == not_a_host
    assert "BadHostAddress" in attempts[actors.host.address].reason  # answers HTTP, but not as a dinfer host
    assert "HostUnreachable" in attempts[actors.host2.address].reason
    assert actors.host.address in str(caught.value) and actors.host2.address in str(caught.value)
    for address in attempts:  # each failure fed back to the selector, nothing left in flight
        assert manager.selector.performance(address).failures == 1
        assert manager.selector.in_flight(address) == 0
    # a refused open escrows nothing and stores nothing
    assert await manager.client.sessions.refunds(manager.client.address) == 0
    assert await manager.conversations.list_conversations() == []


async def test_criteria_no_host_meets_is_no_suitable_host(manager: AsyncInferenceManager) -> None:
    with pytest.raises(NoSuitableHost, match="region 'local' is not 'mars'"):
        await manager.open_session(TINY, DEPOSIT, criteria={"strategy": "requirements", "region": "mars"})
    with pytest.raises(NoSuitableHost, match="host list is empty"):  # discovery lists hosts by model
        await manager.open_session("HuggingFaceTB/SmolLM2-135M-Instruct", DEPOSIT, criteria="lowest_price")
    assert await manager.conversations.list_conversations() == []


async def test_explicit_host_that_is_not_there(manager: AsyncInferenceManager) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SessionOpenFailed, match="cannot reach host") as caught:
        await manager.open_session(TINY, DEPOSIT, host=url)
    assert caught.value.attempts == [HostAttempt("", url, caught.value.attempts[0].reason)]


async def test_bad_input_is_refused_before_anything_happens(manager: AsyncInferenceManager, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="deposit"):
        await manager.open_session(TINY, 0)
    with pytest.raises(ValueError, match="model"):
        await manager.open_session("", DEPOSIT)
    with pytest.raises(ValueError, match="unknown strategy"):
        await manager.open_session(TINY, DEPOSIT, criteria="cheapest")
    with pytest.raises(ValueError, match="bad criteria"):
        await manager.open_session(TINY, DEPOSIT, criteria={"colour": "blue"})
    other = await manager.conversations.create_conversation("another/model")
    with pytest.raises(ValueError, match="another/model"):
        await manager.open_session(TINY, DEPOSIT, conversation_id=other)

    closed = ManagedSession("0" * 32, TINY, DEPOSIT, None, Criteria(), closed=True)
    with pytest.raises(SessionClosedError, match="conversation_id"):
        await manager.ask(closed, "hello")
    with pytest.raises(SessionClosedError):
        await manager.switch_host(closed)
    with pytest.raises(ValueError, match="prompt"):
        manager.send_prompt(closed, "")
    with pytest.raises(ValueError, match="not both"):
        AsyncInferenceManager(manager.client, conversations_dir=tmp_path,
                              conversations=AsyncConversationStore(manager.client.key.private_key,
                                                                   LocalBackend(tmp_path)))


def test_criteria_forms() -> None:
    assert Criteria.of(None) == Criteria()
    assert Criteria.of("lowest_price").strategy == "lowest_price"
    wanted = Criteria.of({"strategy": "composite", "max_price": 10, "region": "eu"})
    assert wanted.strategy == "composite" and wanted.requirements == {"max_price": 10, "region": "eu"}
    with pytest.raises(ValueError, match="no model"):
        Criteria(requirements={"model": TINY})
    with pytest.raises(ValueError, match="max_price"):
        Criteria.of({"max_price": -1})
    with pytest.raises(TypeError, match="criteria"):
        Criteria.of(42)  # type: ignore[arg-type]


def test_switch_failure_names_every_host_and_reason() -> None:
    error = SessionSwitchFailed("cannot move", [HostAttempt("0xA", "http://a", "connection lost: reset"),
                                                HostAttempt("0xB", "http://b", "HostUnreachable: refused")],
                                "no other suitable host")
    text = str(error)
    assert "0xA at http://a: connection lost: reset" in text and "0xB at http://b: HostUnreachable" in text
    assert text.endswith("(no other suitable host)") and len(error.attempts) == 2
    assert "no host was tried" in str(SessionOpenFailed("cannot open", []))


def test_default_parts_are_built_and_closed(chain: EthTesterBackend, registry: RegistryClient, actors,  # type: ignore[no-untyped-def]
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    deployment = Deployment(chain_id=chain.chain_id, deployer=actors.owner.address, block=0,
                            contracts={"Registry": registry.address})

    async def build() -> None:
        client = AsyncDinferClient(actors.client.private_key, chain.w3, deployment)
        manager = AsyncInferenceManager(client)
        assert list(manager.discovery.sources) == ["registry"]
        backend = manager.conversations.backend
        assert isinstance(backend, LocalBackend)
        assert backend.root == tmp_path / ".dinfer" / "conversations" / actors.client.address.lower()
        await manager.aclose()
        await client.close()

    asyncio.run(build())
