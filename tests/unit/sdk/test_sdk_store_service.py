"""``dinfer store`` over real loopback HTTP: signed writes, public reads, limits, and the SDK's HTTP backend."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.fixtures.processes import REPO, _stop, _wait_http
from tests.fixtures.servers import free_port, serve_app

from dinfer.crypto import Keypair
from dinfer.retry import RetryPolicy
from dinfer.sdk import AsyncConversationStore, ConversationStore, HttpBackend
from dinfer.sdk.conversations import BlobTooLarge, StoreAuthRejected, StoreUnavailable
from dinfer.sdk.conversations.signing import sign_write
from dinfer.store_service import StoreServiceConfig, create_store_app

ALICE = Keypair.from_private_key("0x" + "11" * 32)
MALLORY = Keypair.from_private_key("0x" + "66" * 32)
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
NS = f"/v1/store/{ALICE.address.lower()}"
BLOB = b"\x01sealed-looking bytes"
BLOB_ID = hashlib.sha256(BLOB).hexdigest()
FAST_RETRY = RetryPolicy(min_backoff=0.01, max_backoff=0.02, max_retries=1)


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    config = StoreServiceConfig(data_dir=tmp_path / "store", max_blob_bytes=4096, max_head_bytes=2048)
    async with serve_app(create_store_app(config)) as base:
        yield base


def signed(method: str, path: str, body: bytes = b"", who: Keypair = ALICE, cond: str = "",
           **kw: int) -> dict[str, str]:
    return sign_write(method, path, body, who.private_key, who.address, cond=cond, **kw)


async def test_signed_blob_write_then_public_read(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        path = f"{NS}/blobs/{BLOB_ID}"
        assert (await http.put(path, content=BLOB, headers=signed("PUT", path, BLOB))).status_code == 204
        got = await http.get(path)  # no signature needed to read: blobs are ciphertext
        assert got.status_code == 200 and got.content == BLOB
        assert (await http.head(path)).status_code == 200
        assert (await http.get(f"{NS}/blobs")).json() == {"blobs": [BLOB_ID], "next": None}
        assert (await http.delete(path, headers=signed("DELETE", path))).status_code == 204
        assert (await http.get(path)).status_code == 404
        assert (await http.head(path)).status_code == 404


@pytest.mark.parametrize(("case", "status", "message"), [
    ("unsigned", 401, "unsigned write"),
    ("other key", 403, "only the owner may write"),
    ("claims owner, signed by other", 403, "only the owner may write"),
    ("signature for another body", 403, "only the owner may write"),
    ("signature for another path", 403, "only the owner may write"),
    ("stale", 401, "stale write signature"),
    ("garbled", 401, "malformed signature headers"),
    ("truncated signature", 401, "bad write signature"),
])
async def test_writes_without_the_owners_signature_are_refused(url: str, case: str, status: int,
                                                               message: str) -> None:
    path = f"{NS}/blobs/{BLOB_ID}"
    headers = {
        "unsigned": {},
        "other key": signed("PUT", path, BLOB, who=MALLORY),
        "claims owner, signed by other": {**signed("PUT", path, BLOB, who=MALLORY), "x-dinfer-address":
                                          ALICE.address},
        "signature for another body": signed("PUT", path, b"something else"),
        "signature for another path": signed("PUT", f"{NS}/blobs/{'0' * 64}", BLOB),
        "stale": signed("PUT", path, BLOB, timestamp=int(time.time()) - 3600),
        "garbled": {**signed("PUT", path, BLOB), "x-dinfer-signature": "0xnothex"},
        "truncated signature": {**signed("PUT", path, BLOB), "x-dinfer-signature": "0x" + "ab" * 10},
    }[case]
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.put(path, content=BLOB, headers=headers)
        assert response.status_code == status, response.text
        assert message in response.json()["error"]["message"]
        assert (await http.get(path)).status_code == 404  # nothing was written
        # deletes are guarded the same way
        assert (await http.put(path, content=BLOB, headers=signed("PUT", path, BLOB))).status_code == 204
        assert (await http.delete(path, headers=signed("DELETE", path, who=MALLORY))).status_code == 403
        assert (await http.delete(path)).status_code == 401
        assert (await http.get(path)).content == BLOB


async def test_bad_writes_are_refused_with_reasons(url: str) -> None:
    conv = "c" * 32
    head = f"{NS}/heads/{conv}"
    async with httpx.AsyncClient(base_url=url) as http:
        wrong = f"{NS}/blobs/{'0' * 64}"
        r = await http.put(wrong, content=BLOB, headers=signed("PUT", wrong, BLOB))
        assert r.status_code == 400 and "not the sha256" in r.json()["error"]["message"]
        big = b"x" * 5000
        big_path = f"{NS}/blobs/{hashlib.sha256(big).hexdigest()}"
        r = await http.put(big_path, content=big, headers=signed("PUT", big_path, big))
        assert r.status_code == 413 and "limit of 4096" in r.json()["error"]["message"]
        r = await http.put(head, content=b"h1", headers=signed("PUT", head, b"h1"))
        assert r.status_code == 428
        create = {"If-None-Match": "*", **signed("PUT", head, b"h1", cond="if-none-match:*")}
        assert (await http.put(head, content=b"h1", headers=create)).status_code == 204
        again = await http.put(head, content=b"h1", headers=create)
        assert again.status_code == 412  # it exists now
        etag = hashlib.sha256(b"h1").hexdigest()
        got = await http.get(head)
        assert got.content == b"h1" and got.headers["etag"] == f'"{etag}"'
        # a signature made for one precondition does not authorise another
        swap = {"If-Match": f'"{etag}"', **signed("PUT", head, b"h2", cond="if-none-match:*")}
        assert (await http.put(head, content=b"h2", headers=swap)).status_code == 403
        swap = {"If-Match": f'"{etag}"', **signed("PUT", head, b"h2", cond=f"if-match:{etag}")}
        assert (await http.put(head, content=b"h2", headers=swap)).status_code == 204
        replay = await http.put(head, content=b"h2", headers=swap)  # the captured write cannot be replayed
        assert replay.status_code == 412
        assert (await http.get(f"{NS}/heads")).json() == {"heads": [conv]}
        assert (await http.get("/v1/store/not-an-address/heads")).status_code == 400
        assert (await http.get(f"{NS}/heads/..%2F..%2Fetc")).status_code in (400, 404)
        assert (await http.get(f"{NS}/blobs/XYZ")).status_code == 400


async def test_conversation_round_trip_over_http(url: str, tmp_path: Path) -> None:
    store = AsyncConversationStore(ALICE.private_key, HttpBackend(url, ALICE.private_key))
    async with store:
        conv = await store.create_conversation(MODEL, {"job_id": 5})
        await store.append(conv, "user", "Name a prime number")
        await store.append(conv, "assistant", "Seven.", {"tokens": 2})
        got = await store.get_conversation(conv)
        assert got.context() == [{"role": "user", "content": "Name a prime number"},
                                 {"role": "assistant", "content": "Seven."}]
        assert [(i.id, i.messages) for i in await store.list_conversations()] == [(conv, 2)]
        assert "Seven." in await store.export_conversation(conv, format="markdown")
        stored = b"".join(p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file())
        assert b"prime" not in stored and b"Seven" not in stored
        await store.delete_conversation(conv)
        assert await store.list_conversations() == []
        assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file() and "blobs" in p.parts]


async def test_failed_append_loses_nothing(url: str) -> None:
    async with AsyncConversationStore(ALICE.private_key, HttpBackend(url, ALICE.private_key)) as store:
        conv = await store.create_conversation(MODEL)
        await store.append(conv, "user", "short")
        with pytest.raises(BlobTooLarge, match="limit of 4096"):
            await store.append(conv, "assistant", "x" * 10_000)
        assert [m.content for m in (await store.get_conversation(conv)).messages] == ["short"]
        await store.append(conv, "assistant", "fits")
        assert [m.content for m in (await store.get_conversation(conv)).messages] == ["short", "fits"]


async def test_concurrent_appends_from_two_clients_over_http(url: str) -> None:
    one = AsyncConversationStore(ALICE.private_key, HttpBackend(url, ALICE.private_key), max_append_attempts=40)
    two = AsyncConversationStore(ALICE.private_key, HttpBackend(url, ALICE.private_key), max_append_attempts=40)
    async with one, two:
        conv = await one.create_conversation(MODEL)

        async def writer(store: AsyncConversationStore, name: str) -> None:
            for i in range(6):
                await store.append(conv, "user", f"{name}-{i}")

        await asyncio.gather(writer(one, "one"), writer(two, "two"))
        got = await two.get_conversation(conv)
        assert [m.index for m in got.messages] == list(range(12))
        assert sorted(m.content for m in got.messages) == sorted([f"one-{i}" for i in range(6)] +
                                                                [f"two-{i}" for i in range(6)])


async def test_sdk_surfaces_refused_writes(url: str) -> None:
    backend = HttpBackend(url, MALLORY.private_key)
    backend.prefix = NS  # Mallory aims at Alice's namespace
    async with AsyncConversationStore(MALLORY.private_key, backend) as store:
        with pytest.raises(StoreAuthRejected, match="only the owner may write") as err:
            await store.create_conversation(MODEL)
        assert err.value.status == 403


async def test_unreachable_store_is_reported_after_retries() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    backend = HttpBackend(dead, ALICE.private_key, retry=FAST_RETRY, timeout_s=1.0)
    async with AsyncConversationStore(ALICE.private_key, backend) as store:
        with pytest.raises(StoreUnavailable, match=r"after 1 retries.*dinfer store serve"):
            await store.list_conversations()


def test_cli_store_serve_starts_and_serves(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "store.log"
    argv = [sys.executable, "-m", "dinfer.cli", "store", "serve", "--dir", str(tmp_path / "data"),
            "--port", str(port)]
    with log.open("wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc, log, 60)
        base = f"http://127.0.0.1:{port}"
        with ConversationStore(ALICE.private_key, HttpBackend(base, ALICE.private_key)) as store:
            conv = store.create_conversation(MODEL)
            store.append(conv, "user", "survives the client machine")
        with ConversationStore(ALICE.private_key, HttpBackend(base, ALICE.private_key)) as fresh:
            assert fresh.get_conversation(conv).context() == [
                {"role": "user", "content": "survives the client machine"}]
        assert (tmp_path / "data" / ALICE.address.lower() / "heads" / conv).is_file()
    finally:
        _stop(proc)
    # uvicorn re-raises SIGTERM after a graceful shutdown, so the exit status is -15 or 0
    assert proc.returncode in (0, -15) and "Application shutdown complete" in log.read_text(), log.read_text()
