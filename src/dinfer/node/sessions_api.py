"""HTTP routes of a session (public port): a JWT for a signed auth, a non-streaming chat on the session's
server-side context, and the session's state. Same ``SessionService`` (and billing) as the WebSocket."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from dinfer.config import format_validation_error
from dinfer.http_errors import HTTPError
from dinfer.node.session_service import Code, SessionError, SessionService

if TYPE_CHECKING:
    from dinfer.node.runtime import NodeRuntime

router = APIRouter()

STATUS: dict[Code, tuple[int, str]] = {
    Code.BAD_MESSAGE: (400, "invalid_request_error"),
    Code.FRAME_TOO_LARGE: (413, "invalid_request_error"),
    Code.UNAUTHORIZED: (401, "authentication_error"),
    Code.NOT_INITIALIZED: (409, "invalid_request_error"),
    Code.SESSION_NOT_FOUND: (404, "not_found"),
    Code.MODEL_MISMATCH: (400, "invalid_request_error"),
    Code.PRICE_TOO_LOW: (402, "insufficient_quota"),
    Code.TOKEN_LIMIT_EXCEEDED: (402, "insufficient_quota"),
    Code.RATE_LIMITED: (429, "rate_limit_error"),
    Code.REPLAY: (409, "invalid_request_error"),
    Code.BUSY: (409, "conflict"),
    Code.ENGINE_UNAVAILABLE: (503, "service_unavailable"),
    Code.INTERNAL: (500, "internal_error"),
}
"""HTTP status and OpenAI error type of each session error code (the code itself goes in ``error.code``)."""


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timestamp: StrictInt = Field(ge=0)
    signature: StrictStr


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]] | None = Field(None, min_length=1)
    content: StrictStr | None = None
    max_tokens: StrictInt | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)


def as_http(exc: SessionError) -> HTTPError:
    status, err_type = STATUS[exc.code]
    headers = {"Retry-After": str(max(1, round(exc.retry_after_s or 1)))} if status in (429, 503) else None
    return HTTPError(status, str(exc), err_type, code=exc.code.value, headers=headers)


def _service(request: Request) -> SessionService:
    rt: NodeRuntime = request.app.state.runtime
    service = getattr(rt, "sessions", None)
    if service is None:
        raise HTTPError(503, "sessions are not enabled on this host", "service_unavailable")
    return service


async def _body(request: Request, model: type[BaseModel]) -> Any:
    rt: NodeRuntime = request.app.state.runtime
    raw = await rt.read_body(request)
    try:
        return model.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"body is not valid JSON: {exc}", "invalid_request_error",
                        code=Code.BAD_MESSAGE.value) from None
    except ValidationError as exc:
        raise HTTPError(400, f"invalid body: {format_validation_error(exc)}", "invalid_request_error",
                        code=Code.BAD_MESSAGE.value) from None


JobId = Annotated[int, Path(ge=0, le=2**256 - 1, description="The Sessions contract's job id (uint256).")]
"""A job id path parameter: out of uint256 range is a 400 here, not a failed chain call (found by the fuzzer)."""


def _bearer(request: Request, service: SessionService, job_id: int) -> str:
    """The client address of a valid ``Authorization: Bearer <jwt>`` for ``job_id``."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise as_http(SessionError(Code.UNAUTHORIZED, "send Authorization: Bearer <session token> (from "
                                                      f"POST /v1/sessions/{job_id}/token or session_ack)"))
    try:
        return str(service.verify_token(header[7:].strip(), job_id)["sub"])
    except SessionError as exc:
        raise as_http(exc) from None


@router.post("/v1/sessions/{job_id}/token")
async def session_token(job_id: JobId, request: Request) -> dict[str, Any]:
    """A JWT for a session's client: ``{timestamp, signature}`` signs ``session_auth_digest`` (EIP-191)."""
    service = _service(request)
    body: TokenBody = await _body(request, TokenBody)
    try:
        return await service.issue_for(job_id, {"timestamp": body.timestamp, "signature": body.signature})
    except SessionError as exc:
        raise as_http(exc) from None


@router.post("/v1/sessions/{job_id}/chat")
async def session_chat(job_id: JobId, request: Request) -> dict[str, Any]:
    """Non-streaming chat on the session: ``content`` is appended to the context, ``messages`` replaces it."""
    service = _service(request)
    client = _bearer(request, service, job_id)
    body: ChatBody = await _body(request, ChatBody)
    if (body.content is None) == (body.messages is None):
        raise as_http(SessionError(Code.BAD_MESSAGE, "send exactly one of 'content' or 'messages'"))
    try:
        gen = await service.generate(job_id, client, content=body.content, messages=body.messages,
                                     max_tokens=body.max_tokens, temperature=body.temperature)
        status = await service.status(job_id)
    except SessionError as exc:
        raise as_http(exc) from None
    return {
        "id": f"chatcmpl-session-{uuid.uuid4().hex[:16]}", "object": "chat.completion", "created": int(time.time()),
        "model": status["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                     "finish_reason": gen.finish_reason}],
        "usage": gen.usage,
        "dinfer": {"job_id": job_id, "cumulative_tokens": gen.cumulative_tokens},
    }


@router.get("/v1/sessions/{job_id}")
async def session_status(job_id: JobId, request: Request) -> dict[str, Any]:
    service = _service(request)
    _bearer(request, service, job_id)
    try:
        return await service.status(job_id)
    except SessionError as exc:
        raise as_http(exc) from None
