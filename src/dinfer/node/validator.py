"""Validator role (design §4, issue #8): re-check a deterministic sample of other hosts' finished inferences.

Every ``InferenceFinished`` event for another executor is sampled with ``dinfer.validation.should_validate`` at the
per-validator rate ``effective_rate_bps`` derives from the Registry's ``validation_rate_bps``, the group size and
the executor's record this epoch (the rule ``Validation.vy`` enforces); a ``DisputeOpened`` naming this host as
tie-breaker is always taken. For each, the validator

1. reads the inference and its finish record from the chain (``response_hash`` from the finish event's log);
2. fetches the payload from the executor (``GET /v1/executor/payload/{id}``, signed by this host), retrying for a
   while: an executor that will not hand its payload to a selected validator fails the validation;
3. checks signature, hash, counts and finish (``node/verdict.py``), then has one of its own ML nodes serving the
   model teacher-force the executor's output (``POST /api/v1/score`` with the output text and the claims; "unaligned"
   — claims that do not spell the text — fails the validation);
4. submits ``Validation.validate(id, ok, score_ppm)``.

Work runs one inference at a time from a bounded queue (scoring is CPU work on the ML node that also serves
inference); a local KV marker makes a restart skip what was already submitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson

from dinfer import validation
from dinfer.auth import sign_payload_fetch
from dinfer.chain.contracts.epochs import model_key
from dinfer.chain.contracts.inference import InferenceClient, InferenceInfo, InferenceStatus, ValidationClient
from dinfer.chain.events import ChainEvent
from dinfer.errors import NodeError, TxReverted
from dinfer.node.broker import Broker, NoNodeAvailable
from dinfer.node.chain_view import ChainView
from dinfer.node.claims import CLAIM_TOP_K
from dinfer.node.store import NodeStore
from dinfer.node.verdict import Verdict, check_payload, failed, has_stop_sequences, judge
from dinfer.stats import BPS

log = logging.getLogger(__name__)

VALIDATED_KEY = "validated/{}"
MAX_STOP_TOKENS = 16
"""Most trailing claims a client stop string may leave past the output text (see ``_judge``)."""
QUEUE_LIMIT = 1_000
"""Inferences waiting for validation; beyond it new ones are dropped with a warning (sampling is a duty, not a
backlog: an overloaded validator is simply not paid for the ones it skips)."""


class InferenceValidator:
    def __init__(self, address: str, private_key: str, *, store: NodeStore, chain: ChainView,
                 inference: InferenceClient, validation: Callable[[], Awaitable[ValidationClient]],
                 broker: Broker, http: httpx.AsyncClient, rate_bps: Callable[[], Awaitable[int]],
                 threshold: Callable[[], Awaitable[float]], payload_attempts: int = 5,
                 payload_backoff_s: float = 2.0) -> None:
        self.address = address
        self._key = private_key
        self.store = store
        self.chain = chain
        self.inference = inference
        self._validation = validation
        self.broker = broker
        self.http = http
        self._rate_bps = rate_bps
        self._threshold = threshold
        self.payload_attempts = payload_attempts
        self.payload_backoff_s = payload_backoff_s
        self._queue: asyncio.Queue[tuple[str, bool]] = asyncio.Queue(QUEUE_LIMIT)
        self._epoch_models: dict[int, list[str]] = {}
        self.submitted: dict[str, Verdict] = {}
        """Verdicts submitted since start, by inference id (admin view and tests)."""

    # ----------------------------------------------------------------------- events

    async def handle(self, event: ChainEvent) -> None:
        if event.name == "InferenceFinished" and event.args["executor"] != self.address:
            iid = bytes(event.args["inference_id"])
            base = await self._rate_bps()
            # the per-validator rate is at most 4 × the base: most inferences are ruled out without chain reads
            ceiling = min(BPS, base * validation.REPUTATION_FACTOR**2)
            if validation.should_validate(iid, self.address, ceiling) and validation.should_validate(
                iid, self.address, await self._rate_for(await self.inference.get_inference(iid), base)
            ):
                self._enqueue("0x" + iid.hex(), tiebreak=False)
        elif event.name == "DisputeOpened" and event.args["tiebreaker"] == self.address:
            self._enqueue("0x" + bytes(event.args["inference_id"]).hex(), tiebreak=True)

    async def _rate_for(self, info: InferenceInfo, base: int) -> int:
        """This inference's per-validator rate, as ``Validation.vy`` computes it (``effective_rate_bps``)."""
        if base >= BPS:
            return BPS
        size = await self.chain.epochs.group_size(info.epoch, info.model_key)
        stats = await self.inference.executor_stats(info.epoch, info.executor)
        invalid = await (await self._validation()).invalid_count(info.epoch, info.executor)
        return validation.effective_rate_bps(base, size, stats.total, invalid)

    def _enqueue(self, iid: str, *, tiebreak: bool) -> None:
        try:
            self._queue.put_nowait((iid, tiebreak))
        except asyncio.QueueFull:
            log.warning("validation queue full (%d): skipping %s", QUEUE_LIMIT, iid)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            iid, tiebreak = await self._queue.get()
            try:
                await self.validate_one(iid, tiebreak=tiebreak)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad inference must not stop the role
                log.exception("validation of %s failed", iid)

    # ----------------------------------------------------------------------- one inference

    async def validate_one(self, iid: str, *, tiebreak: bool) -> Verdict | None:
        """Validate ``iid`` and submit the verdict; None when there is nothing to submit."""
        marker = VALIDATED_KEY.format(iid) + (":tiebreak" if tiebreak else "")
        if await self.store.kv_get(marker) is not None:
            return None
        raw_id = bytes.fromhex(iid[2:])
        info = await self.inference.get_inference(raw_id)
        if info.status != InferenceStatus.FINISHED or info.executor == self.address:
            return None
        model = await self._model_of(info)
        if model is None:
            log.warning("cannot validate %s: model of key 0x%s unknown", iid, info.model_key.hex())
            return None
        try:
            node = self.broker.pick(model)
        except NoNodeAvailable:
            log.warning("cannot validate %s: no local ML node serves %s", iid, model)
            return None
        payload = await self._fetch_payload(iid, info.executor)
        if payload is None:
            verdict = failed(f"executor {info.executor} did not hand over the payload")
        else:
            verdict = await self._judge(iid, payload, info, model, node.client.endpoint.api_url("score"))
        await self._submit(iid, raw_id, verdict, marker)
        return verdict

    async def _model_of(self, info: InferenceInfo) -> str | None:
        """The model id of the inference's epoch group (the chain keeps only its key)."""
        models = self._epoch_models.get(info.epoch)
        if models is None:
            models = self._epoch_models[info.epoch] = await self.chain.epochs.epoch_models(info.epoch)
        return next((m for m in models if model_key(m) == info.model_key), None)

    async def _judge(self, iid: str, payload: dict[str, Any], info: InferenceInfo, model: str,
                     score_url: str) -> Verdict:
        response_hash = await self._response_hash(info, bytes.fromhex(iid[2:]))
        static = check_payload(iid, payload, info, response_hash)
        claims = payload.get("claims") or []
        if not claims:
            return failed(static[0]) if static else Verdict(True, 1.0)
        raw_body = bytes.fromhex(payload["body_hex"])
        body = orjson.loads(raw_body)
        prompt = body.get("messages") if payload.get("kind") == "chat" else body.get("prompt")
        top_k = min(max([CLAIM_TOP_K, *(len(c[2]) for c in claims)]), 20)
        # A client stop string is cut from the text but its tokens stay in the claims: allow a few trailing ones.
        spare = min(len(claims) - 1, MAX_STOP_TOKENS) if has_stop_sequences(raw_body) else 0
        for dropped in range(spare + 1):
            kept = claims[: len(claims) - dropped]
            request = {"model": model, "prompt": prompt, "output_text": payload.get("text", ""),
                       "claimed": [{"token": c[0], "logprob": c[1]} for c in kept], "top_k": top_k}
            resp = await self.http.post(score_url, json=request, timeout=300.0)
            if resp.status_code == 400 and "unaligned" in resp.text:
                continue
            if resp.status_code >= 400:
                raise NodeError(f"own ML node could not score {iid}: {resp.status_code} {resp.text[:300]}")
            return judge({**payload, "claims": kept}, info, static, resp.json(), await self._threshold())
        return failed(f"the claimed tokens do not spell the output: {resp.json()['error']['message']}")

    async def _response_hash(self, info: InferenceInfo, raw_id: bytes) -> bytes:
        """The finish record's ``response_hash``: from the ``InferenceFinished`` log at the finish block."""
        event = self.inference.contract.events.InferenceFinished
        logs = await event.get_logs(argument_filters={"inference_id": raw_id}, from_block=info.start_block,
                                    to_block=info.start_block)
        if not logs:
            raise NodeError(f"no InferenceFinished log for 0x{raw_id.hex()} at block {info.start_block}")
        return bytes(logs[0]["args"]["response_hash"])

    async def _fetch_payload(self, iid: str, executor: str) -> dict[str, Any] | None:
        delay = self.payload_backoff_s
        for attempt in range(1, self.payload_attempts + 1):
            try:
                url = await self.chain.host_url(executor)
                resp = await self.http.get(f"{url.rstrip('/')}/v1/executor/payload/{iid}",
                                           headers=sign_payload_fetch(iid, self._key), timeout=30.0)
                if resp.status_code == 200:
                    data: dict[str, Any] = orjson.loads(resp.content)
                    return data
                log.info("payload of %s from %s: %d %s (attempt %d)", iid, executor, resp.status_code,
                         resp.text[:200], attempt)
            except (httpx.HTTPError, NodeError, ValueError) as exc:
                log.info("payload of %s from %s: %s (attempt %d)", iid, executor, exc, attempt)
            if attempt < self.payload_attempts:
                await asyncio.sleep(delay)
                delay *= 2
        return None

    async def _submit(self, iid: str, raw_id: bytes, verdict: Verdict, marker: str) -> None:
        client = await self._validation()
        try:
            await client.validate(raw_id, verdict.ok, verdict.score_ppm)
        except TxReverted as exc:
            log.info("validation of %s not accepted: %s", iid, exc.reason)
            await self.store.kv_set(marker, f"refused:{exc.reason}")
            return
        await self.store.kv_set(marker, f"{int(verdict.ok)}:{verdict.score_ppm}:{int(time.time())}")
        self.submitted[iid] = verdict
        level = logging.INFO if verdict.ok else logging.WARNING
        log.log(level, "validated %s: %s (score %.4f)%s", iid, "ok" if verdict.ok else "INVALID", verdict.score,
                "" if verdict.ok else " — " + "; ".join(verdict.reasons))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            while not self._queue.empty():
                self._queue.get_nowait()
