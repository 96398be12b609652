"""The chain writer's outbox (``node/chain_outbox.py``): records survive a crash in SQLite, a restarted writer queues
them again, and a record whose outcome is known leaves the outbox. Real py-evm chain with the genesis contracts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from poc_hosts import clients, deploy

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.inference import FinishRecord, ReassignRecord, StartRecord
from dinfer.chain.txqueue import TxSender
from dinfer.genesis import Genesis
from dinfer.node.chain_outbox import ChainOutbox, decode, encode
from dinfer.node.chain_writer import ChainWriter
from dinfer.node.store import NodeStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[NodeStore]:
    store = await NodeStore.open(tmp_path / "node.sqlite")
    yield store
    await store.close()


@pytest.mark.parametrize("record", [
    StartRecord(os.urandom(32), 1_700_000_000, os.urandom(65), os.urandom(32), "0x" + "ab" * 20,
                ("0x" + "cd" * 20, "0x" + "ef" * 20), 12, 8),
    ReassignRecord(os.urandom(32), "0x" + "ab" * 20, "0x" + "cd" * 20),
    FinishRecord(os.urandom(32), 7, 9, os.urandom(32)),
], ids=["start", "reassign", "finish"])
def test_records_round_trip(record: StartRecord | ReassignRecord | FinishRecord) -> None:
    kind = {StartRecord: "start", ReassignRecord: "reassign", FinishRecord: "finish"}[type(record)]
    assert decode(kind, encode(record)) == record


def test_decode_refuses_an_unknown_kind() -> None:
    with pytest.raises(KeyError):
        decode("withdraw", "{}")


async def _writer(chain: EthTesterBackend, actors, genesis: Genesis, store: NodeStore,  # type: ignore[no-untyped-def]
                  **kw: float) -> ChainWriter:
    deployment = await deploy(chain, actors.owner, genesis)
    _, _, inference = clients(chain, deployment, TxSender(chain.w3, actors.host, poll_interval=0.01))
    writer = ChainWriter(inference, max_delay=0.01, gate_interval=0.02, **kw)
    writer.outbox = await ChainOutbox.open(store)
    return writer


async def _until_empty(outbox: ChainOutbox, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if not await outbox.pending():
            return
        await asyncio.sleep(0.05)


async def test_a_restarted_writer_queues_what_the_crashed_one_owed(  # type: ignore[no-untyped-def]
    chain: EthTesterBackend, actors, genesis: Genesis, store: NodeStore
) -> None:
    crashed = await _writer(chain, actors, genesis, store)
    finish = FinishRecord(os.urandom(32), 3, 4)
    crashed.queue_finish(finish)  # its start is not on chain: it waits in the gate (in memory only, before)
    await asyncio.sleep(0.05)
    await crashed.close()  # the process dies: the gate and batches are gone
    assert [r for _, r in await crashed.outbox.pending()] == [finish]  # type: ignore[union-attr]

    outbox = crashed.outbox
    assert outbox is not None
    reassign = ReassignRecord(os.urandom(32), actors.host.address, actors.host2.address)
    await outbox.put("reassign", reassign)  # owed too (its start is unknown on chain: it goes out and is refused)

    restarted = ChainWriter(crashed.inference, max_delay=0.01, gate_interval=0.02)
    restarted.outbox = outbox
    assert await restarted.replay() == 2
    for _ in range(200):  # the reassign's outcome (refused: NotTA) takes it out of the outbox
        if len(await outbox.pending()) == 1:
            break
        await asyncio.sleep(0.05)
    assert [r for _, r in await outbox.pending()] == [finish]  # still owed: it waits in the gate for its start
    assert restarted.stats["rejected"] == 1 and len(restarted._gate) == 1
    await restarted.close()


async def test_records_leave_the_outbox_once_their_outcome_is_known(  # type: ignore[no-untyped-def]
    chain: EthTesterBackend, actors, genesis: Genesis, store: NodeStore
) -> None:
    writer = await _writer(chain, actors, genesis, store, gate_timeout=0.05)
    writer.queue_finish(FinishRecord(os.urandom(32), 1, 1))  # dropped by the gate: its start never appears
    reassign_id = os.urandom(32)
    reassign = writer.queue_reassign(ReassignRecord(reassign_id, actors.host.address, actors.host2.address))
    outcome = await reassign  # flushed: the contract refuses it (this account is no TA of that inference)
    assert list(outcome.rejected) == [reassign_id]
    assert writer.outbox is not None
    await _until_empty(writer.outbox)
    assert await writer.outbox.pending() == []  # type: ignore[union-attr]
    await writer.close()
