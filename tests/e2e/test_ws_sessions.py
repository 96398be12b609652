"""Session marketplace end to end on the real devnet: a raw ``websockets`` client against the host nodes'
``/v1/ws`` (streaming, compression, cancellation, every error code that a client can cause), the HTTP session
routes on the same session, receipts signed by the test client landing on chain as proofs with the right
cumulative counts, a host restart that neither loses nor double-claims, and a resume on a second host."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from network import TINY, BackgroundDevnet, restart_with_env
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from dinfer import crypto
from dinfer.chain.anvil import DEFAULT_MNEMONIC, derive_accounts
from dinfer.chain.backends import connect as rpc_connect
from dinfer.chain.contracts.sessions import SessionsClient
from dinfer.chain.deploy import bind
from dinfer.chain.txqueue import TxSender
from dinfer.crypto import Keypair

pytestmark = pytest.mark.e2e

PRICE = 10**8
CLIENT_INDEXES = (15, 16, 17)
"""anvil accounts funded by the devnet and used by no other e2e test."""


class Chain:
    """The client's view of Sessions on the devnet (run on the devnet's loop)."""

    def __init__(self, net: BackgroundDevnet, key: Keypair) -> None:
        self.net = net
        self.key = key
        self.address = net.info.deployment["contracts"]["Sessions"]

        async def build() -> SessionsClient:
            w3 = rpc_connect([net.info.rpc_url])
            return SessionsClient(bind(w3, "Sessions", self.address), TxSender(w3, key, poll_interval=0.1))

        self.sessions = net.run(build())

    def create(self, host: str, deposit_tokens: int = 100_000) -> int:
        receipt = self.net.run(self.sessions.create_session(host, TINY, PRICE, 3600, 600,
                                                            deposit=PRICE * deposit_tokens))
        return self.sessions.job_id_of(receipt)

    def usage(self, job: int) -> int:
        return self.net.run(self.sessions.get_token_usage(job))

    def proofs(self, job: int) -> int:
        return self.net.run(self.sessions.get_proof_count(job))


class Peer:
    def __init__(self, ws: ClientConnection, net: BackgroundDevnet, key: Keypair, host: str, sessions: str) -> None:
        self.ws, self.net, self.key, self.host, self.sessions = ws, net, key, host, sessions

    def send(self, **frame: Any) -> None:
        self.ws.send(json.dumps(frame))

    def next(self, kind: str | None = None, timeout: float = 60) -> dict[str, Any]:
        while True:
            frame = json.loads(self.ws.recv(timeout))
            if kind is None or frame["type"] == kind:
                return frame

    def settled(self) -> dict[str, Any]:
        """The next frame that is not a chunk of a generation still streaming nor a checkpoint's receipt request
        (they arrive when the host reaches a checkpoint, in any order with the answer to the last frame sent)."""
        while True:
            frame = self.next()
            if frame["type"] not in ("stream_chunk", "receipt_request"):
                return frame

    def error(self, code: str) -> dict[str, Any]:
        """The next settled frame (``settled``): an ``error`` with ``code``."""
        frame = self.settled()
        assert frame["type"] == "error" and frame["code"] == code, frame
        return frame

    def auth(self, job: int, key: Keypair | None = None) -> dict[str, Any]:
        return signed_auth(self.net, key or self.key, self.host, job)

    def init(self, job: int, kind: str = "session_init", **extra: Any) -> dict[str, Any]:
        self.send(type=kind, job_id=job, model=TINY, auth=self.auth(job), **extra)
        ack = self.next()
        assert ack["type"] == "session_ack", ack
        return ack

    def prompt(self, job: int, index: int, content: str, **extra: Any) -> None:
        ts, nonce = int(time.time()), secrets.token_bytes(32)
        sig = crypto.sign_prompt(job, index, ts, nonce, content, self.key.private_key)
        self.send(type="prompt", content=content, message_index=index, timestamp=ts, nonce="0x" + nonce.hex(),
                  signature="0x" + sig.hex(), **extra)

    def answer_until_end(self, job: int, receipts: list[int]) -> dict[str, Any]:
        """Frames until ``stream_end``, signing a receipt for every ``receipt_request``."""
        while True:
            frame = self.next()
            if frame["type"] == "receipt_request":
                total = frame["cumulative_tokens"]
                receipts.append(total)
                sig = crypto.sign_receipt(self.net.info.chain_id, self.sessions, job, total, self.key.private_key)
                self.send(type="receipt", job_id=job, cumulative_tokens=total, signature="0x" + sig.hex())
            elif frame["type"] in ("stream_end", "response", "error"):
                return frame


def signed_auth(net: BackgroundDevnet, key: Keypair, host: str, job: int) -> dict[str, Any]:
    """``{timestamp, signature}`` of ``session_auth_digest`` for ``job`` at ``host``."""
    ts = int(time.time())
    sig = crypto.sign_session_auth(net.info.chain_id, net.info.deployment["contracts"]["Sessions"], job, host, ts,
                                   key.private_key)
    return {"timestamp": ts, "signature": "0x" + sig.hex()}


@contextmanager
def peer(net: BackgroundDevnet, host_index: int, key: Keypair) -> Iterator[Peer]:
    host = net.host(host_index)
    url = host["url"].replace("http://", "ws://") + "/v1/ws"
    with connect(url, compression="deflate", open_timeout=30) as ws:
        yield Peer(ws, net, key, host["address"], net.info.deployment["contracts"]["Sessions"])


def busy_then_cancel(p: Peer, job: int, first_index: int) -> dict[str, Any]:
    """A second prompt during a generation gets BUSY; ``stream_cancel`` ends the generation as "cancelled".

    The tiny random model may emit its end token early, so a try whose generation finished on its own before the
    cancel arrived is repeated with the next indexes. Returns the cancelled generation's ``stream_end``.
    """
    for attempt in range(20):
        index = first_index + 2 * attempt
        p.prompt(job, index, f"a long one {attempt}", max_tokens=300, temperature=2.0, id=f"long{attempt}")
        p.next("stream_chunk")
        p.prompt(job, index + 1, "meanwhile", id=f"second{attempt}")
        p.send(type="stream_cancel")
        ends: dict[str, dict[str, Any]] = {}
        busy = False
        while f"long{attempt}" not in ends or not (busy or f"second{attempt}" in ends):
            frame = p.next()
            if frame["type"] == "stream_end":
                ends[frame["id"]] = frame
            elif frame["type"] == "error":
                assert frame["code"] == "BUSY" and frame["id"] == f"second{attempt}", frame
                busy = True
        if busy and ends[f"long{attempt}"]["finish_reason"] == "cancelled":
            return ends[f"long{attempt}"]
    raise AssertionError("every generation ended on its own before the cancel arrived")


def client(i: int) -> Keypair:
    return derive_accounts(DEFAULT_MNEMONIC, 20)[CLIENT_INDEXES[i]]


def wait_for(check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.3)


def test_session_streams_over_ws_and_http_and_proves_receipts_at_end(network: BackgroundDevnet) -> None:
    key = client(0)
    chain = Chain(network, key)
    host0 = network.host(0)
    job = chain.create(host0["address"])
    receipts: list[int] = []
    with peer(network, 0, key) as p:
        assert [type(e).__name__ for e in p.ws.protocol.extensions] == ["PerMessageDeflate"]
        ack = p.init(job, id="i")
        assert (ack["id"], ack["job_id"], ack["cumulative_tokens"], ack["resumed"]) == ("i", job, 0, False)
        p.prompt(job, 0, "hello over a websocket", max_tokens=16, stream=True)
        chunks = []
        while (frame := p.next())["type"] == "stream_chunk":
            chunks.append(frame["content"])
        assert frame["type"] == "stream_end" and "".join(chunks)
        assert frame["cumulative_tokens"] == frame["usage"]["total_tokens"]
        # Non-streaming HTTP on the same session with the JWT from the ack.
        auth = {"authorization": f"Bearer {ack['token']}"}
        r = httpx.post(f"{host0['url']}/v1/sessions/{job}/chat", json={"content": "and over http", "max_tokens": 8},
                       headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        http_total = r.json()["dinfer"]["cumulative_tokens"]
        assert http_total == frame["cumulative_tokens"] + r.json()["usage"]["total_tokens"]
        index = 1
        while len(receipts) < 2:
            p.prompt(job, index, f"keep going {index}", max_tokens=40)
            end = p.answer_until_end(job, receipts)
            assert end["type"] == "stream_end", end
            index += 1
        assert receipts[0] >= 100 and receipts[1] // 100 > receipts[0] // 100
        status = httpx.get(f"{host0['url']}/v1/sessions/{job}", headers=auth).json()
        assert status["cumulative_tokens"] == end["cumulative_tokens"] and status["checkpoints"] == len(receipts)
        wait_for(lambda: httpx.get(f"{host0['url']}/v1/sessions/{job}", headers=auth).json()["last_receipt_tokens"]
                 == receipts[-1])
        p.send(type="session_end", id="bye")
        closed = p.next()
        assert closed["type"] == "session_closed" and closed["proven_tokens"] == receipts[-1]
        with pytest.raises(ConnectionClosed) as info:
            p.next()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1000
    # The final proof used the client's last receipt: the chain holds exactly that cumulative count.
    assert chain.usage(job) == receipts[-1] and chain.proofs(job) == 1


def test_client_errors_cancellation_and_limits(network: BackgroundDevnet) -> None:
    key, stranger = client(1), Keypair.generate()
    chain = Chain(network, key)
    host0, host1 = network.host(0), network.host(1)
    job = chain.create(host0["address"])
    with peer(network, 0, key) as p:
        p.ws.send("{oops")
        p.error("BAD_MESSAGE")
        p.send(type="hover")
        p.error("BAD_MESSAGE")
        p.prompt(job, 0, "too early")
        p.error("NOT_INITIALIZED")
        other_host_job = chain.create(host1["address"])
        p.send(type="session_init", job_id=other_host_job, model=TINY, auth=p.auth(other_host_job))
        p.error("SESSION_NOT_FOUND")
        p.send(type="session_init", job_id=job, model="HuggingFaceTB/SmolLM2-135M-Instruct", auth=p.auth(job))
        p.error("MODEL_MISMATCH")
        p.init(job)
        p.prompt(job, 0, "first", max_tokens=4)
        assert p.next("stream_end")["finish_reason"]
        p.prompt(job, 0, "first", max_tokens=4)
        p.error("REPLAY")
        cancelled = busy_then_cancel(p, job, 1)
        assert 0 < cancelled["usage"]["completion_tokens"] < 300
        admin = host0["admin_url"]
        assert httpx.post(f"{admin}/admin/mlnodes/host0-ml0/disable").status_code == 200
        try:
            p.prompt(job, 103, "nobody home")
            p.error("ENGINE_UNAVAILABLE")
        finally:
            httpx.post(f"{admin}/admin/mlnodes/host0-ml0/enable")
        p.prompt(job, 104, "back again", max_tokens=2)
        assert p.next("stream_end")["usage"]["completion_tokens"] > 0
        p.send(type="ping", pad="x" * (1_048_576 + 10))
        p.error("FRAME_TOO_LARGE")
        with pytest.raises(ConnectionClosed) as info:
            p.next()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    with peer(network, 0, key) as p:
        p.send(type="session_init", job_id=job, model=TINY, auth=p.auth(job, stranger))
        p.error("UNAUTHORIZED")
        with pytest.raises(ConnectionClosed) as info:
            p.next()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    small = chain.create(host0["address"], deposit_tokens=200)
    with peer(network, 0, key) as p:
        p.init(small)
        # the tiny random model may stop early, so spend the 200 tokens over as many prompts as it takes (bounded)
        for index in range(20):
            p.prompt(small, index, f"spend it {index}", max_tokens=400)
            frame = p.settled()
            if frame["type"] == "error":
                assert frame["code"] == "TOKEN_LIMIT_EXCEEDED", frame
                break
            assert frame["type"] == "stream_end" and frame["cumulative_tokens"] <= 200, frame
        else:
            raise AssertionError("20 prompts never reached the session's 200-token limit")


def test_restart_resumes_without_double_claims_and_history_moves_hosts(network: BackgroundDevnet) -> None:
    """host1 proves at every checkpoint and is restarted mid-session; then the conversation moves to host2."""
    key = client(2)
    chain = Chain(network, key)
    host1 = network.host(1)
    env = {"DINFER_NODE__SESSION_PROOF_CHECKPOINTS": "1", "DINFER_NODE__SESSION_RATE_LIMIT_TOKENS_PER_MINUTE": "400"}
    restart_with_env(network, "host1", env)
    job = chain.create(host1["address"])
    receipts: list[int] = []
    history: list[dict[str, str]] = []
    with peer(network, 1, key) as p:
        p.init(job)
        index = 0
        while not receipts:
            content = f"remember item {index}"
            p.prompt(job, index, content, max_tokens=30, stream=False)
            resp = p.answer_until_end(job, receipts)
            assert resp["type"] == "response", resp
            history += [{"role": "user", "content": content}, {"role": "assistant", "content": resp["content"]}]
            index += 1
        p.prompt(job, index, "x " * 150, max_tokens=8)  # ~400 tokens estimated: more than the bucket holds now
        limited = p.error("RATE_LIMITED")  # 400 tokens per minute per client on host1
        assert limited["retry_after_s"] > 0
    wait_for(lambda: chain.usage(job) == receipts[0])  # the checkpoint's receipt is on chain
    before = httpx.post(f"{host1['url']}/v1/sessions/{job}/token", timeout=30,
                        json=signed_auth(network, key, host1["address"], job))
    token = before.json()["token"]
    billed = httpx.get(f"{host1['url']}/v1/sessions/{job}", headers={"authorization": f"Bearer {token}"}).json()
    restart_with_env(network, "host1", env)
    with peer(network, 1, key) as p:
        ack = p.init(job)
        assert ack["cumulative_tokens"] == billed["cumulative_tokens"]  # nothing lost
        assert ack["context_tokens"] == billed["context_tokens"]
        p.send(type="session_end")
        closed = p.next("session_closed")
    # Nothing claimed twice: the chain's count never passes what was billed, and the receipt proof stands.
    assert receipts[0] <= chain.usage(job) == closed["proven_tokens"] <= billed["cumulative_tokens"]
    # Resume the conversation on host2 (a new job there), with the client's history.
    host2 = network.host(2)
    job2 = chain.create(host2["address"])
    with peer(network, 2, key) as p:
        ack = p.init(job2, kind="session_resume", conversation_context=history)
        assert ack["resumed"] and ack["cumulative_tokens"] == 0 and ack["context_tokens"] > 0
        p.prompt(job2, 0, "what did I ask you to remember?", max_tokens=4)
        end = p.next("stream_end")
        assert end["usage"]["prompt_tokens"] > ack["context_tokens"]
