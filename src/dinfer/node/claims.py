"""The executor's per-token logprob claims (validation, design §4): asked from the ML node on every inference,
kept in the payload for validators, and shown to the client only as far as the client asked.

Validators re-score an answer by teacher forcing and compare their log-probabilities with what the executor
claimed at each generated position, so the executor always asks its engine for logprobs with at least
``CLAIM_TOP_K`` alternatives. The client sees the response it would have got without that: no ``logprobs`` unless it
asked, and no more alternatives than it asked for.

A claim is ``(token text, logprob, [(alternative text, logprob), …])`` — what llama.cpp's OpenAI server gives
(token ids are not in its answers; the validator's ML node recovers them from the text, see
``dinfer.mlnode.scoring``). Chat chunks carry ``logprobs.content[] = {token, logprob, top_logprobs: [{token,
logprob}]}``; completion chunks carry ``logprobs.tokens[]``, ``token_logprobs[]`` and ``top_logprobs[] = {text:
logprob}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["chat", "completion"]
Claim = tuple[str, float, list[tuple[str, float]]]

CLAIM_TOP_K = 5
"""Alternatives per position the executor records for validators."""


@dataclass(frozen=True)
class ClientLogprobs:
    """What the client asked for: ``top`` alternatives per token, or no logprobs at all (``wanted`` false)."""

    wanted: bool
    top: int


def ask_engine(kind: Kind, body: dict[str, Any]) -> ClientLogprobs:
    """Make ``body`` (the request for the ML node, edited in place) ask for claims; returns what the client asked."""
    if kind == "chat":
        client = ClientLogprobs(bool(body.get("logprobs")), int(body.get("top_logprobs") or 0))
        body["logprobs"] = True
        body["top_logprobs"] = max(client.top, CLAIM_TOP_K)
    else:
        asked = body.get("logprobs")
        client = ClientLogprobs(asked is not None, int(asked or 0))
        body["logprobs"] = max(client.top, CLAIM_TOP_K)
    return client


def take_claims(kind: Kind, choice: dict[str, Any]) -> list[Claim]:
    """The claims one choice (a stream delta or a whole answer) carries; malformed entries are skipped."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return []
    out: list[Claim] = []
    if kind == "chat":
        for entry in logprobs.get("content") or []:
            if isinstance(entry, dict) and isinstance(entry.get("logprob"), int | float):
                top = [(str(t.get("token", "")), float(t["logprob"])) for t in entry.get("top_logprobs") or []
                       if isinstance(t, dict) and isinstance(t.get("logprob"), int | float)]
                out.append((str(entry.get("token", "")), float(entry["logprob"]), top))
        return out
    tokens = logprobs.get("tokens") or []
    values = logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or []
    for i, (token, value) in enumerate(zip(tokens, values, strict=False)):
        if not isinstance(value, int | float):
            continue
        top_i = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        out.append((str(token), float(value), [(str(t), float(v)) for t, v in top_i.items()
                                                if isinstance(v, int | float)]))
    return out


def for_client(kind: Kind, choice: dict[str, Any], client: ClientLogprobs) -> None:
    """Cut ``choice``'s logprobs (in place) back to what the client asked for."""
    if "logprobs" not in choice:
        return
    if not client.wanted:
        choice["logprobs"] = None
        return
    logprobs = choice["logprobs"]
    if not isinstance(logprobs, dict):
        return
    if kind == "chat":
        for entry in logprobs.get("content") or []:
            if isinstance(entry, dict) and isinstance(entry.get("top_logprobs"), list):
                entry["top_logprobs"] = entry["top_logprobs"][: client.top]
    elif isinstance(logprobs.get("top_logprobs"), list):
        logprobs["top_logprobs"] = [dict(list(t.items())[: client.top]) if isinstance(t, dict) else t
                                    for t in logprobs["top_logprobs"]]


def needs_rewrite(client: ClientLogprobs) -> bool:
    """Whether the engine's chunks differ from what the client should see (then each one is re-serialised)."""
    return not client.wanted or client.top < CLAIM_TOP_K
