"""API-key store and gateway pieces on real parts: the node's SQLite file, XChaCha20-Poly1305 (PyNaCl), a real
``TransferAgent`` over contracts deployed on py-evm, and the keys-request signatures."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from poc_hosts import clients, deploy

from dinfer import crypto
from dinfer.auth import H_SIGNATURE, AuthError, sign_headers, verify_headers
from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.txqueue import TxSender
from dinfer.config import NodeSettings
from dinfer.errors import ConfigError
from dinfer.genesis import Genesis
from dinfer.http_errors import HTTPError
from dinfer.http_stream import StreamClient
from dinfer.node.api_keys import ApiKey, KeyCipher, KeyLimits, KeyStore, day_of
from dinfer.node.broker import Broker
from dinfer.node.chain_view import ChainView
from dinfer.node.chain_writer import ChainWriter
from dinfer.node.executor import Executor
from dinfer.node.gateway import Gateway, bearer_key, check_caps, wants_gateway
from dinfer.node.keys_api import keys_digest, sign_keys_request, verify_keys_request
from dinfer.node.metrics import NodeMetrics
from dinfer.node.remote import ExecutorPeer
from dinfer.node.store import InferenceRecord, NodeStore
from dinfer.node.ta import TransferAgent
from dinfer.ratelimit import RateLimiter

KEK = "11" * 32
OTHER_KEK = "22" * 32
BIG = 3 * 2**64
"""More wei than SQLite's 64-bit integers hold."""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[NodeStore]:
    s = await NodeStore.open(tmp_path / "node.sqlite")
    yield s
    await s.close()


@pytest.fixture
async def keys(store: NodeStore) -> KeyStore:
    return await KeyStore.open(store, KeyCipher.from_hex(KEK))


# ------------------------------------------------------------ store round trip, hashing, encryption


async def test_create_round_trip_stores_only_hash_and_sealed_account(keys: KeyStore, store: NodeStore) -> None:
    limits = KeyLimits(max_request_wei=10, max_daily_wei=100, max_total_wei=BIG, rate_limit_per_minute=5)
    key, secret = await keys.create(owner="0x" + "ab" * 20, name="ci", limits=limits)

    assert secret.startswith(f"dk-{key.id}_") and len(secret) == 3 + 16 + 1 + 43
    got = await keys.get(key.id)
    assert got is not None and got.as_dict() == key.as_dict() and got.limits.max_total_wei == BIG
    assert [k.id for k in await keys.list("0x" + "ab" * 20)] == [key.id] and await keys.list("0x" + "cd" * 20) == []
    account = keys.account_of(got)
    assert account.address == key.account
    assert "key" not in key.as_dict() and "sealed" not in key.as_dict()

    with sqlite3.connect(store.path) as raw:  # what is at rest: the hash and ciphertext, never the secrets
        (row,) = raw.execute("SELECT hash, sealed FROM api_keys").fetchall()
        dump = "\n".join(raw.iterdump())
    assert row[0] == crypto.sha256(secret.encode()).hex()
    assert secret not in dump and secret.partition("_")[2] not in dump
    assert account.private_key[2:] not in dump and bytes.fromhex(account.private_key[2:]) not in bytes(row[1])


async def test_authenticate_good_malformed_unknown_and_revoked(keys: KeyStore) -> None:
    key, secret = await keys.create()
    assert (await keys.authenticate(secret)).id == key.id

    wrong_secret = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    unknown_id = "dk-" + "0" * 16 + secret[19:]
    for presented, words in [("dk-short", "malformed"), ("sk-" + secret[3:], "malformed"),
                             (secret + "x", "malformed"), (wrong_secret, "unknown"), (unknown_id, "unknown")]:
        with pytest.raises(HTTPError) as err:
            await keys.authenticate(presented)
        assert err.value.status == 401 and err.value.code == "invalid_api_key" and words in str(err.value)
        assert presented not in str(err.value)

    revoked = await keys.revoke(key.id)
    assert revoked.revoked and (await keys.revoke(key.id)).revoked_at == revoked.revoked_at  # idempotent
    with pytest.raises(HTTPError) as err:
        await keys.authenticate(secret)
    assert err.value.status == 401 and "revoked" in str(err.value) and secret not in str(err.value)
    with pytest.raises(HTTPError) as missing:
        await keys.revoke("f" * 16)
    assert missing.value.status == 404


