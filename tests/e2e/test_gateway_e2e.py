"""API-key gateway on the shared devnet: the official ``openai`` client (only ``base_url`` and ``api_key`` set) streams
through host0 with a ``dk-…`` key made and funded by ``dinfer keys create``; the chain records the inference from
the key's own account; caps, low balance, bad keys and revocation are refused before anything is charged; keys survive
a restart and a wrong key-encryption key stops the node; no key ever reaches a response after creation or the log."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from network import TINY, BackgroundDevnet, log_of, restart_with_env, wait_status

from dinfer.chain.backends import connect
from dinfer.chain.contracts.inference import InferenceClient
from dinfer.chain.deploy import bind
from dinfer.chain.txqueue import TxSender
from dinfer.crypto import Keypair
from dinfer.node.api_keys import KeyCipher

pytestmark = pytest.mark.e2e

ETH = 10**18
PRICE = 100_000_000  # the tiny model's governance price (genesis/devnet.toml)
DEPOSIT = 10**15
KEK = KeyCipher.generate_hex()


@dataclass
class Gw:
    net: BackgroundDevnet
    url: str
    admin: str
    client: Keypair
    secrets: list[str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dinfer.cli", "keys", *args, "--node", self.url, "--key",
                               self.client.private_key], capture_output=True, text=True, timeout=180, check=False)

    def openai(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key)

    def chain_info(self, iid: str) -> Any:
        async def read() -> Any:
            w3 = connect([self.net.info.rpc_url])
            try:
                inference = InferenceClient(bind(w3, "Inference", self.net.info.contracts.address("Inference")), None)
                return await inference.get_inference(bytes.fromhex(iid[2:]))
            finally:
                await w3.provider.disconnect()

        return asyncio.run(read())


def _fund(net: BackgroundDevnet, to: str, value: int) -> None:
    async def send() -> None:
        w3 = connect([net.info.rpc_url])
        bank = TxSender(w3, Keypair.from_private_key(net.info.demo_client_key), poll_interval=0.1)
        try:
            await bank.transact({"to": to, "value": value}, gas=21_000)
        finally:
            await bank.close()
            await w3.provider.disconnect()

    asyncio.run(send())


@pytest.fixture(scope="module")
def gw(network: BackgroundDevnet) -> Iterator[Gw]:
    """host0 restarted with a key-encryption key (the gateway on); a fresh client with 1 ETH owns the keys."""
    restart_with_env(network, "host0", {"DINFER_NODE__KEY_ENCRYPTION_KEY": KEK})
    client = Keypair.generate()
    _fund(network, client.address, ETH)
    host = network.host(0)
    yield Gw(network, host["url"], host["admin_url"], client, [])


def _create(gw: Gw, *extra: str) -> dict[str, Any]:
    proc = gw.cli("create", "--rpc", gw.net.info.rpc_url, *extra)
    assert proc.returncode == 0, proc.stderr
    created = json.loads(proc.stdout)
    gw.secrets.append(created["key"])
    return dict(created)


def _chat(client: openai.OpenAI, content: str = "hello", max_tokens: int = 8) -> Any:
    return client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": content}],
                                          max_tokens=max_tokens)


def test_openai_client_streams_through_a_funded_key(gw: Gw) -> None:
    created = _create(gw, "--deposit", str(DEPOSIT), "--name", "stream")
    key, account = created["key"], created["account"]
    assert key.startswith("dk-") and created["escrow_wei"] == DEPOSIT

    client = gw.openai(key)
    with client.chat.completions.with_streaming_response.create(
        model=TINY, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8, stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        iid = resp.headers["x-dinfer-inference-id"]
        chunks = list(resp.parse())
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens >= 1
    assert any(c.choices and c.choices[0].delta.content for c in chunks)

    # The chain has the start and the finish, with the key's own account as the paying client.
    done = wait_status(gw.url, iid, "FINISHED", timeout=90)
    assert done["client"] == account and done["txs"].get("start")
    info = gw.chain_info(iid)
    assert info.client == account and info.status.name == "FINISHED"
    assert info.prompt_tokens == usage.prompt_tokens and info.completion_tokens == usage.completion_tokens

    # Balance and usage through the key itself (no chain key needed), never echoing the key.
    bearer = {"authorization": f"Bearer {key}"}
    detail = httpx.get(f"{gw.url}/v1/keys/{created['id']}", headers=bearer, timeout=30)
    assert detail.status_code == 200 and key not in detail.text
    assert detail.json()["escrow_wei"] == DEPOSIT - info.cost
    use = httpx.get(f"{gw.url}/v1/usage", headers=bearer, timeout=30).json()
    (row,) = use["data"]
    assert row["key_id"] == created["id"] and row["requests"] == 1
    assert row["total_tokens"] == usage.total_tokens and row["cost_wei"] == usage.total_tokens * PRICE

    # Signed requests keep working unchanged next to the gateway (the CLI's own signed chat).
    proc = subprocess.run([sys.executable, "-m", "dinfer.cli", "chat", "Hi", "--model", TINY, "--max-tokens", "4",
                           "--base-url", f"{gw.url}/v1", "--key", gw.net.info.demo_client_key, "--json"],
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["usage"]["completion_tokens"] >= 1
    listed = gw.cli("list")
    assert listed.returncode == 0 and created["id"] in listed.stdout and key not in listed.stdout


def test_bad_keys_caps_and_low_balance_are_refused_before_any_charge(gw: Gw) -> None:
    for bad in ("dk-not-a-key", "dk-" + "0" * 16 + "_" + "A" * 43):
        with pytest.raises(openai.AuthenticationError) as err:
            _chat(gw.openai(bad))
        assert err.value.status_code == 401 and err.value.code == "invalid_api_key"

    capped = _create(gw, "--deposit", str(DEPOSIT), "--max-request-wei", str(PRICE * 10))
    with pytest.raises(openai.APIStatusError) as over:
        _chat(gw.openai(capped["key"]), max_tokens=64)
    assert over.value.status_code == 402 and over.value.code == "key_request_cap"
    assert "max_request_wei" in over.value.message

    daily = _create(gw, "--deposit", str(DEPOSIT))
    _chat(gw.openai(daily["key"]))
    spent = httpx.get(f"{gw.url}/v1/keys/{daily['id']}", headers={"authorization": f"Bearer {daily['key']}"},
                      timeout=30).json()["spent_today_wei"]
    set_cap = httpx.post(f"{gw.admin}/v1/keys/{daily['id']}/limits", json={"max_daily_wei": spent + PRICE},
                         timeout=30)
    assert set_cap.status_code == 200, set_cap.text
    with pytest.raises(openai.APIStatusError) as day:
        _chat(gw.openai(daily["key"]))
    assert day.value.status_code == 402 and day.value.code == "key_daily_cap"

    empty = _create(gw, "--deposit", "0")
    with pytest.raises(openai.APIStatusError) as low:
        _chat(gw.openai(empty["key"]))
    assert low.value.status_code == 402 and low.value.code == "insufficient_balance"
    assert "reserves" in low.value.message and empty["id"] in low.value.message

    # Nothing was charged or recorded for any refusal.
    for key in (capped, empty):
        detail = httpx.get(f"{gw.admin}/v1/keys/{key['id']}", timeout=30).json()
        assert detail["spent_total_wei"] == 0 and detail["reserved_wei"] == 0
    assert httpx.get(f"{gw.admin}/v1/keys/{capped['id']}", timeout=30).json()["escrow_wei"] == DEPOSIT


def test_revocation_is_immediate_and_bad_creation_is_refused(gw: Gw) -> None:
    created = _create(gw, "--deposit", str(DEPOSIT))
    client = gw.openai(created["key"])
    assert _chat(client).choices
    revoked = gw.cli("revoke", created["id"])
    assert revoked.returncode == 0, revoked.stderr
    with pytest.raises(openai.AuthenticationError) as err:
        _chat(client)
    assert "revoked" in err.value.message

    for body in ({"limits": {"max_daily_wei": 0}}, {"name": "x" * 65}, {"owner": "0x123"}, {"colour": "red"}):
        resp = httpx.post(f"{gw.admin}/v1/keys", json=body, timeout=30)
        assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error", body
    unsigned = httpx.post(f"{gw.url}/v1/keys", json={}, timeout=30)
    assert unsigned.status_code == 401 and "error" in unsigned.json()


def test_keys_survive_restart_and_a_wrong_kek_stops_the_node(gw: Gw) -> None:
    created = _create(gw, "--deposit", str(DEPOSIT))
    restart_with_env(gw.net, "host0", {"DINFER_NODE__KEY_ENCRYPTION_KEY": KEK})
    assert _chat(gw.openai(created["key"])).choices

    with pytest.raises(RuntimeError, match=r"do\s+not\s+decrypt\s+under\s+node\.key_encryption_key"):
        restart_with_env(gw.net, "host0", {"DINFER_NODE__KEY_ENCRYPTION_KEY": KeyCipher.generate_hex()})
    restart_with_env(gw.net, "host0", {"DINFER_NODE__KEY_ENCRYPTION_KEY": KEK})
    assert _chat(gw.openai(created["key"])).choices

    # No key ever reached the node's log.
    log = log_of(gw.net, "host0")
    leaked = [s[:8] for s in gw.secrets if s in log or s.partition("_")[2] in log]
    assert gw.secrets and not leaked
