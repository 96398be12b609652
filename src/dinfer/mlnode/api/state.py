"""The typed per-app state every route reads (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from fastapi import Request

from dinfer.config import MLNodeSettings
from dinfer.mlnode.manager import MLNodeManager
from dinfer.mlnode.metrics import MLNodeMetrics


@dataclass
class AppState:
    """Owned by the app lifespan: one HTTP client, one manager, one metrics registry."""

    settings: MLNodeSettings
    client: httpx.AsyncClient
    manager: MLNodeManager
    metrics: MLNodeMetrics


def get_state(request: Request) -> AppState:
    """FastAPI dependency: the ``AppState`` the lifespan stored on the app."""
    state: AppState = request.app.state.mlnode
    return state