async def test_store_survives_reopen_and_refuses_wrong_kek(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    first = await NodeStore.open(path)
    keys = await KeyStore.open(first, KeyCipher.from_hex(KEK))
    key, secret = await keys.create(name="persist")
    await first.close()

    wrong = await NodeStore.open(path)
    with pytest.raises(ConfigError, match=r"do not decrypt under node\.key_encryption_key.*_KEY_ENCRYPTION"):
        await KeyStore.open(wrong, KeyCipher.from_hex(OTHER_KEK))
    await wrong.close()

    again = await NodeStore.open(path)
    reopened = await KeyStore.open(again, KeyCipher.from_hex("0x" + KEK))
    got = await reopened.authenticate(secret)
    assert got.id == key.id and reopened.account_of(got).address == key.account
    await again.close()


def test_cipher_refuses_bad_keys_tampering_and_swapped_rows() -> None:
    for bad in ("zz" * 32, "11" * 31, ""):
        with pytest.raises(ConfigError, match="key_encryption_key"):
            KeyCipher.from_hex(bad)
    cipher = KeyCipher.from_hex(KeyCipher.generate_hex())
    sealed = cipher.seal(b"secret", b"row-a")
    assert cipher.open(sealed, b"row-a") == b"secret" and sealed != cipher.seal(b"secret", b"row-a")
    with pytest.raises(ConfigError):
        cipher.open(sealed, b"row-b")  # a sealed key moved to another row does not open
    with pytest.raises(ConfigError):
        cipher.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), b"row-a")


def test_limits_refuse_bad_values() -> None:
    for bad in ({"max_request_wei": 0}, {"max_daily_wei": -5}, {"rate_limit_per_minute": 0}, {"per_hour": 3}):
        with pytest.raises(ValueError):
            KeyLimits.model_validate(bad)


# ------------------------------------------------------------ caps and usage


def test_check_caps_names_each_limit() -> None:
    limits = KeyLimits(max_request_wei=100, max_daily_wei=500, max_total_wei=1000)
    check_caps("k", limits, reserve=100, spent_today=300, spent_total=800, pending=100)  # exactly at every cap
    cases = [
        ({"reserve": 101, "spent_today": 0, "spent_total": 0, "pending": 0}, "key_request_cap", "max_request_wei"),
        ({"reserve": 50, "spent_today": 400, "spent_total": 400, "pending": 60}, "key_daily_cap", "max_daily_wei"),
        ({"reserve": 50, "spent_today": 0, "spent_total": 900, "pending": 60}, "key_total_cap", "max_total_wei"),
    ]
    for kwargs, code, name in cases:
        with pytest.raises(HTTPError) as err:
            check_caps("k", limits, **kwargs)
        assert err.value.status == 402 and err.value.code == code and name in str(err.value)
    check_caps("k", KeyLimits(), reserve=BIG, spent_today=BIG, spent_total=BIG, pending=BIG)  # no limits


async def test_usage_adds_up_per_day_with_big_wei(keys: KeyStore) -> None:
    a, _ = await keys.create()
    b, _ = await keys.create()
    yesterday = time.time() - 86_400
    await keys.record_usage(a.id, prompt_tokens=3, completion_tokens=5, cost_wei=BIG, at=yesterday)
    await keys.record_usage(a.id, prompt_tokens=1, completion_tokens=2, cost_wei=BIG)
    await keys.record_usage(a.id, prompt_tokens=1, completion_tokens=0, cost_wei=7)
    await keys.record_usage(b.id, prompt_tokens=9, completion_tokens=9, cost_wei=1)

    today = day_of(time.time())
    assert await keys.spent(a.id, today) == (BIG + 7, 2 * BIG + 7)
    rows = [r.as_dict() for r in await keys.usage([a.id])]
    assert rows == [
        {"key_id": a.id, "day": day_of(yesterday), "requests": 1, "prompt_tokens": 3, "completion_tokens": 5,
         "total_tokens": 8, "cost_wei": BIG},
        {"key_id": a.id, "day": today, "requests": 2, "prompt_tokens": 2, "completion_tokens": 2,
         "total_tokens": 4, "cost_wei": BIG + 7},
    ]
    assert [r.key_id for r in await keys.usage([a.id, b.id], since_day=today)] == sorted([a.id, b.id])
    assert await keys.usage([]) == []


# ------------------------------------------------------------ the gateway around a real TransferAgent


@pytest.fixture
async def gateway(chain: EthTesterBackend, actors: Any, genesis: Genesis, keys: KeyStore,
                  store: NodeStore) -> AsyncIterator[Gateway]:
    deployment = await deploy(chain, actors.owner, genesis)
    sender = TxSender(chain.w3, actors.host, poll_interval=0.01)
    registry, epochs, inference = clients(chain, deployment, sender)
    settings = NodeSettings(gateway_rate_limit_per_minute=2)
    async with httpx.AsyncClient() as http:
        writer = ChainWriter(inference)
        broker = Broker(http)
        ta = TransferAgent(address=actors.host.address, settings=settings,
                           chain=ChainView(registry, epochs, inference), store=store, writer=writer,
                           executor=Executor(broker, store, writer, address=actors.host.address, ttft_timeout=5),
                           peers=ExecutorPeer(StreamClient(), actors.host.private_key), limiter=RateLimiter(600),
                           metrics=NodeMetrics())
        yield Gateway(keys, ta, store, settings)
        await writer.close()
        await sender.close()


