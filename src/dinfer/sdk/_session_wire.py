"""The client's half of the session WebSocket protocol as pure functions and records (no I/O).

Frames are the JSON objects of the session protocol (``docs/sessions.md``): this module builds the signed ones
(``session_init``/``session_resume`` auth, ``prompt``, ``receipt``) and parses the host's replies into typed
records, so ``SessionClient`` only moves them over a socket.

Errors::

    NodeError
    ├── SessionError(code)        the host answered an ``error`` frame (``code`` is the protocol's error code)
    └── NodeUnavailable
        └── SessionDisconnected   the socket closed or stayed silent; ``partial`` holds text already streamed
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dinfer.crypto import prompt_digest, session_auth_digest, sign_digest_eip191
from dinfer.errors import NodeError, NodeUnavailable

WS_PATH = "/v1/ws"
MAX_FRAME_BYTES = 1 << 20
"""The host's frame limit (``node.ws_max_frame_bytes``); the client refuses to send anything larger."""

TRANSIENT_CODES = frozenset({"RATE_LIMITED", "ENGINE_UNAVAILABLE", "BUSY"})
"""Error codes after which the same prompt may be sent again (nothing was billed)."""


class SessionError(NodeError):
    """The host refused a session message. ``code`` is one of the protocol's error codes (``UNAUTHORIZED``…)."""

    def __init__(self, code: str, message: str, *, retry_after_s: float | None = None) -> None:
        self.code = code
        self.retry_after_s = retry_after_s
        super().__init__(f"{code}: {message}")

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> SessionError:
        retry = frame.get("retry_after_s")
        return cls(str(frame.get("code", "INTERNAL")), str(frame.get("message", "")),
                   retry_after_s=float(retry) if isinstance(retry, int | float) else None)


class SessionDisconnected(NodeUnavailable):
    """The session socket closed (or the host stopped answering) before the reply was complete."""

    def __init__(self, message: str, *, partial: str = "") -> None:
        self.partial = partial
        super().__init__(message)


