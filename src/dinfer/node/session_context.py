"""Server-side conversation context of a session, trimmed by tokens to the model's context window.

Each message keeps its content's token count (asked once from an ML node's ``POST /v1/tokenize``). The prompt
that goes to the engine is estimated as ``template overhead + Σ (tokens + per-message overhead)`` — the same
upper-bound markers the TA uses for escrow (``openai_types``) — and the oldest messages (after a leading system
message) are dropped until that estimate plus the generation's ``max_tokens`` fits the window. The newest message
is never dropped: when it alone does not fit, the prompt is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dinfer.errors import NodeError
from dinfer.node.broker import Broker
from dinfer.node.session_store import ContextEntry
from dinfer.openai_types import PER_MESSAGE_OVERHEAD, PROMPT_TEMPLATE_OVERHEAD


class ContextTooLarge(NodeError):
    """The newest message plus ``max_tokens`` does not fit the model's context window even alone."""


class Tokenizer(Protocol):
    """Counts tokens the way the serving engine does."""

    async def count(self, model: str, content: str) -> int: ...

    async def prompt_tokens(self, model: str, messages: list[dict[str, str]]) -> int: ...

    async def context_window(self, model: str) -> int: ...


def estimate_prompt_tokens(entries: list[ContextEntry]) -> int:
    """Upper bound of the templated prompt's tokens."""
    return PROMPT_TEMPLATE_OVERHEAD + sum(e.tokens + PER_MESSAGE_OVERHEAD for e in entries)


def trim(entries: list[ContextEntry], *, window: int, reserve: int, max_messages: int) -> list[ContextEntry]:
    """The newest suffix of ``entries`` (keeping a leading system message) whose estimate + ``reserve`` fits
    ``window`` and that has at most ``max_messages`` messages; ``ContextTooLarge`` when the last one cannot fit."""
    if not entries:
        return []
    head = entries[:1] if entries[0].role == "system" and len(entries) > 1 else []
    body = entries[len(head):]
    budget = window - reserve
    while len(body) > 1 and (estimate_prompt_tokens(head + body) > budget or len(head) + len(body) > max_messages):
        body = body[1:]
    if head and estimate_prompt_tokens(head + body) > budget:
        head = []  # the system prompt goes before the newest message does
    if estimate_prompt_tokens(body) > budget:
        raise ContextTooLarge(
            f"the prompt needs about {estimate_prompt_tokens(body)} tokens and max_tokens {reserve} more, but the "
            f"model's context window is {window} tokens; send a shorter message or lower max_tokens")
    return head + body


@dataclass
class _ModelInfo:
    context_window: int


class MLNodeTokenizer:
    """``Tokenizer`` over this host's ML nodes (any node serving the model; the tokenizer is the model's)."""

    def __init__(self, broker: Broker, *, default_window: int) -> None:
        self.broker = broker
        self.default_window = default_window
        self._models: dict[str, _ModelInfo] = {}

    async def _ask(self, model: str, content: str | None, messages: list[dict[str, str]] | None) -> int:
        node = self.broker.pick(model)
        data = await node.client.tokenize(content, messages=messages, model=model)
        window = data.get("context_window")
        self._models[model] = _ModelInfo(int(window) if window else self.default_window)
        return int(data["count"])

    async def count(self, model: str, content: str) -> int:
        return await self._ask(model, content, None)

    async def prompt_tokens(self, model: str, messages: list[dict[str, str]]) -> int:
        """Exact prompt tokens of a chat (the engine's template), as the ML node reports them in usage."""
        return await self._ask(model, None, messages)

    async def context_window(self, model: str) -> int:
        info = self._models.get(model)
        if info is None:
            await self._ask(model, "", None)
            info = self._models[model]
        return info.context_window
