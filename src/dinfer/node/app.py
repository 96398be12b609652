"""The host node's two HTTP apps over one ``NodeRuntime``, and ``serve()`` that runs them until a signal."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvicorn
from fastapi import FastAPI

from dinfer import __version__
from dinfer.config import Settings
from dinfer.http_errors import BodyLimit, install_error_handlers
from dinfer.node import admin_api, callback_api, epoch_api, executor_api, public_api, sessions_api, ws_sessions
from dinfer.node.dashboard import close_dashboard_streams, install_dashboard
from dinfer.node.keys_api import admin_router as keys_admin_router
from dinfer.node.keys_api import public_router as keys_public_router
from dinfer.node.runtime import NodeRuntime

log = logging.getLogger(__name__)


def create_public_app(rt: NodeRuntime) -> FastAPI:
    app = FastAPI(title="dinfer host node", version=__version__, docs_url="/docs", redoc_url=None)
    app.state.runtime = rt
    install_error_handlers(app)
    app.include_router(epoch_api.router)  # first: its /v1/epochs/current supersedes the one in public_api
    app.include_router(public_api.router)
    app.include_router(keys_public_router)  # API keys (gateway mode): client-signed or the key's own bearer
    app.include_router(executor_api.router)
    app.include_router(sessions_api.router)
    app.include_router(ws_sessions.router)
    install_dashboard(app)  # GET /dashboard, /dashboard/events (SSE), /dashboard/state.json, /dashboard/static
    return app


def create_callback_app(rt: NodeRuntime) -> FastAPI:
    """ML-node callbacks (``node.callback_port``): PoC batches from this host's ML nodes."""
    app = FastAPI(title="dinfer host node — ML-node callbacks", version=__version__, docs_url=None, redoc_url=None)
    app.state.runtime = rt
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=rt.settings.node.max_body_bytes)
    app.include_router(callback_api.router)
    return app


def create_admin_app(rt: NodeRuntime) -> FastAPI:
    app = FastAPI(title="dinfer host node — admin", version=__version__, docs_url="/docs", redoc_url=None)
    app.state.runtime = rt
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=rt.settings.node.max_body_bytes)
    app.include_router(admin_api.router)
    app.include_router(keys_admin_router)  # API keys, every key (the operator)
    return app


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Start the runtime and both servers; stop cleanly on SIGINT/SIGTERM (or when ``stop`` is set)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    rt = await NodeRuntime.start(settings)
    node = settings.node
    servers = [
        uvicorn.Server(uvicorn.Config(create_public_app(rt), host=node.bind, port=node.public_port,
                                      log_level="warning", lifespan="off", timeout_graceful_shutdown=5)),
        uvicorn.Server(uvicorn.Config(create_admin_app(rt), host=node.admin_bind, port=node.admin_port,
                                      log_level="warning", lifespan="off", timeout_graceful_shutdown=5)),
        uvicorn.Server(uvicorn.Config(create_callback_app(rt), host=node.bind, port=node.callback_port,
                                      log_level="warning", lifespan="off", timeout_graceful_shutdown=5)),
    ]
    for server in servers:
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # we own the signals
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    log.info("public API on http://%s:%d, admin API on http://%s:%d", node.bind, node.public_port,
             node.admin_bind, node.admin_port)
    try:
        done, _ = await asyncio.wait([*tasks, asyncio.create_task(stop.wait())],
                                     return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in tasks and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        close_dashboard_streams(*(s.config.app for s in servers))  # open SSE streams would hold the shutdown
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        await rt.stop()
