"""The per-request path end to end over real processes: anvil, 3 host nodes, 3 ML nodes (tiny GGUF)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from network import (
    TINY,
    BackgroundDevnet,
    fresh_client,
    order_of,
    request_with_first,
    signed_chat,
    wait_status,
)

from dinfer import server_timing
from dinfer.auth import H_PREVIOUS, sign_dispatch
from dinfer.chain.backends import connect
from dinfer.chain.contracts.epochs import EpochsClient, MemberStatus
from dinfer.chain.contracts.inference import InferenceClient
from dinfer.chain.deploy import bind
from dinfer.chain.txqueue import TxSender
from dinfer.crypto import Keypair, inference_id
from dinfer.sdk import openai_client

pytestmark = pytest.mark.e2e


def _group(base: str) -> dict:
    groups = httpx.get(f"{base}/v1/epochs/current", timeout=10).json()["groups"]
    return next(g for g in groups if g["model"] == TINY)


def _post(base: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", content=body, headers=headers, timeout=120)


def _chain(network: BackgroundDevnet, coro_fn):  # type: ignore[no-untyped-def]
    """Run ``coro_fn(w3)`` against the devnet chain on a fresh loop."""
    async def main():  # type: ignore[no-untyped-def]
        w3 = connect([network.info.rpc_url])
        try:
            return await coro_fn(w3)
        finally:
            await w3.provider.disconnect()

    return asyncio.run(main())


def test_openai_client_streams_with_usage_and_the_chain_records_it(network: BackgroundDevnet) -> None:
    host = network.host(0)
    client = openai_client(host["url"] + "/v1", network.info.demo_client_key)
    raw = client.chat.completions.with_raw_response.create(
        model=TINY, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8, stream=True,
        stream_options={"include_usage": True},
    )
    iid = raw.headers["x-dinfer-inference-id"]
    price = int(raw.headers["x-dinfer-price"])
    assert {"engine", "mlnode", "ta"} <= set(server_timing.parse(raw.headers["server-timing"]))
    chunks = list(raw.parse())
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens >= 1 and usage.prompt_tokens >= 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert isinstance(text, str)
    done = wait_status(host["url"], iid, "FINISHED")
    assert done["prompt_tokens"] == usage.prompt_tokens and done["completion_tokens"] == usage.completion_tokens
    assert done["cost_wei"] == (usage.prompt_tokens + usage.completion_tokens) * price
    assert done["executor"] == raw.headers["x-dinfer-executor"]
    assert done["txs"]["start"].startswith("0x")


def test_non_streaming_chat_and_completions(network: BackgroundDevnet) -> None:
    base = network.host(1)["url"]
    ta = httpx.get(f"{base}/v1/identity").json()["address"]
    body, headers = signed_chat(network.info.demo_client_key, ta, "non stream")
    r = _post(base, body, headers)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["choices"][0]["message"]["role"] == "assistant"
    assert int(r.headers["x-dinfer-tokens"]) == data["usage"]["total_tokens"]
    assert int(r.headers["x-dinfer-cost"]) == data["usage"]["total_tokens"] * int(r.headers["x-dinfer-price"])
    from dinfer.auth import sign_headers

    cbody = json.dumps({"model": TINY, "prompt": "Once upon", "max_tokens": 5}).encode()
    cheaders = {**sign_headers(cbody, network.info.demo_client_key, ta), "content-type": "application/json"}
    r = httpx.post(f"{base}/v1/completions", content=cbody, timeout=60, headers=cheaders)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 5
    wait_status(base, r.headers["x-dinfer-inference-id"], "FINISHED")


def test_remote_executor_gets_paid(network: BackgroundDevnet) -> None:
    """The TA (host0) proxies to another host's executor API; that host finishes and earns."""
    host0, host2 = network.host(0), network.host(2)
    group = _group(host0["url"])
    body, headers = request_with_first(network.info.demo_client_key, host0["address"], group, host2["address"])
    r = _post(host0["url"], body, headers)
    assert r.status_code == 200, r.text
    assert r.headers["x-dinfer-executor"] == host2["address"]
    done = wait_status(host0["url"], r.headers["x-dinfer-inference-id"], "FINISHED")
    assert done["executor"] == host2["address"]
    # Server-Timing names each layer the answer went through, each containing the one below it
    timing = server_timing.parse(r.headers["server-timing"])
    assert list(timing) == ["mlnode-admit", "engine", "mlnode", "executor-admit", "executor", "ta-admit", "ta"]
    assert timing["engine"] <= timing["mlnode"] <= timing["executor"] <= timing["ta"], timing
    assert timing["executor-admit"] <= timing["executor"] and timing["ta-admit"] <= timing["ta"], timing


