"""Error → HTTP mapping for every dinfer HTTP API, in one place.

Bodies use OpenAI's error shape ``{"error": {"message", "type", "param", "code"}}`` so OpenAI clients surface the
message; the message always says what to change. ``Retry-After`` accompanies every 429/503.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dinfer.errors import (
    AuthError,
    ChainError,
    Conflict,
    DinferError,
    EngineFailed,
    InvalidRequest,
    ModelNotFound,
    NodeUnavailable,
    NotServing,
    QueueFull,
    RpcUnavailable,
)

log = logging.getLogger(__name__)


class HTTPError(DinferError):
    """An error that already knows its HTTP status (raised by API code for 402/403/409/413/415/429...)."""

    def __init__(self, status: int, message: str, err_type: str, *, code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.err_type = err_type
        self.code = code
        self.param = param
        self.headers = headers or {}
        super().__init__(message)


class JSONBytesResponse(Response):
    """``application/json`` rendered by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_body(message: str, err_type: str, code: str | int | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


def error_response(status: int, message: str, err_type: str, *, code: str | int | None = None,
                   param: str | None = None, headers: dict[str, str] | None = None) -> JSONBytesResponse:
    return JSONBytesResponse(error_body(message, err_type, code, param), status_code=status, headers=headers)


def classify(exc: DinferError) -> tuple[int, str, dict[str, str]]:
    """(HTTP status, OpenAI error type, extra headers) of a dinfer error."""
    if isinstance(exc, HTTPError):
        return exc.status, exc.err_type, exc.headers
    if isinstance(exc, AuthError):
        return 401, "authentication_error", {}
    if isinstance(exc, NotServing | QueueFull):
        return 503, "queue_full" if isinstance(exc, QueueFull) else "not_serving", {
            "Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, InvalidRequest):
        return 400, "invalid_request_error", {}
    if isinstance(exc, ModelNotFound):
        return 404, "model_not_found", {}
    if isinstance(exc, Conflict):
        return 409, "conflict", {}
    if isinstance(exc, EngineFailed):
        return exc.status, "engine_error" if exc.status >= 500 else "invalid_request_error", {}
    if isinstance(exc, NodeUnavailable | RpcUnavailable):
        return 503, "service_unavailable", {"Retry-After": "2"}
    if isinstance(exc, ChainError):
        return 502, "chain_error", {}
    return 500, "internal_error", {}


def validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg')}")
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves the app in the OpenAI shape; unexpected ones are logged and become a plain 500."""

    @app.exception_handler(DinferError)
    async def _dinfer_error(request: Request, exc: DinferError) -> JSONBytesResponse:
        status, err_type, headers = classify(exc)
        if status >= 500 and not isinstance(exc, NotServing):
            log.warning("%s %s → %d: %s", request.method, request.url.path, status, exc)
        code = exc.code if isinstance(exc, HTTPError) else None
        param = exc.param if isinstance(exc, HTTPError) else None
        return error_response(status, str(exc), err_type, code=code, param=param, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONBytesResponse:
        return error_response(400, validation_message(exc), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http_exception(request: Request, exc: StarletteHTTPException) -> JSONBytesResponse:
        err_type = "not_found" if exc.status_code == 404 else "invalid_request_error"
        message = f"no route {request.method} {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return error_response(exc.status_code, message, err_type)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONBytesResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error; see the node's log", "internal_error")


async def read_limited_body(request: Request, limit: int, what: str = "request body") -> bytes:
    """The body of ``request``, refusing more than ``limit`` bytes (413) without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdecimal() and int(declared) > limit:
        raise HTTPError(413, f"{what} of {declared} bytes is over the limit of {limit} bytes", "invalid_request_error")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"{what} is over the limit of {limit} bytes", "invalid_request_error")
        chunks.append(chunk)
    return b"".join(chunks)


class BodyLimit:
    """ASGI middleware: no body over ``limit`` bytes reaches the app, so a huge upload costs no memory — a declared
    ``Content-Length`` over it is answered 413 before anything is read; a chunked body that grows past it stops the
    request where the app reads it (FastAPI's body parsing then answers 400)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            response = error_response(413, f"request body of {int(declared)} bytes is over the limit of "
                                      f"{self.limit} bytes", "invalid_request_error")
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPError(413, f"request body is over the limit of {self.limit} bytes",
                                    "invalid_request_error")
            return message

        await self.app(scope, limited, send)
