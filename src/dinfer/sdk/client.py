"""The dinfer client: one object per client account — escrow, per-request chat, sessions, billing and proofs.

``AsyncDinferClient`` does the work; ``DinferClient`` is its blocking twin (a private event loop on a daemon
thread). Both are built from a private key plus a chain RPC and a deployment, or from a devnet's ``devnet.json``.

Errors::

    DinferError
    ├── InsufficientDeposit        the escrow cannot pay: a request's reservation, a session's minimum, a withdrawal
    ├── ConfigError
    │   └── BadHostAddress         not a host URL/address, not registered, or not a dinfer node answering as that host
    ├── ChainError
    │   └── InsufficientFunds      the wallet cannot pay a deposit
    └── NodeError
        ├── NodeUnavailable
        │   └── HostUnreachable    nothing answers at the host's URL
        └── HostRefused(status, code)  any other refusal by the host (``retry_after_s`` on 429/503)

Example:
    >>> client = DinferClient.from_devnet("state/devnet/devnet.json")                   # doctest: +SKIP
    >>> client.deposit(10**16)
    >>> reply = client.chat(MODEL, [{"role": "user", "content": "Hi"}], host="http://127.0.0.1:9000")
    >>> reply.choices[0].message.content, reply.usage.total_tokens
"""

from dinfer.sdk._client_async import (
    AsyncDinferClient,
    BadHostAddress,
    ClientOptions,
    HostRef,
    HostRefused,
    HostUnreachable,
    InsufficientDeposit,
    InsufficientFunds,
    RequestInfo,
)
from dinfer.sdk._client_sync import DinferClient

__all__ = [
    "AsyncDinferClient", "BadHostAddress", "ClientOptions", "DinferClient", "HostRef", "HostRefused",
    "HostUnreachable", "InsufficientDeposit", "InsufficientFunds", "RequestInfo",
]
