"""``AsyncInferenceManager`` / ``InferenceManager`` on the shared devnet (real anvil, host nodes, ML nodes): a session
opened by criteria, the serving host's process killed mid-conversation, the conversation carried to another host with
its full history, every message stored exactly once, each job settled once on chain; a manual switch; bad input."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from network import TINY, BackgroundDevnet
from tests.fixtures.servers import free_port

from dinfer.chain.backends import connect
from dinfer.chain.contracts.sessions import SessionState
from dinfer.chain.txqueue import TxSender
from dinfer.crypto import Keypair, checksum
from dinfer.sdk import (
    AsyncDinferClient,
    AsyncInferenceManager,
    DinferClient,
    HostSelector,
    InferenceManager,
    NoSuitableHost,
    SessionClosedError,
    SessionOpenFailed,
    SessionSwitchFailed,
)
from dinfer.sdk.manager import JobState

pytestmark = pytest.mark.e2e

ETH = 10**18
DEPOSIT = 10**15
PROMPTS = ["My name is Ada.", "I live in Paris.", "What is my name?"]


def funded_key(network: BackgroundDevnet) -> Keypair:
    """A fresh account with 1 ETH from the demo client (exact balances, its own rate-limit bucket)."""
    key = Keypair.generate()

    async def fund() -> None:
        w3 = connect([network.info.rpc_url])
        bank = TxSender(w3, Keypair.from_private_key(network.info.demo_client_key), poll_interval=0.1)
        try:
            await bank.transact({"to": key.address, "value": ETH}, gas=21_000)
        finally:
            await bank.close()
            await w3.provider.disconnect()

    network.run(fund())
    return key


def process_of(network: BackgroundDevnet, address: str) -> str:
    """The supervised process name (``host<i>``) of the host with ``address``."""
    for i, host in enumerate(network.info.hosts):
        if checksum(host["address"]) == checksum(address):
            return f"host{i}"
    raise AssertionError(f"{address} is not a devnet host")


@pytest.fixture
async def manager(network: BackgroundDevnet, tmp_path: Path) -> AsyncIterator[AsyncInferenceManager]:
    client = AsyncDinferClient.from_devnet(network.net.info_path, funded_key(network))
    async with AsyncInferenceManager(client, selector=HostSelector(stats_path=tmp_path / "stats.sqlite"),
                                     conversations_dir=tmp_path / "conversations") as m:
        yield m
    await client.close()


async def test_killed_host_hands_the_conversation_to_another_with_full_history(
        manager: AsyncInferenceManager, network: BackgroundDevnet) -> None:
    client = manager.client
    session = await manager.open_session(TINY, DEPOSIT, criteria={"strategy": "lowest_latency", "region": "local"})
    first = session.current
    assert (await client.sessions.get_session(first.job_id)).host == first.host
    answers = [await manager.ask(session, p, max_tokens=6) for p in PROMPTS[:2]]
    assert {a.job_id for a in answers} == {first.job_id}
    first_used = client.billing(first.client).per_job[first.job_id].total_tokens

    victim = process_of(network, first.host)
    network.kill(victim)
    try:
        chunks: list[str] = []
        third = await manager.ask(session, PROMPTS[2], max_tokens=6, stream=chunks.append)
        second = session.current
        # another host answered, on a new job of its own that starts from zero
        assert third.resent and third.host != first.host and third.job_id == second.job_id != first.job_id
        assert "".join(chunks) == third.content
        assert third.cumulative_tokens == third.usage.total_tokens
        assert first.state is JobState.ABANDONED and first.host in session.failed_hosts
        job = await client.sessions.get_session(second.job_id)
        assert job.state == SessionState.ACTIVE and checksum(job.host) == second.host
        assert checksum(job.client) == client.address

        # the new host was resumed with the earlier messages (its own view of the session)
        ack = second.client.ack
        assert ack is not None and ack.resumed and ack.context_tokens > 0
        async with httpx.AsyncClient(timeout=10) as http:
            status = (await http.get(f"{second.url}/v1/sessions/{second.job_id}",
                                     headers={"authorization": f"Bearer {ack.token}"})).json()
        assert status["context_messages"] == 2 * len(PROMPTS)  # 4 resumed + the re-sent prompt + its answer

        # every message stored once, in order, with the job that answered it
        stored = (await manager.get_conversation(session)).messages
        assert [(m.role, m.content) for m in stored[0::2]] == [("user", p) for p in PROMPTS]
        assert [m.content for m in stored[1::2]] == [a.content for a in [*answers, third]]
        assert [m.meta["job_id"] for m in stored[1::2]] == [first.job_id, first.job_id, second.job_id]
        assert stored[-1].meta["resent"] is True and stored[-1].meta["host"] == second.host
        assert stored[-1].meta["tokens"]["total"] == third.usage.total_tokens

        performance = manager.selector.performance(first.host)
        assert performance.failures >= 1

        usage = await manager.get_usage(session)
        assert [j.job_id for j in usage.jobs] == [first.job_id, second.job_id]
        assert usage.jobs[0].used.total_tokens == first_used
        assert usage.jobs[1].used.total_tokens == third.usage.total_tokens
        assert usage.total_tokens == first_used + third.usage.total_tokens

        # settlement: each job pays its own proven tokens once; the dead host only what it proved before dying
        proven_before = (await client.sessions.get_session(first.job_id)).cumulative_tokens
        settled = await manager.close(session)
        old, new = settled.settlements
        assert old.job_id == first.job_id and old.state == SessionState.COMPLETED
        assert old.tokens_used == proven_before <= first_used
        assert new.job_id == second.job_id and new.state == SessionState.COMPLETED
        assert new.tokens_used <= third.usage.total_tokens
        assert settled.withdrawn == old.refund + new.refund == 2 * DEPOSIT - old.cost - new.cost
        assert await client.sessions.refunds(client.address) == 0
        with pytest.raises(SessionClosedError, match="conversation_id"):
            await manager.ask(session, "still there?")
    finally:
        network.revive(victim)


async def test_manual_switch_resumes_on_the_chosen_host_and_bad_input(
        manager: AsyncInferenceManager, network: BackgroundDevnet) -> None:
    hosts = network.info.hosts
    session = await manager.open_session(TINY, DEPOSIT, host=hosts[0]["url"])
    await manager.ask(session, "Remember the number 7.", max_tokens=4)
    old = session.current
    segment = await manager.switch_host(session, hosts[1]["url"])
    assert old.state is JobState.ENDED and segment.host == checksum(hosts[1]["address"])
    assert segment.client.ack is not None and segment.client.ack.resumed
    result = await manager.ask(session, "Which number?", max_tokens=4)
    assert result.job_id == segment.job_id and not result.resent

    # a switch to a host that is not there leaves the session where it was
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SessionSwitchFailed, match=re.escape(dead)):
        await manager.switch_host(session, dead)
    assert session.current is segment and segment.state is JobState.ACTIVE

    settled = await manager.close(session)
    assert [s.job_id for s in settled.settlements] == [old.job_id, segment.job_id]
    assert all(s.state == SessionState.COMPLETED for s in settled.settlements)
    assert len((await manager.get_conversation(session)).messages) == 4

    with pytest.raises(NoSuitableHost, match="region"):
        await manager.open_session(TINY, DEPOSIT, criteria={"strategy": "lowest_price", "region": "mars"})
    with pytest.raises(SessionOpenFailed, match="HostUnreachable"):
        await manager.open_session(TINY, DEPOSIT, host=dead)
    assert await manager.client.sessions.refunds(manager.client.address) == 0


def test_sync_manager_and_docs_page(network: BackgroundDevnet, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The sync façade, then every ```python block of docs/sdk/manager.md in order, in one namespace."""
    key = funded_key(network)
    with DinferClient.from_devnet(network.net.info_path, key) as client, InferenceManager(
            client, selector=HostSelector(stats_path=tmp_path / "stats.sqlite"),
            conversations_dir=tmp_path / "conversations") as manager:
        session = manager.open_session(TINY, DEPOSIT, criteria="round_robin")
        chunks = list(manager.stream(session, "Hello", max_tokens=4))
        assert session.last_result is not None and "".join(chunks) == session.last_result.content
        assert manager.send_prompt(session, "Again", max_tokens=4).job_id == session.job_id
        assert manager.get_usage(session).prompts == 2
        assert manager.close(session).withdrawn > 0

    doc = (Path(__file__).resolve().parents[2] / "docs" / "sdk" / "manager.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    assert len(blocks) >= 3
    namespace: dict[str, Any] = {"DEVNET_JSON": network.net.info_path, "KEY": funded_key(network).private_key,
                                 "MODEL": TINY, "HOST": network.host(0)["url"], "CONVERSATIONS": tmp_path / "docs",
                                 "STATS": tmp_path / "docs-stats.sqlite"}
    for block in blocks:
        exec(compile(block, "docs/sdk/manager.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "answered by" in out and "refund:" in out and "messages: 4" in out

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the quick start uses the default ~/.dinfer files
    guide = (Path(__file__).resolve().parents[2] / "docs" / "sdk.md").read_text()  # the SDK guide's quick start
    (quick_start,) = re.findall(r"```python\n(.*?)```", guide, flags=re.DOTALL)
    exec(compile(quick_start, "docs/sdk.md", "exec"),
         {"DEVNET_JSON": network.net.info_path, "KEY": funded_key(network).private_key, "MODEL": TINY})
    out = capsys.readouterr().out
    assert "host: 0x" in out and "refund:" in out
