"""Helpers of the Epochs contract tests."""

from __future__ import annotations

from eth_utils import keccak, to_checksum_address


def address_of(label: str, i: int) -> str:
    """A deterministic member address (group members need no keys to be drawn)."""
    return to_checksum_address(keccak(f"{label}-{i}".encode())[-20:])
