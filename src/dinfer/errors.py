"""One exception root for dinfer.

The tree::

    DinferError
    ├── ConfigError                 invalid settings or genesis file (names the key)
    ├── CryptoError                 malformed key, signature or typed data
    ├── ChainError                  anything between us and the EVM chain
    │   ├── RpcUnavailable          no healthy RPC connection left in the pool
    │   ├── TxDropped               a sent transaction never made it into a block
    │   └── TxReverted(reason)      the contract refused; one subclass per named reason
    │                               (see ``dinfer.chain.reverts``)
    └── NodeError                   host node / ML node failures
        ├── NodeUnavailable         a peer process cannot be reached
        ├── InvalidRequest          malformed request to a node (400)
        ├── ModelNotFound           unknown model / not the loaded one (404)
        ├── Conflict                clashes with an operation in progress (409)
        ├── NotServing(retry_after) cannot serve now: PoC, no model, failed engine (503)
        │   └── QueueFull           every engine queue is full (503 + Retry-After)
        └── EngineFailed(status)    engine process failed, crashed or refused (502 / engine's 4xx)

HTTP mapping happens once, in the API layers, never here.
"""

from __future__ import annotations


class DinferError(Exception):
    """Root of every error dinfer raises on purpose."""


class ConfigError(DinferError, ValueError):
    """A setting or genesis entry is missing or out of range; the message names the key."""


class CryptoError(DinferError, ValueError):
    """A key, signature or typed-data payload could not be parsed or verified."""


class AuthError(DinferError):
    """A request's signature headers are missing, malformed, stale or do not match (HTTP 401)."""


class ChainError(DinferError):
    """Failure talking to, or refused by, the chain."""


class RpcUnavailable(ChainError):
    """Every connection in the RPC pool is unhealthy."""


class TxDropped(ChainError):
    """A transaction was not mined within its deadline, even after fee bumps."""


class TxReverted(ChainError):
    """The contract reverted. ``reason`` is the contract's reason string (e.g. ``"InvalidModel"``).

    Every reason has its own subclass, so callers can catch exactly one refusal::

        try:
            await registry.submit_hardware_diff(...)
        except TxReverted.named("InvalidModel"):
            ...
    """

    reason: str
    _subclasses: dict[str, type[TxReverted]] = {}  # noqa: RUF012 - class-level registry by design

    def __new__(cls, reason: str, *, tx_hash: str | None = None) -> TxReverted:
        target = cls.named(reason) if cls is TxReverted else cls
        return super().__new__(target)

    @classmethod
    def named(cls, reason: str) -> type[TxReverted]:
        """The subclass for one reason string (created once, then reused)."""
        sub = TxReverted._subclasses.get(reason)
        if sub is None:
            sub = type(reason if reason.isidentifier() else "UnnamedRevert", (TxReverted,), {})
            TxReverted._subclasses[reason] = sub
        return sub

    def __init__(self, reason: str, *, tx_hash: str | None = None) -> None:
        self.reason = reason
        self.tx_hash = tx_hash
        suffix = f" (tx {tx_hash})" if tx_hash else ""
        super().__init__(f"contract reverted: {reason}{suffix}")


class NodeError(DinferError):
    """Failure inside or between host nodes and ML nodes."""


class NodeUnavailable(NodeError):
    """A peer node or engine cannot be reached."""


class InvalidRequest(NodeError, ValueError):
    """A request to a node is malformed or out of range; the message names the field (HTTP 400)."""


class ModelNotFound(NodeError):
    """The named model is unknown, or not the one loaded on this ML node (HTTP 404)."""


class Conflict(NodeError):
    """The operation clashes with one already in progress, e.g. two concurrent ``inference/up`` (HTTP 409)."""


class NotServing(NodeError):
    """The ML node cannot serve inference right now (PoC running, no model loaded, engine failed): retry later."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class QueueFull(NotServing):
    """Every engine's bounded queue is full: retry later (HTTP 503 + Retry-After)."""


class EngineFailed(NodeError):
    """An engine process failed to start, crashed, or answered with an error (HTTP 502, or the engine's 4xx)."""

    def __init__(self, message: str, *, status: int = 502) -> None:
        self.status = status
        super().__init__(message)
