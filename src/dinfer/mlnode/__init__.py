"""ML node service (``dinfer mlnode``): engines, Gonka-compatible API, Proof-of-Compute kernel."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dinfer.mlnode.app import create_app
    from dinfer.mlnode.schemas import MLNodeState

__all__ = ["MLNodeState", "create_app"]

# Imported on first use: ``create_app`` pulls in FastAPI and every engine, which `dinfer mlnode register`/`list`
# (and any importer of a light submodule such as ``dinfer.mlnode.metering``) do not need.
_LAZY = {"create_app": "dinfer.mlnode.app", "MLNodeState": "dinfer.mlnode.schemas"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