def test_an_executor_takes_work_only_from_a_host_and_in_order(network: BackgroundDevnet) -> None:
    """Straight to host2's executor API: refused while the order names host1 (ACTIVE) first, or when the dispatch
    is not signed by the TA the client chose; taken once the TA says it already tried every member before host2."""
    host0, host1, host2 = network.host(0), network.host(1), network.host(2)
    group = _group(host0["url"])
    body, headers = request_with_first(network.info.demo_client_key, host0["address"], group, host1["address"])
    order = order_of(headers, group)
    tried = {H_PREVIOUS: ",".join(order[: order.index(host2["address"])])}  # host1, and host0 if drawn before
    iid = "0x" + inference_id(bytes.fromhex(headers["x-dinfer-signature"][2:])).hex()
    url = f"{host2['url']}/v1/executor/chat/completions"

    def send(extra: dict[str, str]) -> httpx.Response:
        return httpx.post(url, content=body, headers={**headers, **extra}, timeout=120)

    r = send(sign_dispatch(iid, host2["address"], host0["key"]))
    assert r.status_code == 403 and host1["address"] in r.json()["error"]["message"], r.text
    r = send({**sign_dispatch(iid, host2["address"], host1["key"]), **tried})
    assert r.status_code == 401 and "dispatch signed by" in r.json()["error"]["message"], r.text
    r = send({**sign_dispatch(iid, host2["address"], host0["key"]), **tried})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant"


def test_metrics_after_traffic(network: BackgroundDevnet) -> None:
    text = httpx.get(f"{network.host(0)['url']}/metrics").text
    for series in ("dinfer_node_requests_total", "dinfer_node_executor_attempts_total", "dinfer_node_tokens_total",
                   "dinfer_node_tx_queue_depth", "dinfer_node_rpc_connections_healthy", "dinfer_node_mlnodes",
                   "dinfer_node_chain_records_total"):
        assert series in text, series
    assert 'dinfer_node_requests_total{route="chat",status="200"}' in text
    assert 'dinfer_node_mlnodes{state="INFERENCE"} 1.0' in text


def test_models_and_identity(network: BackgroundDevnet) -> None:
    base = network.host(0)["url"]
    models = httpx.get(f"{base}/v1/models").json()["data"]
    assert [m["id"] for m in models] == [TINY]
    assert models[0]["executors"] == 3 and models[0]["price_per_token"] > 0
    ident = httpx.get(f"{base}/v1/identity").json()
    assert ident["address"] == network.host(0)["address"]
    assert set(ident["contracts"]) >= {"Registry", "Epochs", "Inference"}


def test_inactive_executor_is_skipped_and_recorded(network: BackgroundDevnet) -> None:
    host0, host1 = network.host(0), network.host(1)
    owner = Keypair.from_private_key(network.info.owner_key)

    async def set_status(w3, status):  # type: ignore[no-untyped-def]
        epochs = EpochsClient(bind(w3, "Epochs", network.info.contracts.address("Epochs")), TxSender(w3, owner))
        await epochs.governance_set_status(host1["address"], status)

    _chain(network, lambda w3: set_status(w3, MemberStatus.INACTIVE))
    try:
        group = _group_seeing(host0["url"], host1["address"], "INACTIVE")
        body, headers = request_with_first(network.info.demo_client_key, host0["address"], group, host1["address"])
        r = _post(host0["url"], body, headers)
        assert r.status_code == 200, r.text
        assert r.headers["x-dinfer-executor"] != host1["address"]
        done = wait_status(host0["url"], r.headers["x-dinfer-inference-id"], "FINISHED")
        assert done["skipped"] == [host1["address"]]
    finally:
        _chain(network, lambda w3: set_status(w3, MemberStatus.ACTIVE))
        _group_seeing(host0["url"], host1["address"], "ACTIVE")


def _group_seeing(base: str, member: str, status: str, timeout: float = 15) -> dict:
    """The group once the TA's view (``/v1/epochs/current`` reads the TA's status cache, which answers stale for a
    few seconds while it re-reads) shows ``member`` with ``status``."""
    deadline = time.monotonic() + timeout
    while True:
        group = _group(base)
        if group["statuses"][group["members"].index(member)] == status:
            return group
        assert time.monotonic() < deadline, f"the TA still sees {member} as {group['statuses']}"
        time.sleep(0.2)


def test_killed_executor_falls_back_with_reassign_and_miss(network: BackgroundDevnet) -> None:
    host0, host2 = network.host(0), network.host(2)
    group = _group(host0["url"])
    body, headers = request_with_first(network.info.demo_client_key, host0["address"], group, host2["address"])
    expected_next = next(m for m in order_of(headers, group) if m != host2["address"])
    network.kill("host2")
    try:
        r = _post(host0["url"], body, headers)
        assert r.status_code == 200, r.text
        assert r.headers["x-dinfer-executor"] == expected_next
        assert r.headers["x-dinfer-attempts"] == "2"
        iid = r.headers["x-dinfer-inference-id"]
        done = wait_status(host0["url"], iid, "FINISHED")
        assert done["reassigned"] is True and done["executor"] == expected_next
        assert [a["outcome"] for a in done["attempts"]] == ["failed", "ok"]

        async def stats(w3):  # type: ignore[no-untyped-def]
            inference = InferenceClient(bind(w3, "Inference", network.info.contracts.address("Inference")))
            return await inference.executor_stats(done["epoch"], host2["address"])

        assert _chain(network, stats).missed >= 1
    finally:
        network.revive("host2")


