"""Inference engines behind one ``Engine`` protocol: llama.cpp (default, CPU) and vLLM (GPU hosts)."""

from __future__ import annotations

from pathlib import Path

import httpx

from dinfer.config import MLNodeSettings
from dinfer.mlnode.engines.base import Chunk, Engine, EngineHealth, EngineState, Kind, ModelSpec
from dinfer.mlnode.engines.llamacpp import LlamaCppEngine
from dinfer.mlnode.engines.openai_server import FailureCallback
from dinfer.mlnode.engines.vllm import VLLMEngine

__all__ = [
    "Chunk",
    "Engine",
    "EngineHealth",
    "EngineState",
    "Kind",
    "LlamaCppEngine",
    "ModelSpec",
    "VLLMEngine",
    "make_engine",
]


def make_engine(
    settings: MLNodeSettings,
    client: httpx.AsyncClient,
    *,
    on_failure: FailureCallback | None = None,
    log_dir: Path | None = None,
) -> LlamaCppEngine | VLLMEngine:
    """The engine ``settings.engine`` names, sharing the process's one HTTP client."""
    cls = VLLMEngine if settings.engine == "vllm" else LlamaCppEngine
    return cls(settings, client, on_failure=on_failure, log_dir=log_dir)
