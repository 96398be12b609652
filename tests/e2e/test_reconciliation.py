"""Chain-first vs HTTP-first: exactly one finish effect per inference in both orders (real processes)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from network import TINY, BackgroundDevnet, log_of, request_with_first, restart_with_env, wait_status

from dinfer.chain.backends import connect
from dinfer.chain.deploy import bind
from dinfer.chain.events import ChainEvent, EventPoller, SqliteCursorStore

pytestmark = pytest.mark.e2e


def _finish_events(network: BackgroundDevnet, iid: str, tmp_path) -> list[ChainEvent]:  # type: ignore[no-untyped-def]
    """Every InferenceFinished / DuplicateFinish event for ``iid`` since genesis."""
    seen: list[ChainEvent] = []

    async def handle(ev: ChainEvent) -> None:
        if ev.name in ("InferenceFinished", "DuplicateFinish") and "0x" + bytes(ev.args["inference_id"]).hex() == iid:
            seen.append(ev)

    async def main() -> None:
        w3 = connect([network.info.rpc_url])
        store = SqliteCursorStore(tmp_path / f"c-{iid[:10]}.sqlite")
        try:
            contract = bind(w3, "Inference", network.info.contracts.address("Inference"))
            await EventPoller(w3, [contract], store, "probe", handle).poll_once()
        finally:
            await store.close()
            await w3.provider.disconnect()

    asyncio.run(main())
    return seen


def _group(base: str) -> dict:
    return next(g for g in httpx.get(f"{base}/v1/epochs/current").json()["groups"] if g["model"] == TINY)


def test_http_first_gives_exactly_one_finish(network: BackgroundDevnet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    host0, host1 = network.host(0), network.host(1)
    body, headers = request_with_first(network.info.demo_client_key, host0["address"], _group(host0["url"]),
                                       host1["address"])
    r = httpx.post(f"{host0['url']}/v1/chat/completions", content=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    iid = r.headers["x-dinfer-inference-id"]
    wait_status(host0["url"], iid, "FINISHED")
    time.sleep(2)  # room for a (wrong) second finish by the listener path
    events = _finish_events(network, iid, tmp_path)
    assert [e.name for e in events] == ["InferenceFinished"]
    assert "StartInference arrived before HTTP" not in log_of(network, "host1")


def test_chain_first_executes_once_from_the_chain_record(network: BackgroundDevnet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The TA (one attempt only) records the start but cannot reach the executor; the executor comes back, sees
    InferenceStarted without a local marker, fetches the signed request from the TA and finishes it."""
    host0, host2 = network.host(0), network.host(2)
    restart_with_env(network, "host0", {"DINFER_NODE__MAX_ATTEMPTS": "1"})
    try:
        body, headers = request_with_first(network.info.demo_client_key, host0["address"], _group(host0["url"]),
                                           host2["address"])
        network.kill("host2")
        r = httpx.post(f"{host0['url']}/v1/chat/completions", content=body, headers=headers, timeout=60)
        assert r.status_code == 503, r.text
        from dinfer.crypto import inference_id

        iid = "0x" + inference_id(bytes.fromhex(headers["x-dinfer-signature"][2:])).hex()
        wait_status(host0["url"], iid, "STARTED")
        network.revive("host2")
        done = wait_status(host0["url"], iid, "FINISHED", timeout=90)
        assert done["executor"] == host2["address"]
        assert "StartInference arrived before HTTP" in log_of(network, "host2")
        time.sleep(2)
        assert [e.name for e in _finish_events(network, iid, tmp_path)] == ["InferenceFinished"]
    finally:
        restart_with_env(network, "host0", {"DINFER_NODE__MAX_ATTEMPTS": "3"})