def test_rate_limit_429_with_retry_after(network: BackgroundDevnet) -> None:
    base = network.host(1)["url"]
    ta = network.host(1)["address"]
    client = fresh_client()
    # no escrow needed to be refused by the limiter: every request below fails at 402 after the limiter took a token
    codes = []
    for n in range(25):
        body, headers = signed_chat(client.private_key, ta, f"x{n}")
        r = _post(base, body, headers)
        codes.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["type"] == "rate_limit_error"
            break
    assert 429 in codes and set(codes[:-1]) == {402}


@pytest.mark.parametrize(("mutate", "status", "needle"), [
    (lambda b, h: (b"{not json", h), 400, "not valid JSON"),
    (lambda b, h: (json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]}).encode(), h),
     401, "not by"),  # body changed after signing: the signature no longer matches
    (lambda b, h: (b, {k: v for k, v in h.items() if not k.startswith("x-dinfer")}), 401, "dinfer.sdk.openai_client"),
    (lambda b, h: (b, {**h, "content-type": "text/plain"}), 415, "application/json"),
])
def test_bad_requests_are_refused_and_nothing_is_recorded(network: BackgroundDevnet, mutate, status: int,
                                                          needle: str) -> None:
    base, ta = network.host(0)["url"], network.host(0)["address"]
    body, headers = signed_chat(network.info.demo_client_key, ta, "bad")
    body, headers = mutate(body, headers)
    r = _post(base, body, headers)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
    if "x-dinfer-signature" in headers:
        from dinfer.crypto import inference_id

        iid = "0x" + inference_id(bytes.fromhex(headers["x-dinfer-signature"][2:])).hex()
        assert httpx.get(f"{base}/v1/inference/{iid}").status_code == 404


@pytest.mark.parametrize(("fields", "status", "needle"), [
    ({"model": "unknown/model"}, 404, "not served"),
    ({"messages": []}, 400, "messages"),
    ({"max_tokens": 0}, 400, "max_tokens"),
    ({"max_tokens": 100_000}, 400, "above this node's limit"),
    ({"temperature": -1}, 400, "temperature"),
])
def test_invalid_fields(network: BackgroundDevnet, fields: dict, status: int, needle: str) -> None:
    base, ta = network.host(0)["url"], network.host(0)["address"]
    body = json.dumps({"model": TINY, "messages": [{"role": "user", "content": "x"}], **fields}).encode()
    from dinfer.auth import sign_headers

    r = _post(base, body, {**sign_headers(body, network.info.demo_client_key, ta), "content-type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_oversized_expired_unfunded_and_replayed(network: BackgroundDevnet) -> None:
    base, ta = network.host(0)["url"], network.host(0)["address"]
    key = network.info.demo_client_key
    big, headers = signed_chat(key, ta, "x" * 1_100_000)
    assert _post(base, big, headers).status_code == 413
    body, headers = signed_chat(key, ta, "old", timestamp=int(time.time()) - 3600)
    r = _post(base, body, headers)
    assert r.status_code == 401 and "re-sign" in r.json()["error"]["message"]
    poor = fresh_client()
    body, headers = signed_chat(poor.private_key, ta, "pay me")
    r = _post(base, body, headers)
    assert r.status_code == 402 and "reserves" in r.json()["error"]["message"]
    body, headers = signed_chat(key, ta, "once")
    assert _post(base, body, headers).status_code == 200
    r = _post(base, body, headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "replay"


def test_tokenize_counts_with_the_served_model(network: BackgroundDevnet) -> None:
    base = network.host(0)["url"]
    plain = httpx.post(f"{base}/v1/tokenize", json={"model": TINY, "content": "hello world"}, timeout=30)
    assert plain.status_code == 200, plain.text
    assert plain.json()["count"] == len(plain.json()["tokens"]) > 0
    chat = httpx.post(f"{base}/v1/tokenize", json={"model": TINY, "messages": [{"role": "user", "content": "hi"}]},
                      timeout=30)
    assert chat.status_code == 200 and chat.json()["count"] > plain.json()["count"] - 5
    bad = {
        "unknown model": ({"model": "nope", "content": "x"}, 404),
        "both": ({"model": TINY, "content": "x", "messages": []}, 400),
        "neither": ({"model": TINY}, 400),
        "not json": (None, 400),
    }
    for name, (payload, status) in bad.items():
        r = (httpx.post(f"{base}/v1/tokenize", content=b"{nope", timeout=30) if payload is None
             else httpx.post(f"{base}/v1/tokenize", json=payload, timeout=30))
        assert r.status_code == status, (name, r.text)
        assert r.json()["error"]["message"], name
