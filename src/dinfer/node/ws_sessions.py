"""``/v1/ws``: the session WebSocket — frame parsing, one connection's state, and the replies.

All protocol logic lives in ``SessionService``; this module turns frames into its calls and its results and
``SessionError``s into frames. A generation runs as a task of the connection so that the socket keeps reading
(``stream_cancel``, ``ping``, ``receipt``, and ``BUSY`` for a second prompt) while it streams.
Compression: uvicorn negotiates permessage-deflate (``ws_per_message_deflate``, on by default) when the client
offers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from dinfer.config import format_validation_error
from dinfer.node.session_service import Code, Opened, SessionError, SessionService, SignedPrompt

if TYPE_CHECKING:
    from dinfer.node.runtime import NodeRuntime

log = logging.getLogger(__name__)
router = APIRouter()

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_UNAVAILABLE = 1011


class _Frame(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: StrictStr
    id: StrictStr | None = Field(None, max_length=64)


F = TypeVar("F", bound=_Frame)


class InitFrame(_Frame):
    job_id: StrictInt = Field(ge=0)
    model: StrictStr = Field(min_length=1, max_length=128)
    auth: dict[str, Any]
    conversation_context: list[dict[str, Any]] | None = None


class PromptFrame(_Frame):
    content: StrictStr
    message_index: StrictInt = Field(ge=0)
    timestamp: StrictInt = Field(ge=0)
    nonce: StrictStr
    signature: StrictStr
    max_tokens: StrictInt | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    stream: StrictBool = True


class ReceiptFrame(_Frame):
    job_id: StrictInt = Field(ge=0)
    cumulative_tokens: StrictInt = Field(ge=0)
    signature: StrictStr


class TokenRefreshFrame(_Frame):
    token: StrictStr


@router.websocket("/v1/ws")
async def session_socket(ws: WebSocket) -> None:
    rt: NodeRuntime = ws.app.state.runtime
    service = getattr(rt, "sessions", None)
    await ws.accept()
    if service is None:
        await ws.close(CLOSE_UNAVAILABLE, "sessions are not enabled on this host")
        return
    await Connection(ws, service, rt.settings.node.ws_max_frame_bytes).run()


class Connection:
    """One client socket."""

    def __init__(self, ws: WebSocket, service: SessionService, max_frame_bytes: int) -> None:
        self.ws = ws
        self.service = service
        self.max_frame_bytes = max_frame_bytes
        self.opened: Opened | None = None
        self.task: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._closed = False

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            if self._closed or self.ws.application_state != WebSocketState.CONNECTED:
                return
            await self.ws.send_text(orjson.dumps(message).decode())

    async def error(self, frame_id: str | None, exc: SessionError) -> None:
        message: dict[str, Any] = {"type": "error", "code": exc.code.value, "message": str(exc)}
        if frame_id is not None:
            message["id"] = frame_id
        if exc.retry_after_s is not None:
            message["retry_after_s"] = exc.retry_after_s
        await self.send(message)

    async def close(self, code: int, reason: str = "") -> None:
        async with self._send_lock:
            if not self._closed:
                self._closed = True
                with contextlib.suppress(Exception):
                    await self.ws.close(code, reason)

    async def run(self) -> None:
        try:
            while not self._closed:
                try:
                    event = await self.ws.receive()
                except (WebSocketDisconnect, RuntimeError):
                    break
                if event["type"] == "websocket.disconnect":
                    break
                raw: str | bytes = event.get("text") if event.get("text") is not None else event.get("bytes") or b""
                size = len(raw.encode() if isinstance(raw, str) else raw)
                if size > self.max_frame_bytes:
                    await self.error(None, SessionError(
                        Code.FRAME_TOO_LARGE, f"frame of {size} bytes is over the limit of {self.max_frame_bytes}"))
                    await self.close(CLOSE_TOO_BIG, "frame too large")
                    break
                await self.handle(raw)
        finally:
            self._closed = True
            await self._stop_generation()
            if self.opened is not None:
                self.service.detach(self.opened.job_id, self.send)

    async def _stop_generation(self) -> None:
        if self.task is not None and not self.task.done():
            if self.opened is not None:
                self.service.cancel(self.opened.job_id)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self.task), 30)

    async def handle(self, raw: str | bytes) -> None:
        frame_id: str | None = None
        try:
            obj = orjson.loads(raw)
            if not isinstance(obj, dict):
                raise SessionError(Code.BAD_MESSAGE, "a frame must be a JSON object with a 'type'")
            fid = obj.get("id")
            frame_id = fid if isinstance(fid, str) and len(fid) <= 64 else None
            base = _parse(_Frame, obj)
            handler = self._handlers.get(base.type)
            if handler is None:
                raise SessionError(Code.BAD_MESSAGE, f"unknown message type {base.type!r}")
            await handler(self, obj)
        except orjson.JSONDecodeError as exc:
            await self.error(None, SessionError(Code.BAD_MESSAGE, f"frame is not valid JSON: {exc}"))
        except SessionError as exc:
            await self.error(frame_id, exc)
            if exc.code == Code.UNAUTHORIZED and self.opened is None:
                await self.close(CLOSE_POLICY, "unauthorized")
        except Exception:
            log.exception("session socket: unexpected error")
            await self.error(frame_id, SessionError(Code.INTERNAL, "internal error; see the host's log"))

    # ------------------------------------------------------------ handlers

    async def on_open(self, obj: dict[str, Any]) -> None:
        resumed = obj["type"] == "session_resume"
        frame = _parse(InitFrame, obj)
        if resumed and frame.conversation_context is None:
            raise SessionError(Code.BAD_MESSAGE, "session_resume needs conversation_context (the client's history)")
        if self.opened is not None:
            raise SessionError(Code.BAD_MESSAGE, f"this socket already serves job {self.opened.job_id}")
        opened = await self.service.open(frame.job_id, frame.model, frame.auth, frame.conversation_context,
                                         resumed=resumed)
        self.opened = opened
        self.service.attach(opened.job_id, self.send)
        await self.send(_reply("session_ack", frame.id, opened.ack))

    def _need_open(self) -> Opened:
        if self.opened is None:
            raise SessionError(Code.NOT_INITIALIZED, "send session_init (or session_resume) first")
        return self.opened

    async def on_prompt(self, obj: dict[str, Any]) -> None:
        opened = self._need_open()
        frame = _parse(PromptFrame, obj)
        if self.task is not None and not self.task.done():
            raise SessionError(Code.BUSY, "a generation is already running on this socket; wait or stream_cancel")
        signed = SignedPrompt(frame.message_index, frame.timestamp, frame.nonce, frame.signature)
        self.task = asyncio.create_task(self._run_prompt(opened, frame, signed), name=f"ws-prompt-{opened.job_id}")

    async def _run_prompt(self, opened: Opened, frame: PromptFrame, signed: SignedPrompt) -> None:
        async def chunk(piece: str) -> None:
            await self.send(_reply("stream_chunk", frame.id, {"message_index": frame.message_index,
                                                              "content": piece}))

        try:
            gen = await self.service.generate(opened.job_id, opened.client, content=frame.content, signed=signed,
                                              max_tokens=frame.max_tokens, temperature=frame.temperature,
                                              on_delta=chunk if frame.stream else None)
        except SessionError as exc:
            await self.error(frame.id, exc)
            return
        except Exception:
            log.exception("session %d: generation failed", opened.job_id)
            await self.error(frame.id, SessionError(Code.INTERNAL, "internal error; see the host's log"))
            return
        common = {"message_index": frame.message_index, "usage": gen.usage,
                  "cumulative_tokens": gen.cumulative_tokens, "finish_reason": gen.finish_reason}
        if frame.stream:
            await self.send(_reply("stream_end", frame.id, common))
        else:
            await self.send(_reply("response", frame.id, {**common, "content": gen.text}))

    async def on_cancel(self, obj: dict[str, Any]) -> None:
        opened = self._need_open()
        _parse(_Frame, obj)
        if self.task is not None and not self.task.done():
            self.service.cancel(opened.job_id)

    async def on_receipt(self, obj: dict[str, Any]) -> None:
        opened = self._need_open()
        frame = _parse(ReceiptFrame, obj)
        if frame.job_id != opened.job_id:
            raise SessionError(Code.BAD_MESSAGE, f"receipt for job {frame.job_id} on a socket of job {opened.job_id}")
        await self.service.receipt(opened.job_id, opened.client, frame.cumulative_tokens, frame.signature)

    async def on_end(self, obj: dict[str, Any]) -> None:
        opened = self._need_open()
        frame = _parse(_Frame, obj)
        await self._stop_generation()
        closed = await self.service.end(opened.job_id)
        await self.send(_reply("session_closed", frame.id, closed))
        await self.close(CLOSE_NORMAL, "session ended")

    async def on_refresh(self, obj: dict[str, Any]) -> None:
        opened = self._need_open()
        frame = _parse(TokenRefreshFrame, obj)
        await self.send(_reply("token", frame.id, await self.service.refresh(frame.token, opened.job_id)))

    async def on_ping(self, obj: dict[str, Any]) -> None:
        frame = _parse(_Frame, obj)
        await self.send(_reply("pong", frame.id, {}))

    _handlers: dict[str, Any] = {  # noqa: RUF012 - a constant dispatch table
        "session_init": on_open, "session_resume": on_open, "prompt": on_prompt, "stream_cancel": on_cancel,
        "receipt": on_receipt, "session_end": on_end, "token_refresh": on_refresh, "ping": on_ping,
    }


def _parse(model: type[F], obj: dict[str, Any]) -> F:
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise SessionError(Code.BAD_MESSAGE, f"{obj.get('type')}: {format_validation_error(exc)}") from None


def _reply(kind: str, frame_id: str | None, body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind}
    if frame_id is not None:
        out["id"] = frame_id
    return {**out, **body}
