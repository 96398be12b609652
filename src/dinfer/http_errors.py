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

from dinfer.auth import AuthError
from dinfer.errors import (
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
