"""Turn web3's revert exceptions into ``TxReverted`` subclasses carrying the contract's reason string."""

from __future__ import annotations

import re
from typing import NoReturn

from eth_abi import decode
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError

from dinfer.errors import ChainError, TxReverted

_ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
_PREFIX = re.compile(r"^(?:execution reverted:?\s*|VM Exception while processing transaction: revert\s*)", re.I)


def reason_from_data(data: bytes | str | None) -> str | None:
    """Decode ``Error(string)`` revert data; None when it is not that shape."""
    if data is None:
        return None
    raw = bytes.fromhex(data[2:] if data.startswith("0x") else data) if isinstance(data, str) else data
    if raw[:4] != _ERROR_SELECTOR:
        return None
    try:
        (reason,) = decode(["string"], raw[4:])
    except Exception:
        return None
    return str(reason)


def reason_from_message(message: str) -> str:
    text = _PREFIX.sub("", message.strip()).strip().strip("'\"")
    if text in ("", "b", "0x"):  # a revert without data (e.g. a reentrancy lock) renders as str(b'')
        return "Reverted"
    return text




def as_tx_reverted(exc: BaseException, tx_hash: str | None = None) -> TxReverted | None:
    """The ``TxReverted`` for a web3 (or eth-tester) revert exception, or None when ``exc`` is not a revert."""
    if isinstance(exc, ContractPanicError):
        return TxReverted(f"Panic:{exc.message}", tx_hash=tx_hash)
    if isinstance(exc, ContractCustomError):
        return TxReverted(f"CustomError:{exc.data}", tx_hash=tx_hash)
    if isinstance(exc, ContractLogicError):
        data = exc.data if isinstance(exc.data, (str, bytes)) else None
        reason = reason_from_data(data) or reason_from_message(exc.message or str(exc))
        return TxReverted(reason, tx_hash=tx_hash)
    if type(exc).__module__.startswith("eth_tester") and type(exc).__name__ == "TransactionFailed":
        # The in-process py-evm backend raises its own type (eth-tester is a test-only dependency).
        arg = exc.args[0] if exc.args else ""
        reason = reason_from_data(arg) if isinstance(arg, bytes) else reason_from_message(str(arg))
        return TxReverted(reason or "Reverted", tx_hash=tx_hash)
    return None


def raise_chain_error(exc: Exception, what: str) -> NoReturn:
    """Re-raise a web3/eth-tester failure as ``TxReverted`` (a revert) or ``ChainError`` naming ``what`` failed."""
    reverted = as_tx_reverted(exc)
    if reverted is not None:
        raise reverted from None
    raise ChainError(f"{what}: {exc}") from exc
