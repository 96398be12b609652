"""ML node service (``dinfer mlnode``): engines, Gonka-compatible API, Proof-of-Compute kernel."""

from __future__ import annotations

from dinfer.mlnode.app import create_app
from dinfer.mlnode.schemas import MLNodeState

__all__ = ["MLNodeState", "create_app"]
