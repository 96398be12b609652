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
        └── NodeUnavailable         a peer process cannot be reached

HTTP mapping happens once, in the API layers, never here.
"""

from __future__ import annotations


class DinferError(Exception):
    """Root of every error dinfer raises on purpose."""


class ConfigError(DinferError, ValueError):
    """A setting or genesis entry is missing or out of range; the message names the key."""


class CryptoError(DinferError, ValueError):
    """A key, signature or typed-data payload could not be parsed or verified."""


class ChainError(DinferError):
    """Failure talking to, or refused by, the chain."""


class RpcUnavailable(ChainError):
    """Every connection in the RPC pool is unhealthy."""


class TxDropped(ChainError):
    """A transaction was not mined within its deadline, even after fee bumps."""


class TxReverted(ChainError):
    """The contract reverted. ``reason`` is the contract's reason string (e.g. ``"InvalidModel"``)."""

    reason: str

    def __init__(self, reason: str, *, tx_hash: str | None = None) -> None:
        self.reason = reason
        self.tx_hash = tx_hash
        suffix = f" (tx {tx_hash})" if tx_hash else ""
        super().__init__(f"contract reverted: {reason}{suffix}")


class NodeError(DinferError):
    """Failure inside or between host nodes and ML nodes."""


class NodeUnavailable(NodeError):
    """A peer node or engine cannot be reached."""
