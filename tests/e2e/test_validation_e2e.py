"""Inference validation over real processes (issue #8): 3 hosts validating each other at a sampling rate of 1.

Honest executors get ≥ 50 inferences validated without a single dispute. Then host2 cheats three ways — answering
from another model (SmolLM2 loaded under the tiny model's id), over-counting tokens and truncating answers (a real
proxy in front of its ML node tampering with the answers) — and every cheat is confirmed invalid by a dispute, the
client refunded, and at ``invalid_threshold`` = 3 host2 becomes INVALID and loses 20 % of its collateral.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cheating_proxy import CheatingProxy
from network import TINY, BackgroundDevnet, make_settings, request_with_first, running, wait_status

from dinfer.auth import sign_payload_fetch
from dinfer.chain.backends import connect
from dinfer.chain.contracts.epochs import EpochsClient, MemberStatus
from dinfer.chain.contracts.inference import InferenceClient, InferenceStatus, ValidationOutcome
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.deploy import bind
from dinfer.crypto import Keypair
from dinfer.mlnode.models import SMOLLM2_ID, packaged_model_path

# `make test-full` only: its own 3-host devnet and ~150 inferences (~2.5 min); the verdict rules, the scorer and the
# contract are covered by unit and contract tests in `make test`.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HONEST_INFERENCES = 50


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[BackgroundDevnet]:
    params = {"validation_rate_bps": 10_000, "invalid_threshold": 3, "validation_window_blocks": 2_000}
    with running(make_settings(tmp_path_factory.mktemp("validation"), tiny_model, params=params)) as net:
        yield net


def _chain(network: BackgroundDevnet, fn: Any) -> Any:
    async def main() -> Any:
        w3 = connect([network.info.rpc_url])
        try:
            contracts = network.info.contracts
            inference = InferenceClient(bind(w3, "Inference", contracts.address("Inference")))
            epochs = EpochsClient(bind(w3, "Epochs", contracts.address("Epochs")))
            registry = RegistryClient(bind(w3, "Registry", contracts.address("Registry")))
            return await fn(inference, await inference.validation_client(), epochs, registry)
        finally:
            await w3.provider.disconnect()

    return asyncio.run(main())


def _group(base: str) -> dict[str, Any]:
    groups = httpx.get(f"{base}/v1/epochs/current", timeout=10).json()["groups"]
    return next(g for g in groups if g["model"] == TINY)


def _infer(network: BackgroundDevnet, executor: str, n: int, *, wait: bool = True) -> str:
    host0 = network.host(0)
    body, headers = request_with_first(network.info.demo_client_key, host0["address"], _group(host0["url"]),
                                       executor, max_tokens=8, temperature=1.0, seed=n)
    r = httpx.post(f"{host0['url']}/v1/chat/completions", content=body, headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["x-dinfer-executor"] == executor
    assert "logprobs" not in r.json()["choices"][0] or r.json()["choices"][0]["logprobs"] is None
    iid = r.headers["x-dinfer-inference-id"]
    if wait:
        wait_status(host0["url"], iid, "FINISHED")
    return iid


def _wait_validations(network: BackgroundDevnet, ids: list[str], *, at_least: int, timeout: float) -> list[Any]:
    async def states(inference, validation, epochs, registry):  # type: ignore[no-untyped-def]
        return [await validation.validation_of(bytes.fromhex(i[2:])) for i in ids]

    deadline = time.monotonic() + timeout
    while True:
        got = _chain(network, states)
        if all(s.validations >= at_least for s in got) or time.monotonic() > deadline:
            return got
        time.sleep(2)


@pytest.mark.timeout(600)
def test_honest_executors_are_validated_and_never_invalidated(network: BackgroundDevnet) -> None:
    honest = [network.host(0)["address"], network.host(1)["address"]]
    ids = [_infer(network, honest[n % 2], n, wait=False) for n in range(HONEST_INFERENCES)]
    for iid in ids:
        wait_status(network.host(0)["url"], iid, "FINISHED")
    states = _wait_validations(network, ids, at_least=2, timeout=400)
    assert sum(s.validations >= 1 for s in states) >= HONEST_INFERENCES
    assert all(s.validations == 2 for s in states), [s.validations for s in states]
    assert all(s.outcome == ValidationOutcome.NONE for s in states)

    async def counts(inference, validation, epochs, registry):  # type: ignore[no-untyped-def]
        epoch = await epochs.current_epoch()
        return ([await validation.invalid_count(epoch, h) for h in honest],
                [await inference.earnings(network.host(i)["address"]) for i in range(3)])

    invalid, earnings = _chain(network, counts)
    assert invalid == [0, 0]
    assert earnings[2] > 0, "host2 executed nothing here: its earnings are validation fees"


def test_payload_goes_only_to_selected_validators(network: BackgroundDevnet) -> None:
    host0, host1 = network.host(0), network.host(1)
    iid = _infer(network, host0["address"], 500)
    url = f"{host0['url']}/v1/executor/payload/{iid}"
    ok = httpx.get(url, headers=sign_payload_fetch(iid, host1["key"]), timeout=30)
    assert ok.status_code == 200, ok.text
    payload = ok.json()
    assert payload["claims"] and len(payload["claims"]) == payload["completion_tokens"]
    assert bytes.fromhex(payload["body_hex"]).startswith(b"{")
    refused = {
        "unsigned": httpx.get(url, timeout=30),
        "stale": httpx.get(url, headers=sign_payload_fetch(iid, host1["key"], timestamp=1_000), timeout=30),
        "outsider": httpx.get(url, headers=sign_payload_fetch(iid, Keypair.generate().private_key), timeout=30),
        "executor": httpx.get(url, headers=sign_payload_fetch(iid, host0["key"]), timeout=30),
        "unknown": httpx.get(f"{host0['url']}/v1/executor/payload/0x{'ab' * 32}",
                             headers=sign_payload_fetch("0x" + "ab" * 32, host1["key"]), timeout=30),
        "not an id": httpx.get(f"{host0['url']}/v1/executor/payload/xyz",
                               headers=sign_payload_fetch("0x", host1["key"]), timeout=30),
    }
    assert {k: r.status_code for k, r in refused.items()} == {
        "unsigned": 401, "stale": 401, "outsider": 403, "executor": 403, "unknown": 404, "not an id": 400}
    assert all(r.json()["error"]["message"] for r in refused.values())


@pytest.fixture(scope="module")
def proxy(network: BackgroundDevnet) -> Iterator[CheatingProxy]:
    """host2's ML node re-registered behind the cheating proxy (no reload, no chain change)."""
    host2 = network.host(2)
    ml = host2["mlnodes"][0]
    cheat = CheatingProxy(ml["url"]).start()
    admin = host2["admin_url"]
    assert httpx.delete(f"{admin}/admin/mlnodes/{ml['node_id']}", timeout=30).status_code == 200
    r = httpx.post(f"{admin}/admin/mlnodes", json={"node_id": ml["node_id"], "url": cheat.url, "models": [TINY],
                                                  "load": False, "on_chain": False}, timeout=60)
    assert r.status_code == 201, r.text
    yield cheat
    cheat.stop()


