"""PoC generation on a worker thread, batch by batch, with each batch's valid nonces posted to the host node.

The numpy kernel releases the GIL in its matrix products, but the loop itself is Python: it runs on a
dedicated thread so the event loop keeps serving ``/api/v1/pow/status`` and health probes. Posting happens on
the event loop (the process's one ``httpx.AsyncClient``); the thread waits for the previous post before the
next, so at most one batch is in flight and a slow host slows generation instead of queueing unbounded work.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from dinfer import merkle
from dinfer.mlnode.poc import PoCKernel

log = logging.getLogger(__name__)


class PoCStatus(enum.StrEnum):
    IDLE = "IDLE"
    GENERATING = "GENERATING"
    DONE = "DONE"  # max_nonces reached
    STOPPED = "STOPPED"  # pow/stop or a state change
    FAILED = "FAILED"


@dataclass(frozen=True)
class GenerateJob:
    """One ``pow/init/generate`` request, validated."""

    kernel: PoCKernel
    node_id: str
    block_height: int
    block_hash_hex: str
    r_target: float
    batch_size: int
    start_nonce: int
    max_nonces: int | None
    callback_url: str | None


@dataclass
class PoCProgress:
    """What ``GET /api/v1/pow/status`` shows."""

    status: PoCStatus = PoCStatus.IDLE
    nonces_processed: int = 0
    valid_nonces: int = 0
    batches_posted: int = 0
    post_errors: int = 0
    last_error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    block_height: int | None = None
    node_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        end = self.finished_at or time.time()
        elapsed = (end - self.started_at) if self.started_at else 0.0
        return {
            "status": self.status.value,
            "nonces_processed": self.nonces_processed,
            "valid_nonces": self.valid_nonces,
            "batches_posted": self.batches_posted,
            "post_errors": self.post_errors,
            "last_error": self.last_error,
            "nonces_per_s": round(self.nonces_processed / elapsed, 1) if elapsed > 0 else 0.0,
            "block_height": self.block_height,
            "node_id": self.node_id,
        }


def batch_payload(job: GenerateJob, nonces: list[int], distances: list[float]) -> dict[str, Any]:
    """The body POSTed to ``{url}/generated``: ``{node_id, nonces, distances, merkle_root, ...}``."""
    root = merkle.merkle_root([merkle.leaf_hash(n, d) for n, d in zip(nonces, distances, strict=True)])
    return {
        "node_id": job.node_id,
        "public_key": job.kernel.public_key,
        "block_hash": job.block_hash_hex,
        "block_height": job.block_height,
        "nonces": nonces,
        "distances": distances,
        "merkle_root": "0x" + root.hex(),
    }


class PoCRunner:
    """Runs one ``GenerateJob`` at a time on its own thread."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        callback_timeout_s: float,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self._client = client
        self._timeout = callback_timeout_s
        self._on_batch = on_batch  # (nonces processed, valid) for metrics
        self.progress = PoCProgress()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, job: GenerateJob) -> None:
        if self.running:
            raise RuntimeError("a PoC generation is already running")
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self.progress = PoCProgress(
            status=PoCStatus.GENERATING, started_at=time.time(), block_height=job.block_height, node_id=job.node_id
        )
        self._thread = threading.Thread(target=self._run, args=(job,), name="poc-generate", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Ask the thread to stop after its current batch and wait for it (bounded by one batch + one post)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, self._timeout + 30.0)
        if self.progress.status == PoCStatus.GENERATING:
            self.progress.status = PoCStatus.STOPPED
            self.progress.finished_at = time.time()

    def _run(self, job: GenerateJob) -> None:
        prog = self.progress
        nonce = job.start_nonce
        pending: Future[None] | None = None
        try:
            while not self._stop.is_set():
                size = job.batch_size
                if job.max_nonces is not None:
                    size = min(size, job.start_nonce + job.max_nonces - nonce)
                    if size <= 0:
                        break
                nonces = np.arange(nonce, nonce + size, dtype=np.uint64)
                dist = job.kernel.distances(nonces)
                mask = dist < job.r_target
                nonce += size
                prog.nonces_processed += size
                valid = int(mask.sum())
                prog.valid_nonces += valid
                if self._on_batch is not None:
                    self._on_batch(size, valid)
                if valid and job.callback_url:
                    payload = batch_payload(job, [int(n) for n in nonces[mask]], [float(d) for d in dist[mask]])
                    if pending is not None:
                        pending.result()
                    assert self._loop is not None
                    pending = asyncio.run_coroutine_threadsafe(self._post(job.callback_url, payload), self._loop)
            if pending is not None:
                pending.result()
            prog.status = PoCStatus.STOPPED if self._stop.is_set() else PoCStatus.DONE
        except Exception as exc:  # the thread must always leave a verdict in progress
            log.exception("PoC generation failed")
            prog.status, prog.last_error = PoCStatus.FAILED, f"{type(exc).__name__}: {exc}"
        finally:
            prog.finished_at = time.time()

    async def _post(self, url: str, payload: dict[str, Any]) -> None:
        try:
            resp = await self._client.post(url.rstrip("/") + "/generated", json=payload, timeout=self._timeout)
            resp.raise_for_status()
            self.progress.batches_posted += 1
        except httpx.HTTPError as exc:
            self.progress.post_errors += 1
            self.progress.last_error = f"POST {url}/generated failed: {type(exc).__name__}: {exc}"
            log.warning("%s", self.progress.last_error)
