"""The ML node's state machine: which engines are loaded, whether PoC runs, and every transition between.

States (``MLNodeState``)::

    UNKNOWN ──inference/up──▶ INFERENCE ──pow/init/generate──▶ POC ──pow/stop──▶ STOPPED
       │                        │  ▲                                               │
       │                        │  └───────────────inference/up────────────────────┘
       │                        ├──inference/down | stop──▶ STOPPED
       │                        └──engine crash──▶ FAILED ──inference/up──▶ INFERENCE
       └──(failed start)──▶ FAILED

Transitions are serialised by one lock. ``inference/up`` (blocking or async) and ``pow/init/generate`` refuse
with ``Conflict`` (409) instead of queueing behind another transition; ``stop``/``down``/``pow/stop`` wait for it.
Requests are validated before anything is unloaded, so a bad ``inference/up`` leaves the node as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from dinfer.config import MLNodeSettings
from dinfer.errors import Conflict, EngineFailed, InvalidRequest, ModelNotFound, NotServing
from dinfer.mlnode.engines import Engine, ModelSpec, make_engine
from dinfer.mlnode.metrics import MLNodeMetrics
from dinfer.mlnode.models import resolve_model
from dinfer.mlnode.poc import PoCKernel, PoCParams, parse_block_hash
from dinfer.mlnode.pool import EnginePool
from dinfer.mlnode.pow import GenerateJob, PoCRunner
from dinfer.mlnode.schemas import InferenceUpRequest, MLNodeState, PowInitGenerateRequest

log = logging.getLogger(__name__)

EngineFactory = Callable[..., Engine]


class UpStatus(enum.StrEnum):
    IDLE = "IDLE"
    LOADING = "LOADING"
    DONE = "DONE"
    FAILED = "FAILED"


@dataclass
class UpProgress:
    """Progress of the latest ``inference/up`` (``GET /api/v1/inference/up/status``)."""

    status: UpStatus = UpStatus.IDLE
    model: str | None = None
    engines_total: int = 0
    engines_ready: int = 0
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        end = self.finished_at or time.time()
        return {
            "status": self.status.value,
            "model": self.model,
            "engines_total": self.engines_total,
            "engines_ready": self.engines_ready,
            "error": self.error,
            "elapsed_s": round(end - self.started_at, 3) if self.started_at else None,
        }


class MLNodeManager:
    """Owns the engines, the PoC runner and the state. One per ML node process."""

    def __init__(
        self,
        settings: MLNodeSettings,
        client: httpx.AsyncClient,
        metrics: MLNodeMetrics,
        *,
        engine_factory: EngineFactory | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self._client = client
        self.metrics = metrics
        self._engine_factory = engine_factory or make_engine
        self._log_dir = log_dir
        self.state = MLNodeState.UNKNOWN
        self.error: str | None = None
        self.pool: EnginePool | None = None
        self.loaded_spec: ModelSpec | None = None
        """The model the pool serves (its GGUF is what ``/api/v1/score`` scores with for that model id)."""
        self.up_progress = UpProgress()
        self.poc = PoCRunner(client, callback_timeout_s=settings.poc_callback_timeout_s, on_batch=metrics.on_poc_batch)
        self._lock = asyncio.Lock()
        self._up_task: asyncio.Task[None] | None = None
        metrics.bind(lambda: self.state, lambda: self.queue_depth, lambda: self.in_flight)

    # -- read side ----------------------------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return self.pool.queue_depth if self.pool else 0

    @property
    def in_flight(self) -> int:
        return self.pool.in_flight if self.pool else 0

    def snapshot(self) -> dict[str, Any]:
        """Body of ``GET /api/v1/state``."""
        engines = [e.health() for e in self.pool.engines()] if self.pool else []
        return {
            "state": self.state.value,
            "version": self.settings.version,
            "node_id": self.settings.node_id,
            "engine": self.settings.engine,
            "models": [self.pool.model_id] if self.pool and self.state == MLNodeState.INFERENCE else [],
            "error": self.error,
            "queue_depth": self.queue_depth,
            "in_flight": self.in_flight,
            "busy": bool(self.pool and self.pool.busy),
            "engines": [
                {"state": h.state.value, "model": h.model_id, "pid": h.pid, "port": h.port, "error": h.error}
                for h in engines
            ],
        }

    def pool_for(self, model: str | None) -> EnginePool:
        """The pool serving ``model`` (None = the loaded one); ``NotServing``/``ModelNotFound`` otherwise."""
        retry = self.settings.retry_after_s
        if self.state == MLNodeState.POC:
            raise NotServing("ML node is computing Proof-of-Compute (state POC); inference paused", retry_after_s=retry)
        if self.state == MLNodeState.FAILED:
            raise NotServing(f"engine failed: {self.error}; inference/up recovers", retry_after_s=retry)
        if self.state != MLNodeState.INFERENCE or self.pool is None:
            raise NotServing(
                f"no model loaded (state {self.state.value}); call /api/v1/inference/up", retry_after_s=retry
            )
        if model is not None and model != self.pool.model_id:
            raise ModelNotFound(f"model {model!r} is not loaded on this ML node; loaded: {self.pool.model_id!r}")
        return self.pool

    # -- inference up / down ------------------------------------------------------------------------------------
    async def _claim(self, what: str) -> None:
        """Take the transition lock without waiting; ``Conflict`` when another transition holds it."""
        if self._lock.locked():
            raise Conflict(f"cannot start {what}: another state change is in progress ({self.up_progress.status})")
        await self._lock.acquire()

    async def inference_up(self, req: InferenceUpRequest) -> dict[str, Any]:
        """Load ``req`` and switch to INFERENCE; returns the new state snapshot."""
        spec, engines = self._prepare(req)
        await self._claim("inference/up")
        try:
            await self._load(spec, engines)
        finally:
            self._lock.release()
        return self.snapshot()

    async def inference_up_async(self, req: InferenceUpRequest) -> dict[str, Any]:
        """Start loading in the background; poll ``up_progress``."""
        spec, engines = self._prepare(req)
        await self._claim("inference/up")
        self.up_progress = UpProgress(UpStatus.LOADING, spec.model_id, len(engines), started_at=time.time())

        async def run() -> None:
            try:
                await self._load(spec, engines)
            except Exception as exc:  # recorded in up_progress and state; nobody awaits this task
                log.warning("async inference/up failed: %s", exc)
            finally:
                self._lock.release()

        self._up_task = asyncio.create_task(run(), name="inference-up")
        return self.up_progress.as_dict()

    def _prepare(self, req: InferenceUpRequest) -> tuple[ModelSpec, list[Engine]]:
        spec = resolve_model(req, self.settings)
        count = req.instances or self.settings.engine_instances
        engines = [
            self._engine_factory(self.settings, self._client, on_failure=self._on_engine_failure, log_dir=self._log_dir)
            for _ in range(count)
        ]
        validate = getattr(engines[0], "validate_spec", None)
        if validate is not None:
            validate(spec)
        return spec, engines

    async def _load(self, spec: ModelSpec, engines: list[Engine]) -> None:
        self.up_progress = UpProgress(UpStatus.LOADING, spec.model_id, len(engines), started_at=time.time())
        await self._stop_everything()

        async def load_one(engine: Engine) -> None:
            await engine.load(spec)
            self.up_progress.engines_ready += 1

        results = await asyncio.gather(*(load_one(e) for e in engines), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await asyncio.gather(*(e.unload() for e in engines), return_exceptions=True)
            self.metrics.engine_failures.inc(len(failures))
            first = failures[0]
            self.state, self.error = MLNodeState.FAILED, str(first)
            self.up_progress.status, self.up_progress.error = UpStatus.FAILED, str(first)
            self.up_progress.finished_at = time.time()
            if isinstance(first, EngineFailed | InvalidRequest | ModelNotFound):
                raise first
            raise EngineFailed(f"engine start failed: {type(first).__name__}: {first}") from first
        self.loaded_spec = spec
        self.pool = EnginePool(
            spec.model_id,
            engines,
            concurrency=self.settings.engine_concurrency,
            queue_limit=self.settings.queue_limit,
            retry_after_s=self.settings.retry_after_s,
        )
        self.state, self.error = MLNodeState.INFERENCE, None
        self.up_progress.status, self.up_progress.finished_at = UpStatus.DONE, time.time()

    def _on_engine_failure(self, reason: str) -> None:
        if self.pool is None or self.state != MLNodeState.INFERENCE:
            return
        self.metrics.engine_failures.inc()
        self.state, self.error = MLNodeState.FAILED, reason

    async def _unload_pool(self) -> None:
        pool, self.pool, self.loaded_spec = self.pool, None, None
        if pool is not None:
            await asyncio.gather(*(e.unload() for e in pool.engines()), return_exceptions=True)

    async def _stop_everything(self) -> None:
        if self.poc.running:
            await self.poc.stop()
        await self._unload_pool()

    async def inference_down(self) -> dict[str, Any]:
        async with self._lock:
            await self._unload_pool()
            if self.state != MLNodeState.POC:
                self.state, self.error = MLNodeState.STOPPED, None
        return self.snapshot()

    async def stop(self) -> dict[str, Any]:
        """``POST /api/v1/stop``: stop engines and PoC, state STOPPED."""
        async with self._lock:
            await self._stop_everything()
            self.state, self.error = MLNodeState.STOPPED, None
        return self.snapshot()

    # -- PoC ----------------------------------------------------------------------------------------------------
    async def pow_generate(self, req: PowInitGenerateRequest) -> dict[str, Any]:
        if req.batch_size > self.settings.poc_batch_size_max:
            raise InvalidRequest(f"batch_size {req.batch_size} > poc_batch_size_max {self.settings.poc_batch_size_max}")
        try:
            block_hash = parse_block_hash(req.block_hash)
            p = req.params
            kernel = PoCKernel(block_hash, req.public_key, PoCParams(p.dim, p.seq_len, p.n_heads, p.ffn_mult))
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        if self.poc.running:
            raise Conflict("PoC generation is already running; POST /api/v1/pow/stop first")
        await self._claim("pow/init/generate")
        try:
            await self._stop_everything()
            job = GenerateJob(
                kernel=kernel,
                node_id=req.node_id or self.settings.node_id,
                block_height=req.block_height,
                block_hash_hex="0x" + block_hash.hex(),
                r_target=req.r_target,
                batch_size=req.batch_size,
                start_nonce=req.start_nonce,
                max_nonces=req.max_nonces,
                callback_url=req.url,
            )
            self.poc.start(job)
            self.state, self.error = MLNodeState.POC, None
        finally:
            self._lock.release()
        return self.poc.progress.as_dict()

    async def pow_stop(self) -> dict[str, Any]:
        async with self._lock:
            await self.poc.stop()
            if self.state == MLNodeState.POC:
                self.state = MLNodeState.STOPPED
        return self.poc.progress.as_dict()

    async def close(self) -> None:
        """App shutdown: stop everything, no orphans."""
        if self._up_task is not None and not self._up_task.done():
            self._up_task.cancel()
            with contextlib.suppress(BaseException):
                await self._up_task
        await self._stop_everything()
