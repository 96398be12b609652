"""The TA's writes off the client's path: the signed request and the record are stored before the start is queued
(so a chain-first executor can fetch the request and the start's outcome finds the record), and a store that
fails sends no start and gives the reservation back."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from test_ta_poc_window import make_ta, signed

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.inference import InferenceStatus
from dinfer.genesis import Genesis
from dinfer.http_errors import HTTPError
from dinfer.node.store import NodeStore
from dinfer.node.ta import TA_REQUEST_KEY, TransferAgent


@pytest.fixture
async def ta(chain: EthTesterBackend, actors, genesis: Genesis, tmp_path,  # type: ignore[no-untyped-def]
             http: httpx.AsyncClient) -> AsyncIterator[TransferAgent]:
    store = await NodeStore.open(tmp_path / "node.sqlite")
    agent = await make_ta(chain, actors, genesis, store, http, slot_nodes=0)
    yield agent
    await agent.writer.close()
    await store.close()


async def test_request_and_record_are_stored_before_the_start_goes_out(  # type: ignore[no-untyped-def]
    ta: TransferAgent, actors
) -> None:
    body, headers = signed(actors.client, ta.address)
    accepted = await ta.admit("chat", body, headers)
    iid = accepted.inference_id
    with pytest.raises(HTTPError) as failed:  # neither host has a reachable ML node / executor API here
        await ta.dispatch(accepted)
    assert failed.value.status == 503
    await ta.pending_starts[iid]  # the start was queued and landed
    stored = orjson.loads(await ta.store.kv_get(TA_REQUEST_KEY.format(iid)) or b"null")
    assert stored["body_hex"] == body.hex() and stored["headers"]["x-dinfer-signature"] == headers[
        "x-dinfer-signature"]
    record = await ta.store.get_inference(iid)
    assert record is not None and record.status == "FAILED"  # the last write wins over the earlier RECEIVED
    info = await ta.chain.inference.get_inference(bytes.fromhex(iid[2:]))
    assert info.status == InferenceStatus.STARTED and info.model_key


async def test_a_store_failure_sends_no_start_and_releases_the_reservation(  # type: ignore[no-untyped-def]
    ta: TransferAgent, actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    body, headers = signed(actors.client, ta.address)
    accepted = await ta.admit("chat", body, headers)

    async def disk_full(key: str, value: str) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(ta.store, "kv_set", disk_full)
    with pytest.raises(HTTPError):  # the client's answer does not wait for the store (503: no executor here)
        await ta.dispatch(accepted)
    await ta.writer.drain(timeout=5.0)
    assert not ta.pending_starts and ta.reserved.get(accepted.signed.client, 0) == 0
    info = await ta.chain.inference.get_inference(bytes.fromhex(accepted.inference_id[2:]))
    assert info.status == InferenceStatus.NONE  # no start: the client is not charged
