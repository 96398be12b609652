"""ML node app factory: lifespan (one ``httpx.AsyncClient``, the manager), routers, version prefix, errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from dinfer import __version__
from dinfer.config import MLNodeSettings
from dinfer.http_errors import BodyLimit, install_error_handlers
from dinfer.mlnode.api import control, health, openai, score
from dinfer.mlnode.api.state import AppState
from dinfer.mlnode.manager import EngineFactory, MLNodeManager
from dinfer.mlnode.metrics import MLNodeMetrics
from dinfer.mlnode.scoring import ScorerCache

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 << 20
"""Largest request body an ML node reads (the host node's own ``max_body_bytes`` is at most 64 MB)."""


class VersionPrefix:
    """Serve every route also under ``/{version}/...`` by stripping the ML node's own version prefix.

    nginx can then pass ``/v0.3.9/api/v1/state`` through unchanged to the v0.3.9 ML node (docs/mlnode.md).
    A different version's prefix is not stripped and so answers 404.
    """

    def __init__(self, app: ASGIApp, version: str) -> None:
        self.app = app
        self.prefix = "/" + version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            if path == self.prefix or path.startswith(self.prefix + "/"):
                scope = dict(scope)
                scope["path"] = path[len(self.prefix) :] or "/"
                raw = scope.get("raw_path")
                if isinstance(raw, bytes) and raw.startswith(self.prefix.encode()):
                    scope["raw_path"] = raw[len(self.prefix) :] or b"/"
        await self.app(scope, receive, send)


def create_app(
    settings: MLNodeSettings,
    *,
    engine_factory: EngineFactory | None = None,
    log_dir: Path | None = None,
) -> FastAPI:
    """Build the ML node app. ``engine_factory`` replaces the settings' engine (tests: the vLLM stand-in)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0)) as client:
            metrics = MLNodeMetrics()
            manager = MLNodeManager(settings, client, metrics, engine_factory=engine_factory, log_dir=log_dir)
            app.state.mlnode = AppState(settings=settings, client=client, manager=manager, metrics=metrics)
            log.info("ML node %s version %s (dinfer %s) starting", settings.node_id, settings.version, __version__)
            try:
                yield
            finally:
                await manager.close()
                app.state.scorers.close()

    app = FastAPI(title="dinfer ML node", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.include_router(control.router)
    app.include_router(openai.router)
    app.include_router(health.router)
    app.include_router(score.router)
    app.state.scorers = ScorerCache(n_threads=settings.engine_threads)  # validators' teacher forcing (#8)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(VersionPrefix, version=settings.version)
    return app
