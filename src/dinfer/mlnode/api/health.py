"""Probes and metrics: ``/health`` (identity + state), ``/livez`` (process up), ``/readyz`` (serving), ``/metrics``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from dinfer import __version__
from dinfer.build_info import build_info
from dinfer.http_errors import JSONBytesResponse
from dinfer.mlnode.api.state import AppState, get_state
from dinfer.mlnode.schemas import MLNodeState

router = APIRouter()
State = Annotated[AppState, Depends(get_state)]


@router.get("/health")
async def health(st: State) -> JSONBytesResponse:
    """200 unless an engine failed (503), so a load balancer drops a broken ML node but keeps an idle one."""
    snap = st.manager.snapshot()
    body: dict[str, Any] = {
        "status": "failed" if st.manager.state == MLNodeState.FAILED else "ok",
        "state": snap["state"],
        "version": st.settings.version,
        "node_id": st.settings.node_id,
        "dinfer_version": __version__,
        "git_commit": build_info().commit,
        "engine": st.settings.engine,
        "models": snap["models"],
        "error": snap["error"],
        "queue_depth": snap["queue_depth"],
        "busy": snap["busy"],
    }
    return JSONBytesResponse(body, status_code=503 if st.manager.state == MLNodeState.FAILED else 200)


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(st: State) -> JSONBytesResponse:
    """200 only while serving inference (state INFERENCE)."""
    ready = st.manager.state == MLNodeState.INFERENCE
    return JSONBytesResponse(
        {"ready": ready, "state": st.manager.state.value, "version": st.settings.version},
        status_code=200 if ready else 503,
    )


@router.get("/metrics")
async def metrics(st: State) -> Response:
    return Response(st.metrics.render(), media_type=CONTENT_TYPE_LATEST)