def ws_url(base_url: str) -> str:
    """The session socket of a host: ``http://h:9000`` (or ``…/v1``) → ``ws://h:9000/v1/ws``; https → wss."""
    parts = urlsplit(base_url.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not a host URL: {base_url!r} (e.g. http://127.0.0.1:9000)")
    path = parts.path.rstrip("/").removesuffix(WS_PATH).removesuffix("/v1")
    return urlunsplit((scheme, parts.netloc, path + WS_PATH, "", ""))


def http_url(base_url: str) -> str:
    """The host's root URL (no ``/v1``, no trailing slash), from an http(s) or ws(s) URL."""
    parts = urlsplit(base_url.strip())
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/").removesuffix(WS_PATH).removesuffix("/v1")
    return urlunsplit((scheme, parts.netloc, path, "", ""))


# ------------------------------------------------------------------ signed client frames


@dataclass(frozen=True)
class SessionKeys:
    """What signing needs: the client's key and the Sessions contract's domain."""

    private_key: str
    chain_id: int
    sessions_contract: str


def signed_auth(keys: SessionKeys, job_id: int, host: str, *, now: int | None = None) -> dict[str, Any]:
    """``{timestamp, signature}`` proving the client key controls ``job_id`` (``session_init``, the token route)."""
    timestamp = int(time.time()) if now is None else now
    digest = session_auth_digest(keys.chain_id, keys.sessions_contract, job_id, host, timestamp)
    return {"timestamp": timestamp, "signature": "0x" + sign_digest_eip191(digest, keys.private_key).hex()}


def new_nonce() -> str:
    """32 random bytes, 0x-hex: a prompt nonce (each is accepted once per job, forever)."""
    return "0x" + secrets.token_bytes(32).hex()


def prompt_frame(keys: SessionKeys, job_id: int, message_index: int, content: str, *, stream: bool = True,
                 max_tokens: int | None = None, temperature: float | None = None, frame_id: str | None = None,
                 now: int | None = None, nonce: str | None = None) -> dict[str, Any]:
    """A signed ``prompt`` frame (replay protection: fresh nonce, current timestamp, increasing index)."""
    timestamp = int(time.time()) if now is None else now
    nonce = nonce or new_nonce()
    digest = prompt_digest(job_id, message_index, timestamp, bytes.fromhex(nonce[2:]), content)
    frame: dict[str, Any] = {
        "type": "prompt", "content": content, "message_index": message_index, "timestamp": timestamp,
        "nonce": nonce, "signature": "0x" + sign_digest_eip191(digest, keys.private_key).hex(), "stream": stream,
    }
    if frame_id is not None:
        frame["id"] = frame_id
    if max_tokens is not None:
        frame["max_tokens"] = max_tokens
    if temperature is not None:
        frame["temperature"] = temperature
    return frame


# ------------------------------------------------------------------ host replies


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_wire(cls, raw: Any) -> Usage:
        raw = raw if isinstance(raw, dict) else {}
        prompt, completion = int(raw.get("prompt_tokens", 0)), int(raw.get("completion_tokens", 0))
        return cls(prompt, completion, int(raw.get("total_tokens", prompt + completion)))


@dataclass(frozen=True)
class PromptResult:
    """One finished generation: the answer, its billed usage and the session's running total."""

    message_index: int
    content: str
    usage: Usage
    cumulative_tokens: int
    finish_reason: str

    @classmethod
    def from_wire(cls, frame: dict[str, Any], content: str) -> PromptResult:
        return cls(int(frame.get("message_index", 0)), content, Usage.from_wire(frame.get("usage")),
                   int(frame.get("cumulative_tokens", 0)), str(frame.get("finish_reason") or "stop"))


@dataclass(frozen=True)
class SessionAck:
    """The host's ``session_ack``: the socket is bound to ``job_id`` and prompts may follow."""

    job_id: int
    model: str
    token: str
    expires_at: float
    cumulative_tokens: int
    checkpoint_tokens: int
    context_tokens: int
    max_tokens: int
    resumed: bool

    @classmethod
    def from_wire(cls, frame: dict[str, Any]) -> SessionAck:
        return cls(int(frame["job_id"]), str(frame.get("model", "")), str(frame.get("token", "")),
                   float(frame.get("expires_at", 0)), int(frame.get("cumulative_tokens", 0)),
                   int(frame.get("checkpoint_tokens", 0)), int(frame.get("context_tokens", 0)),
                   int(frame.get("max_tokens", 0)), bool(frame.get("resumed", False)))


@dataclass(frozen=True)
class SessionClosed:
    """The host's ``session_closed`` after ``session_end``: what it served and what it proved on chain."""

    job_id: int
    cumulative_tokens: int
    proven_tokens: int

    @classmethod
    def from_wire(cls, frame: dict[str, Any]) -> SessionClosed:
        return cls(int(frame["job_id"]), int(frame.get("cumulative_tokens", 0)), int(frame.get("proven_tokens", 0)))


@dataclass(frozen=True)
class SignedReceipt:
    """A receipt the client signed in answer to a ``receipt_request``."""

    job_id: int
    cumulative_tokens: int
    signature: str


@dataclass
class ReceiptGuard:
    """Decides which ``receipt_request``s the client signs.

    The client vouches for tokens it was served: a request is signed only for its own job, for a total that
    grows (an equal total is re-signed: signatures are deterministic, so this is a harmless resend after a
    reconnect) and that the deposit pays for (``max_tokens``: the chain refuses more anyway).
    """

    job_id: int
    max_tokens: int
    signed: list[SignedReceipt] = field(default_factory=list)

    @property
    def last_tokens(self) -> int:
        return self.signed[-1].cumulative_tokens if self.signed else 0

    def refusal(self, frame: dict[str, Any]) -> str | None:
        """Why this request must not be signed, or None when it may."""
        try:
            job, tokens = int(frame["job_id"]), int(frame["cumulative_tokens"])
        except (KeyError, TypeError, ValueError):
            return "receipt_request without integer job_id / cumulative_tokens"
        if job != self.job_id:
            return f"receipt_request for job {job}, this session is job {self.job_id}"
        if tokens <= 0 or tokens < self.last_tokens:
            return f"receipt_request for {tokens} tokens after a receipt for {self.last_tokens}"
        if self.max_tokens and tokens > self.max_tokens:
            return f"receipt_request for {tokens} tokens, the deposit pays for {self.max_tokens}"
        return None


@dataclass
class Conversation:
    """The client's copy of the conversation: what ``session_resume`` sends to rebuild the host's context."""

    messages: list[dict[str, str]] = field(default_factory=list)

    def add_turn(self, prompt: str, answer: str) -> None:
        self.messages.append({"role": "user", "content": prompt})
        self.messages.append({"role": "assistant", "content": answer})

    def context(self) -> list[dict[str, str]]:
        return [dict(m) for m in self.messages]

    def __len__(self) -> int:
        return len(self.messages)


def refresh_delay(expires_at: float, now: float, *, margin_s: float = 60.0) -> float:
    """Seconds until the JWT should be refreshed: ``margin_s`` before expiry (a fifth of what is left if sooner)."""
    left = expires_at - now
    if left <= 0:
        return 0.0
    return max(0.0, left - min(margin_s, left / 5))
