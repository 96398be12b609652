"""OpenAI request shapes shared by the host node (TA/executor) and the ML node.

Only the fields dinfer reads or must bound are declared; anything else is kept (``extra="allow"``) and passed to
the engine unchanged, like OpenAI-compatible servers do.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from dinfer.config import format_validation_error
from dinfer.errors import InvalidRequest


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(min_length=1, max_length=64)
    content: str | list[Any] | None = None

    def text_bytes(self) -> int:
        """UTF-8 size of the message's text (for the prompt-token upper bound)."""
        if isinstance(self.content, str):
            return len(self.content.encode())
        if isinstance(self.content, list):
            return sum(len(str(part.get("text", "")).encode()) for part in self.content if isinstance(part, dict))
        return 0


class OpenAIRequest(BaseModel):
    """Fields common to chat and text completions."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, max_length=128)
    max_tokens: int | None = Field(None, ge=1)
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    n: int | None = Field(None, ge=1, le=1)
    stop: str | list[str] | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class ChatCompletionRequest(OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: StrictBool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def prompt_bytes(self) -> int:
        return sum(m.text_bytes() + len(m.role) for m in self.messages)


class CompletionRequest(OpenAIRequest):
    prompt: str
    logprobs: int | None = Field(None, ge=0, le=20)

    def prompt_bytes(self) -> int:
        return len(self.prompt.encode())


PROMPT_TEMPLATE_OVERHEAD = 96
"""Tokens a chat template may add around the messages (ChatML markers, default system prompt)."""
PER_MESSAGE_OVERHEAD = 8


def prompt_tokens_upper_bound(req: ChatCompletionRequest | CompletionRequest) -> int:
    """An upper bound of the prompt's token count without a tokenizer.

    Byte-level BPE tokenizers never produce more tokens than bytes, so UTF-8 size plus the template's markers is
    a safe bound; the escrow reserves it (the contract refuses a finish above the reservation).
    """
    if isinstance(req, ChatCompletionRequest):
        return req.prompt_bytes() + PER_MESSAGE_OVERHEAD * len(req.messages) + PROMPT_TEMPLATE_OVERHEAD
    return req.prompt_bytes() + PER_MESSAGE_OVERHEAD


def parse_request(kind: str, body: bytes) -> ChatCompletionRequest | CompletionRequest:
    """Validate a raw body as a chat (``kind="chat"``) or text completion; ``InvalidRequest`` naming the field."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidRequest("request body must be a JSON object")
    schema = ChatCompletionRequest if kind == "chat" else CompletionRequest
    try:
        return schema.model_validate(obj)
    except ValidationError as exc:
        raise InvalidRequest(f"invalid request: {format_validation_error(exc)}") from None