async def test_gateway_signs_fresh_inference_ids_for_the_key_account(gateway: Gateway) -> None:
    key, secret = await gateway.keys.create()
    body = b'{"model": "m", "messages": []}'
    ids = []
    for _ in range(3):  # identical bodies in the same second: deterministic signatures must not repeat
        headers = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
        await gateway.sign(key, body, headers)
        signed = verify_headers(headers, body, ta_address=gateway.ta.address, window_s=60)
        assert signed.client == key.account
        ids.append(signed.inference_id)
    assert len(set(ids)) == 3

    # An id already seen by the TA (e.g. before a restart) is skipped too.
    other, _ = await gateway.keys.create()
    ts = int(time.time())
    taken = sign_headers(body, gateway.account(other).private_key, gateway.ta.address, timestamp=ts)
    gateway.store.seen.add("0x" + crypto.inference_id(bytes.fromhex(taken[H_SIGNATURE][2:])).hex(), "1")
    headers = {}
    await gateway.sign(other, body, headers)
    assert headers[H_SIGNATURE] != taken[H_SIGNATURE]


async def test_gateway_rate_limit_revocation_and_reservations(gateway: Gateway,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key, secret = await gateway.keys.create(limits=KeyLimits(max_daily_wei=1000))
    auth = {"authorization": f"Bearer {secret}"}
    assert (await gateway.agent(auth)).key.id == key.id
    assert (await gateway.agent(auth)).key.id == key.id
    with pytest.raises(HTTPError) as limited:  # node default: 2 requests/minute per key
        await gateway.agent(auth)
    assert limited.value.status == 429 and int(limited.value.headers["Retry-After"]) >= 1
    assert "2 requests/minute" in str(limited.value)

    await gateway.reserve(key, "0x01", 600)
    with pytest.raises(HTTPError) as capped:  # 600 in flight + 500 > 1000
        await gateway.reserve(key, "0x02", 500)
    assert capped.value.status == 402 and capped.value.code == "key_daily_cap"
    assert gateway.pending_wei(key.id) == 600
    record = InferenceRecord(id="0x01", role="ta", model="m", client=key.account, ta=gateway.ta.address,
                             status="COMPLETED", prompt_tokens=4, completion_tokens=6, cost_wei=450)
    await gateway.settle(key, record)  # the reservation becomes the real cost
    assert gateway.pending_wei(key.id) == 0
    await gateway.reserve(key, "0x02", 500)
    with pytest.raises(HTTPError):
        await gateway.reserve(key, "0x03", 51)

    await gateway.keys.revoke(key.id)
    with pytest.raises(HTTPError) as revoked:
        await gateway.agent(auth)
    assert revoked.value.status == 401 and "revoked" in str(revoked.value)
    assert caplog.records and secret not in caplog.text and secret.partition("_")[2] not in caplog.text


def test_only_unsigned_dk_bearers_take_the_gateway() -> None:
    secret = "dk-" + "a" * 16 + "_" + "b" * 43
    assert bearer_key({"authorization": f"Bearer {secret}"}) == secret
    assert wants_gateway({"authorization": f"bearer {secret}"})
    assert not wants_gateway({"authorization": f"Bearer {secret}", H_SIGNATURE: "0x00"})  # signed: TA path
    assert not wants_gateway({"authorization": "Bearer dinfer-signed-requests"})
    assert not wants_gateway({"authorization": f"Basic {secret}"}) and not wants_gateway({})


# ------------------------------------------------------------ keys-request signatures


def test_keys_signature_binds_method_path_body_and_node(actors: Any) -> None:
    client, node = actors.client, actors.host.address
    body = b'{"name": "x"}'
    headers = sign_keys_request("POST", "/v1/keys", body, client.private_key, node)
    assert verify_keys_request(headers, "POST", "/v1/keys", body, ta=node, window_s=60) == client.address
    for method, path, other_body, ta in [("GET", "/v1/keys", body, node), ("POST", "/v1/keys/x/revoke", body, node),
                                         ("POST", "/v1/keys", b"{}", node),
                                         ("POST", "/v1/keys", body, actors.host2.address)]:
        with pytest.raises(AuthError):
            verify_keys_request(headers, method, path, other_body, ta=ta, window_s=60)
    with pytest.raises(AuthError, match="from now"):
        verify_keys_request(headers, "POST", "/v1/keys", body, ta=node, window_s=60, now=time.time() + 120)
    with pytest.raises(AuthError, match="sign keys requests"):
        verify_keys_request({}, "POST", "/v1/keys", body, ta=node, window_s=60)
    # An inference authorisation over the same body is no keys signature (domain separation), and vice versa.
    inference = sign_headers(body, client.private_key, node)
    with pytest.raises(AuthError):
        verify_keys_request(inference, "POST", "/v1/keys", body, ta=node, window_s=60)
    with pytest.raises(AuthError):
        verify_headers(headers, body, ta_address=node, window_s=60)
    assert keys_digest("post", "/v1/keys", body, 1, node) == keys_digest("POST", "/v1/keys", body, 1, node)


def test_api_key_dict_has_no_secrets() -> None:
    key = ApiKey(id="a" * 16, owner="", account=crypto.Address("0x" + "00" * 20), name="n", limits=KeyLimits(),
                 created_at=1.0, key_hash="h" * 64, sealed=b"s" * 72)
    assert set(key.as_dict()) == {"id", "object", "name", "owner", "account", "limits", "created_at", "revoked",
                                  "revoked_at"}
    assert "h" * 64 not in repr(key)
