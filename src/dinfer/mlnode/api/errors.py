"""Error → HTTP mapping, in one place. Bodies use OpenAI's error shape: ``{"error": {"message", "type", "code"}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from dinfer.errors import (
    Conflict,
    DinferError,
    EngineFailed,
    InvalidRequest,
    ModelNotFound,
    NotServing,
    QueueFull,
)
from dinfer.mlnode.api.responses import JSONBytesResponse

log = logging.getLogger(__name__)


def error_response(
    status: int, message: str, err_type: str, headers: dict[str, str] | None = None
) -> JSONBytesResponse:
    body = {"error": {"message": message, "type": err_type, "code": status}}
    return JSONBytesResponse(body, status_code=status, headers=headers)


def status_of(exc: DinferError) -> tuple[int, str, dict[str, str]]:
    """(HTTP status, error type, extra headers) for a dinfer error."""
    if isinstance(exc, QueueFull):
        return 503, "queue_full", {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, NotServing):
        return 503, "not_serving", {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, InvalidRequest):
        return 400, "invalid_request_error", {}
    if isinstance(exc, ModelNotFound):
        return 404, "model_not_found", {}
    if isinstance(exc, Conflict):
        return 409, "conflict", {}
    if isinstance(exc, EngineFailed):
        return exc.status, "engine_error" if exc.status >= 500 else "invalid_request_error", {}
    return 500, "internal_error", {}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg')}")
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DinferError)
    async def _dinfer_error(request: Request, exc: DinferError) -> JSONBytesResponse:
        status, err_type, headers = status_of(exc)
        if status >= 500 and not isinstance(exc, NotServing):
            log.warning("%s %s → %d: %s", request.method, request.url.path, status, exc)
        return error_response(status, str(exc), err_type, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONBytesResponse:
        return error_response(400, _validation_message(exc), "invalid_request_error")
