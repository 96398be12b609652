"""Batched chain writes of one host node: start and reassign records (TA role), finish records (executor role).

* Starts and reassigns go straight into size/time batches (``BatchQueue``) — one transaction per batch.
* A finish can only land after its start (or the reassign naming this host) is on chain, and the two are sent by
  different hosts, so finishes first wait in a *gate*: every tick the gate reads the inferences' on-chain status and
  moves the ready ones into the finish batch. Already-finished ones are dropped (a duplicate finish is a no-op on
  chain anyway), expired ones are reported, unknown ones wait until ``gate_timeout``.
* Outcomes (applied / rejected with the contract's reason / duplicate) are reported through ``on_outcome`` so the
  node's SQLite record of each inference shows its tx hashes and status.
* With an ``outbox`` (``node/chain_outbox.py``) every queued record is also in SQLite until its outcome is known, and
  ``replay`` queues the leftovers again after a crash (a kill -9 between answering and the batch lost them before).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dinfer.chain.contracts.inference import (
    FinishRecord,
    InferenceClient,
    InferenceStatus,
    ReassignRecord,
    StartRecord,
    start_chunks,
)
from dinfer.chain.txqueue import BatchQueue
from dinfer.errors import ChainError
from dinfer.node.chain_outbox import ChainOutbox

log = logging.getLogger(__name__)

OutcomeHandler = Callable[[str, str, str, str], Awaitable[None]]
"""``(kind, inference_id_hex, outcome, detail)``: outcome is applied / rejected / duplicate / dropped."""


@dataclass
class _Waiting:
    record: FinishRecord
    since: float


class ChainWriter:
    """Owns the node's three batch queues and the finish gate."""

    def __init__(self, inference: InferenceClient, *, max_records: int = 50, max_delay: float = 1.0,
                 gate_interval: float = 0.5, gate_timeout: float = 600.0,
                 on_outcome: OutcomeHandler | None = None) -> None:
        self.inference = inference
        self.address = inference.sender.address if inference.sender else ""
        self._on_outcome = on_outcome
        self.starts: BatchQueue[StartRecord] = BatchQueue(self._flush_starts, max_size=max_records,
                                                          max_delay=max_delay)
        self.reassigns: BatchQueue[ReassignRecord] = BatchQueue(self._flush_reassigns, max_size=max_records,
                                                                max_delay=max_delay)
        self.finishes: BatchQueue[FinishRecord] = BatchQueue(self._flush_finishes, max_size=max_records,
                                                             max_delay=max_delay)
        self._gate: dict[bytes, _Waiting] = {}
        self._gate_interval = gate_interval
        self._gate_timeout = gate_timeout
        self.outbox: ChainOutbox | None = None
        """When set, every queued record stays in SQLite until its outcome is known (``replay`` after a restart)."""
        self._saving: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._replaying: asyncio.Task[None] | None = None
        self._gate_task: asyncio.Task[None] | None = None
        self.stats = {"start": 0, "finish": 0, "reassign": 0, "rejected": 0, "duplicate": 0, "tx_failures": 0}

    # ------------------------------------------------------------ public

    def queue_start(self, record: StartRecord) -> asyncio.Future[Any]:
        self._save("start", record)
        return self.starts.put(record)

    def queue_reassign(self, record: ReassignRecord) -> asyncio.Future[Any]:
        self._save("reassign", record)
        return self.reassigns.put(record)

    def queue_finish(self, record: FinishRecord) -> None:
        """Finish once the chain shows the inference assigned to this host."""
        self._save("finish", record)
        self._gate.setdefault(record.inference_id, _Waiting(record, time.monotonic()))
        if self._gate_task is None or self._gate_task.done():
            self._gate_task = asyncio.get_running_loop().create_task(self._gate_loop(), name="finish-gate")

    @property
    def depth(self) -> int:
        """Records waiting anywhere (metrics: tx queue depth)."""
        return len(self.starts) + len(self.reassigns) + len(self.finishes) + len(self._gate)

    # ------------------------------------------------------------ outbox (crash safety)

    def _save(self, kind: str, record: StartRecord | ReassignRecord | FinishRecord) -> None:
        if self.outbox is None:
            return
        key = (kind, "0x" + record.inference_id.hex())
        self._saving[key] = asyncio.get_running_loop().create_task(self.outbox.put(kind, record))

    async def _settled(self, kind: str, iid: str, *, keep: bool) -> None:
        """The record's outcome is known: out of the outbox (``keep``: a failed transaction, owed until a replay)."""
        saving = self._saving.pop((kind, iid), None)
        if self.outbox is None or keep:
            return
        try:
            if saving is not None:
                await saving  # its row is written before it is deleted
            await self.outbox.done(kind, iid)
        except Exception:  # bookkeeping must never break the chain path
            log.exception("outbox: could not clear %s %s", kind, iid)

    async def replay(self) -> int:
        """After a restart: queue again every record the outbox holds; starts and reassigns the chain already has
        are forgotten (finishes go through the gate, which drops finished ones). Returns how many were queued."""
        if self.outbox is None:
            return 0
        starts: list[asyncio.Future[Any]] = []
        reassigns: list[ReassignRecord] = []
        queued = 0
        for kind, record in await self.outbox.pending():
            iid = "0x" + record.inference_id.hex()
            if isinstance(record, FinishRecord):
                self.queue_finish(record)
                queued += 1
                continue
            info = await self.inference.get_inference(record.inference_id)
            if isinstance(record, StartRecord) and info.status == InferenceStatus.NONE:
                starts.append(self.queue_start(record))
                queued += 1
            elif isinstance(record, ReassignRecord) and info.status in (InferenceStatus.NONE, InferenceStatus.STARTED) \
                    and not info.reassigned:
                reassigns.append(record)
                queued += 1
            else:
                await self.outbox.done(kind, iid)
        for fut in starts:  # outcomes arrive through _report; nobody else awaits these futures
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())

        async def after_starts() -> None:  # a reassign must not overtake the start it amends
            await asyncio.gather(*starts, return_exceptions=True)
            for record in reassigns:
                fut = self.queue_reassign(record)
                fut.add_done_callback(lambda f: f.cancelled() or f.exception())

        if reassigns:
            self._replaying = asyncio.get_running_loop().create_task(after_starts(), name="outbox-reassigns")
        if queued:
            log.warning("outbox: %d chain record(s) left over from before the restart queued again", queued)
        return queued

    async def drain(self, timeout: float = 30.0) -> None:
        """Flush everything queued (shutdown); waits for gated finishes up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while self._gate and time.monotonic() < deadline:
            await asyncio.sleep(self._gate_interval)
        for queue in (self.starts, self.reassigns, self.finishes):
            await queue.drain()

    async def close(self) -> None:
        if self._gate_task is not None:
            self._gate_task.cancel()
            try:
                await self._gate_task
            except asyncio.CancelledError:
                pass

    # ------------------------------------------------------------ gate

    async def _gate_loop(self) -> None:
        while self._gate:
            await asyncio.sleep(self._gate_interval)
            try:
                await self._gate_once()
            except ChainError as exc:
                log.warning("finish gate: %s", exc)

    async def _gate_once(self) -> None:
        waiting = list(self._gate.values())
        infos = await asyncio.gather(
            *(self.inference.get_inference(w.record.inference_id) for w in waiting), return_exceptions=True
        )
        now = time.monotonic()
        for w, info in zip(waiting, infos, strict=True):
            iid = w.record.inference_id
            if isinstance(info, BaseException):
                continue
            if info.status == InferenceStatus.STARTED and self._assigned_to_me(info):
                del self._gate[iid]
                self.finishes.put(w.record)
            elif info.status in (InferenceStatus.FINISHED, InferenceStatus.EXPIRED, InferenceStatus.INVALIDATED):
                del self._gate[iid]
                await self._report("finish", iid, "dropped", f"inference already {info.status.name}")
            elif info.status == InferenceStatus.STARTED and info.reassigned and info.executor != self.address:
                del self._gate[iid]
                await self._report("finish", iid, "dropped", f"reassigned to {info.executor}")
            elif now - w.since > self._gate_timeout:
                del self._gate[iid]
                await self._report("finish", iid, "dropped", "start never appeared on chain")

    def _assigned_to_me(self, info: Any) -> bool:
        return bool(info.executor == self.address)

    # ------------------------------------------------------------ flushes

    async def _flush(self, kind: str, send: Callable[[], Awaitable[dict[str, Any]]], ids: list[bytes]) -> Any:
        try:
            receipt = await send()
        except ChainError as exc:
            self.stats["tx_failures"] += 1
            for iid in ids:
                await self._report(kind, iid, "failed", str(exc))
            raise
        outcome = self.inference.outcome(receipt, kind)
        tx = "0x" + bytes(receipt["transactionHash"]).hex()
        for iid in outcome.applied:
            self.stats[kind] += 1
            await self._report(kind, iid, "applied", tx)
        for iid, reason in outcome.rejected.items():
            self.stats["rejected"] += 1
            log.warning("%s record %s rejected by the contract: %s", kind, iid.hex(), reason)
            await self._report(kind, iid, "rejected", reason)
        for iid in outcome.duplicates:
            self.stats["duplicate"] += 1
            await self._report(kind, iid, "duplicate", tx)
        return outcome

    async def _flush_starts(self, records: list[StartRecord]) -> Any:
        # one transaction unless the skipped lists outgrow the contract's room (many non-ACTIVE members)
        outcome: Any = None
        failure: ChainError | None = None
        for chunk in start_chunks(records):
            try:
                outcome = await self._flush("start", lambda c=chunk: self.inference.start_inferences(c),
                                            [r.inference_id for r in chunk])
            except ChainError as exc:  # already reported per record; the other chunks still go out
                failure = exc
        if failure is not None:
            raise failure
        return outcome

    async def _flush_reassigns(self, records: list[ReassignRecord]) -> Any:
        return await self._flush("reassign", lambda: self.inference.reassign(records),
                                 [r.inference_id for r in records])

    async def _flush_finishes(self, records: list[FinishRecord]) -> Any:
        return await self._flush("finish", lambda: self.inference.finish_inferences(records),
                                 [r.inference_id for r in records])

    async def _report(self, kind: str, iid: bytes, outcome: str, detail: str) -> None:
        await self._settled(kind, "0x" + iid.hex(), keep=outcome == "failed")
        if self._on_outcome is not None:
            try:
                await self._on_outcome(kind, "0x" + iid.hex(), outcome, detail)
            except Exception:  # bookkeeping must never break the chain path
                log.exception("outcome handler failed for %s %s", kind, iid.hex())
