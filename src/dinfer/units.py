"""Amounts people type (ETH, e.g. ``0.5``) ↔ wei, with one clear error."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from dinfer.errors import ConfigError

WEI_PER_ETH = 10**18


def eth_to_wei(amount: str) -> int:
    """``"0.5"`` → 5·10¹⁷; ``ConfigError`` for anything that is not a positive amount (exact: no float rounding)."""
    try:
        wei = Decimal(amount.strip()) * WEI_PER_ETH
    except InvalidOperation:
        raise ConfigError(f"not an amount of ETH: {amount!r} (e.g. 0.5)") from None
    if wei <= 0 or wei != wei.to_integral_value():
        raise ConfigError(f"amount must be positive with at most 18 decimals, got {amount!r}")
    return int(wei)
