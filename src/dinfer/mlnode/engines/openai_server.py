"""Shared machinery of engines that are an OpenAI-compatible server process on a private loopback port.

Subclasses say how to build the command line (``command``), which URL proves readiness (``ready_path``), how to
check the governance model's args (``validate_spec``) and how the engine counts prompt tokens. Everything else —
start, readiness wait, crash watch, streaming, metering — lives here once.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from dinfer.config import MLNodeSettings
from dinfer.errors import EngineFailed
from dinfer.mlnode import metering
from dinfer.mlnode.engines._process import EngineProcess, free_loopback_port
from dinfer.mlnode.engines._sse import SSEProtocolError, post_stream
from dinfer.mlnode.engines.base import Chunk, EngineHealth, EngineState, Kind, ModelSpec

log = logging.getLogger(__name__)

FailureCallback = Callable[[str], None]
"""Called with a reason when the engine process dies on its own."""

_PATHS: dict[str, str] = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}
_READY_POLL_S = 0.05


class OpenAIServerEngine(ABC):
    """Base of ``LlamaCppEngine`` and ``VLLMEngine``."""

    name = "openai-server"
    ready_path = "/v1/models"
    context_window: int | None = None

    def __init__(
        self,
        settings: MLNodeSettings,
        client: httpx.AsyncClient,
        *,
        on_failure: FailureCallback | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self._client = client
        self._on_failure = on_failure
        self._log_dir = log_dir or Path(tempfile.gettempdir()) / "dinfer-mlnode"
        self._proc: EngineProcess | None = None
        self._spec: ModelSpec | None = None
        self._port: int | None = None
        self._state = EngineState.STOPPED
        self._error: str | None = None

    # -- what subclasses provide --------------------------------------------------------------------------------
    @abstractmethod
    def validate_spec(self, spec: ModelSpec) -> None:
        """Raise ``InvalidRequest``/``ModelNotFound`` naming the problem before any process starts."""

    @abstractmethod
    def command(self, spec: ModelSpec, port: int) -> list[str]:
        """argv of the engine process serving ``spec`` on 127.0.0.1:``port``."""

    @abstractmethod
    async def count_prompt_tokens(self, kind: Kind, body: dict[str, Any]) -> int:
        """Prompt tokens of a request, counted the way the engine will count them."""

    async def _after_ready(self, spec: ModelSpec) -> None:  # noqa: B027 - optional hook, no-op by default
        """Hook run once the engine answers (e.g. read tokenizer metadata); engines that need nothing skip it."""

    # -- lifecycle ----------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._port is None:
            raise EngineFailed(f"{self.name} engine is not running")
        return f"http://127.0.0.1:{self._port}"

    @property
    def model_id(self) -> str | None:
        return self._spec.model_id if self._spec else None

    async def load(self, spec: ModelSpec) -> None:
        self.validate_spec(spec)
        await self.unload()
        self._spec, self._error, self._state = spec, None, EngineState.STARTING
        self._port = free_loopback_port()
        log_path = self._log_dir / f"{self.name}-{spec.model_id}-{self._port}.log"
        self._proc = EngineProcess(
            self.command(spec, self._port),
            log_path=log_path,
            stop_timeout_s=self.settings.engine_stop_timeout_s,
            on_exit=self._exited,
        )
        try:
            await self._proc.start()
            await self._wait_ready(self._proc)
            await self._after_ready(spec)
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, EngineFailed) else f"{type(exc).__name__}: {exc}"
            await self._proc.stop()
            self._state, self._error = EngineState.FAILED, reason
            if isinstance(exc, EngineFailed | OSError):
                raise EngineFailed(reason) from exc
            raise
        self._state = EngineState.READY
        log.info("%s engine ready: model %s on port %d (pid %s)", self.name, spec.model_id, self._port, self._proc.pid)

    async def _wait_ready(self, proc: EngineProcess) -> None:
        deadline = time.monotonic() + self.settings.engine_start_timeout_s
        url = self.base_url + self.ready_path
        while time.monotonic() < deadline:
            if not proc.alive:
                raise EngineFailed(
                    f"{self.name} engine exited with code {proc.returncode} while starting: {proc.log_tail()}"
                )
            try:
                resp = await self._client.get(url, timeout=2.0)
                if resp.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(_READY_POLL_S)
        raise EngineFailed(
            f"{self.name} engine not ready after {self.settings.engine_start_timeout_s:.0f}s: {proc.log_tail()}"
        )

    def _exited(self, returncode: int) -> None:
        tail = self._proc.log_tail(500) if self._proc else ""
        self._state = EngineState.FAILED
        self._error = f"{self.name} engine exited unexpectedly with code {returncode}" + (f": {tail}" if tail else "")
        if self._on_failure is not None:
            self._on_failure(self._error)

    async def unload(self) -> None:
        if self._proc is not None:
            await self._proc.stop()
        self._proc, self._port = None, None
        self._state, self._error = EngineState.STOPPED, None

    def health(self) -> EngineHealth:
        return EngineHealth(
            state=self._state,
            model_id=self.model_id,
            pid=self._proc.pid if self._proc else None,
            port=self._port,
            error=self._error,
        )

    # -- inference ----------------------------------------------------------------------------------------------
    def _check_ready(self) -> None:
        if self._state != EngineState.READY:
            raise EngineFailed(self._error or f"{self.name} engine is {self._state.value}", status=503)

    async def stream(self, kind: Kind, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        self._check_ready()
        assert self._port is not None
        payload = {**body, "stream": True, "model": self.model_id}
        payload.pop("stream_options", None)  # usage is the ML node's job (llama.cpp ignores it anyway)
        try:
            async with post_stream(
                "127.0.0.1", self._port, _PATHS[kind], orjson.dumps(payload), timeout_s=self.settings.request_timeout_s
            ) as resp:
                if resp.status != 200:
                    raw = await resp.read_all()
                    raise EngineFailed(
                        f"{self.name} engine refused the request ({resp.status}): {_error_text(raw)}",
                        status=resp.status if 400 <= resp.status < 500 else 502,
                    )
                async for data in resp.data_lines():
                    if data == b"[DONE]":
                        return
                    chunk = orjson.loads(data)
                    chunk["model"] = self.model_id
                    yield chunk
        except (OSError, asyncio.IncompleteReadError, SSEProtocolError, TimeoutError) as exc:
            detail = self._error or f"{type(exc).__name__}: {exc}"
            raise EngineFailed(f"{self.name} engine connection failed: {detail}") from exc

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return await metering.aggregate(self, "chat", body, int(body["max_tokens"]))

    async def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        return await metering.aggregate(self, "completion", body, int(body["max_tokens"]))


def _error_text(raw: bytes) -> str:
    """The engine's error message (OpenAI ``{"error": {"message"}}`` or FastAPI ``{"detail"}``), else raw text."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")[:500]
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])[:500]
        if "detail" in obj:
            return orjson.dumps(obj["detail"]).decode()[:500]
    return raw.decode("utf-8", "replace")[:500]
