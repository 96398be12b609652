"""Chain-first reconciliation: events from the Inference contract that concern this host.

``InferenceStarted`` naming this host as executor (or ``InferenceReassigned`` naming it next) without a local
``inference_seen/<id>`` marker means the start reached the chain before the TA's HTTP request reached us: log the
WARN the reference network logs, fetch the client's signed request from the TA, and run the same
``execute_and_finish`` as the HTTP path. With a marker, nothing is done (the HTTP path owns it).
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import orjson

from dinfer.auth import H_TA, AuthError, verify_headers
from dinfer.chain.events import ChainEvent
from dinfer.crypto import sign_digest_eip191
from dinfer.errors import NodeError
from dinfer.node.chain_view import ChainView
from dinfer.node.executor import Execution, Executor, Kind
from dinfer.node.remote import ExecutorPeer
from dinfer.node.store import NodeStore
from dinfer.openai_types import parse_request
from dinfer.retry import RetryPolicy

log = logging.getLogger(__name__)

WARN_TEXT = "StartInference arrived before HTTP"
CHAIN_FIRST = "chain-first"
"""Marker value of an inference this host took from the chain record (a retry may continue it)."""


def fetch_digest(inference_id: str, timestamp: int) -> bytes:
    """What an executor signs to fetch a request from its TA."""
    from eth_utils import keccak

    return keccak(b"dinfer-fetch-v1" + bytes.fromhex(inference_id.removeprefix("0x")) + timestamp.to_bytes(32, "big"))


class Listener:
    def __init__(self, address: str, store: NodeStore, chain: ChainView, executor: Executor, peers: ExecutorPeer,
                 http: httpx.AsyncClient, *, max_tokens_default: int = 256) -> None:
        self.max_tokens_default = max_tokens_default
        self.retry = RetryPolicy(min_backoff=0.5, max_backoff=5.0, max_retries=20)
        self._tasks: set[asyncio.Task[None]] = set()
        self.address = address
        self.store = store
        self.chain = chain
        self.executor = executor
        self.peers = peers
        self.http = http
        self.chain_first = 0

    async def handle(self, event: ChainEvent) -> None:
        if (event.name == "InferenceStarted" and event.args["executor"] == self.address) or (
            event.name == "InferenceReassigned" and event.args["next_executor"] == self.address
        ):
            await self._maybe_execute("0x" + bytes(event.args["inference_id"]).hex())

    async def _maybe_execute(self, iid: str) -> None:
        if self.store.seen.get(iid) is not None:
            return
        # the TA is the start transaction's sender, kept in the record (InferenceStarted does not repeat it)
        ta = (await self.chain.inference.get_inference(bytes.fromhex(iid[2:]))).ta
        log.warning("%s: inference %s (TA %s) — executing from the chain record", WARN_TEXT, iid, ta)
        self.chain_first += 1
        # In the background with retries: one slow reconciliation must not hold up the event stream.
        task = asyncio.get_running_loop().create_task(self._reconcile(iid, ta), name=f"chain-first-{iid[:10]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reconcile(self, iid: str, ta: str) -> None:
        for delay in [0.0, *self.retry.delays()]:
            await asyncio.sleep(delay)
            try:
                await self._execute(iid, ta)
                return
            except (NodeError, httpx.HTTPError, OSError) as exc:  # OSError: the ML node's stream broke
                log.warning("chain-first execution of %s not possible yet: %s", iid, exc)
        log.error("giving up the chain-first execution of %s", iid)

    async def _execute(self, iid: str, ta: str) -> None:
        mark = self.store.seen.get(iid)
        if mark is not None and mark != CHAIN_FIRST:
            return  # the HTTP path owns it
        try:
            body, headers = await self._fetch_request(iid, ta)
        except httpx.HTTPStatusError as exc:
            log.error("TA %s refused the request of %s: %s", ta, iid, exc.response.text[:200])
            return
        except (ValueError, KeyError) as exc:
            log.error("TA %s returned a malformed request for %s: %s", ta, iid, exc)
            return
        if mark is None and not self.store.seen.add(iid, CHAIN_FIRST):
            return  # the HTTP request arrived while we were fetching
        # The contract already checked the timestamp window when it accepted the start: no window here.
        try:
            signed = verify_headers(headers, body, ta_address=headers.get(H_TA, ta), window_s=10**9)
        except AuthError as exc:
            log.error("TA %s returned a request for %s with a bad signature: %s", ta, iid, exc)
            return
        if signed.inference_id != iid:
            log.error("TA %s returned a request whose signature is not inference %s", ta, iid)
            return
        kind: Kind = "completion" if headers.get("x-dinfer-kind") == "completion" else "chat"
        req = parse_request(kind, body)
        req.stream = False  # nobody is waiting on a stream: run it whole and record it
        ex = Execution(iid, kind, body, req, signed, req.max_tokens or self.max_tokens_default, path=CHAIN_FIRST)
        async for _ in self.executor.execute_and_finish(ex):
            pass

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _fetch_request(self, iid: str, ta: str) -> tuple[bytes, dict[str, str]]:
        url = await self.chain.host_url(ta)
        ts = int(time.time())
        sig = sign_digest_eip191(fetch_digest(iid, ts), self.peers.ta_key)
        resp = await self.http.get(f"{url.rstrip('/')}/v1/ta/requests/{iid}",
                                   headers={"x-dinfer-executor": self.address, "x-dinfer-timestamp": str(ts),
                                            "x-dinfer-signature": "0x" + sig.hex()}, timeout=10.0)
        resp.raise_for_status()
        data = orjson.loads(resp.content)
        return bytes.fromhex(data["body_hex"]), {k.lower(): v for k, v in data["headers"].items()}
