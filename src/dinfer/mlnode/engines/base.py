"""The one interface every inference engine implements, and the types it speaks in.

An engine is one inference server process (llama.cpp's ``llama_cpp.server``, ``vllm serve``) on a private loopback
port. The ML node never forwards raw HTTP: it asks the engine for a *stream* of OpenAI chunks and meters tokens,
enforces ``max_tokens`` and builds usage itself (llama.cpp never reports usage in streams), so ``chat`` and
``completion`` are aggregations of ``stream`` shared by every engine (``dinfer.mlnode.metering``).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

Kind = Literal["chat", "completion"]
"""Which OpenAI route a request belongs to: ``/v1/chat/completions`` or ``/v1/completions``."""

Chunk = dict[str, Any]
"""One OpenAI stream chunk (``chat.completion.chunk`` or ``text_completion``), as parsed JSON."""


class EngineState(enum.StrEnum):
    """Lifecycle of one engine process."""

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    READY = "READY"
    FAILED = "FAILED"


@dataclass(frozen=True)
class ModelSpec:
    """What ``inference/up`` asks to load: the governance model id, where its weights are, and its engine args."""

    model_id: str
    """Name clients use in ``model`` (and the engine's served model name)."""
    source: str
    """llama.cpp: path of the GGUF file. vLLM: local path or Hugging Face repo id."""
    args: tuple[str, ...] = ()
    """The governance model's ``model_args``, passed to the engine command line after validation."""
    revision: str | None = None
    """vLLM: Hugging Face commit (``hf_commit``) to pin; unused by llama.cpp."""


@dataclass
class EngineHealth:
    """What ``health()`` reports; the ML node turns it into ``/api/v1/state`` and ``/health``."""

    state: EngineState
    model_id: str | None
    pid: int | None
    port: int | None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """One inference engine process. Implementations: ``LlamaCppEngine``, ``VLLMEngine``."""

    name: str
    context_window: int | None
    """Tokens of context the loaded model serves (prompt beyond it → 400), None when the engine checks itself."""

    @property
    def model_id(self) -> str | None:
        """Id of the loaded model (None before ``load``)."""
        ...

    async def load(self, spec: ModelSpec) -> None:
        """Start the engine process with ``spec`` and wait until it answers; ``EngineFailed`` otherwise."""
        ...

    async def unload(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after the grace period). Idempotent."""
        ...

    def health(self) -> EngineHealth:
        """Current state without any I/O (the process watcher keeps it fresh)."""
        ...

    def stream(self, kind: Kind, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        """Send ``body`` with ``stream: true`` and yield the engine's chunks (no ``[DONE]``)."""
        ...

    async def count_prompt_tokens(self, kind: Kind, body: dict[str, Any]) -> int:
        """Prompt tokens of ``body`` exactly as the engine counts them (for usage in streams)."""
        ...

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of plain ``text`` (no chat template, no BOS) — what ``POST /v1/tokenize`` answers."""
        ...

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """Non-streaming ``chat.completion``, built from ``stream`` with the ML node's metering."""
        ...

    async def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """Non-streaming ``text_completion``, built from ``stream`` with the ML node's metering."""
        ...


def gguf_magic_ok(path: Path) -> bool:
    """True when ``path`` is a readable file starting with the GGUF magic bytes."""
    try:
        with path.open("rb") as fh:
            return fh.read(4) == b"GGUF"
    except OSError:
        return False
