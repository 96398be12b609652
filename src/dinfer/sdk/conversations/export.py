"""Export a verified conversation as JSON (lossless, machine-readable) or Markdown (for people)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from dinfer.sdk.conversations.errors import InvalidConversationInput
from dinfer.sdk.conversations.records import Conversation

FORMATS = ("json", "markdown")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def to_dict(conversation: Conversation) -> dict[str, Any]:
    """Everything the store verified, including each message's blob id and link."""
    return {
        "id": conversation.id,
        "model": conversation.model,
        "meta": conversation.meta,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
        "head": conversation.head,
        "messages": [
            {"index": m.index, "role": m.role, "content": m.content, "created_at": m.created_at, "meta": m.meta,
             "blob": m.blob_id, "prev": m.prev}
            for m in conversation.messages
        ],
    }


def to_json(conversation: Conversation) -> str:
    return orjson.dumps(to_dict(conversation), option=orjson.OPT_INDENT_2).decode()


def to_markdown(conversation: Conversation) -> str:
    lines = [f"# Conversation {conversation.id}", "",
             f"- model: `{conversation.model}`",
             f"- created: {_iso(conversation.created_at)}",
             f"- messages: {len(conversation.messages)}"]
    lines += [f"- {key}: `{value}`" for key, value in sorted(conversation.meta.items())]
    for m in conversation.messages:
        details = ", ".join(f"{k}: {v}" for k, v in sorted(m.meta.items()))
        lines += ["", f"## {m.index + 1}. {m.role} · {_iso(m.created_at)}" + (f" · {details}" if details else ""),
                  "", m.content]
    return "\n".join(lines) + "\n"


def render(conversation: Conversation, format: str) -> str:
    if format == "json":
        return to_json(conversation)
    if format == "markdown":
        return to_markdown(conversation)
    raise InvalidConversationInput(f"export format must be one of {FORMATS}, got {format!r}")