def _reload(host: dict[str, Any], model_path: Path | str) -> None:
    """Load another GGUF on the host's ML node under the tiny model's id; wait until the host node serves it."""
    url = host["mlnodes"][0]["url"]
    r = httpx.post(f"{url}/api/v1/inference/up", json={"model": TINY, "model_path": str(model_path)}, timeout=300)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60
    while True:
        health = httpx.get(f"{host['url']}/health", timeout=10).json()
        if TINY in health["serving"] and set(health["mlnodes"].values()) == {"INFERENCE"}:
            break
        assert time.monotonic() < deadline, f"host does not serve the model again: {health}"
        time.sleep(0.5)
    # a first answer after a load is slow (weights paged in): keep it out of the executor's time-to-first-token
    warm = {"model": TINY, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert httpx.post(f"{url}/v1/chat/completions", json=warm, timeout=300).status_code == 200


@pytest.mark.timeout(600)
def test_every_cheat_is_confirmed_refunded_and_slashed(network: BackgroundDevnet, proxy: CheatingProxy,
                                                      tiny_model: Path) -> None:
    cheater = network.host(2)["address"]

    async def before(inference, validation, epochs, registry):  # type: ignore[no-untyped-def]
        return await registry.collateral_of(cheater), await inference.balance_of(network.info.demo_client_address)

    collateral_before, _ = _chain(network, before)
    ids = []
    smollm2 = packaged_model_path(SMOLLM2_ID)
    assert smollm2 is not None
    _reload(network.host(2), smollm2)  # another model behind the same model id
    try:
        ids.append(_infer(network, cheater, 1000))
    finally:
        _reload(network.host(2), tiny_model)
    for mode in ("overcount", "truncate"):
        proxy.mode = mode
        ids.append(_infer(network, cheater, 2000 + len(ids)))
    proxy.mode = "honest"
    assert proxy.tampered == 2

    deadline = time.monotonic() + 240

    async def outcome(inference, validation, epochs, registry):  # type: ignore[no-untyped-def]
        raw = [bytes.fromhex(i[2:]) for i in ids]
        epoch = await epochs.current_epoch()
        return ([await validation.validation_of(r) for r in raw], [await inference.get_inference(r) for r in raw],
                await validation.invalid_count(epoch, cheater), await validation.invalid_slashed(epoch, cheater),
                await epochs.status_of(epoch, cheater), await registry.collateral_of(cheater))

    while True:
        states, infos, count, slashed, status, collateral = _chain(network, outcome)
        if all(s.outcome == ValidationOutcome.CONFIRMED_INVALID for s in states) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert [s.outcome for s in states] == [ValidationOutcome.CONFIRMED_INVALID] * 3
    assert all(i.status == InferenceStatus.INVALIDATED for i in infos)
    assert count == 3 and slashed
    assert status == MemberStatus.INVALID
    assert collateral == collateral_before - collateral_before * 2_000 // 10_000
