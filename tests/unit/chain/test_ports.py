"""Port blocks for devnets are free and outside the range the kernel hands to outgoing connections."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dinfer.chain.anvil import free_port_block


def _bind(sock: socket.socket, port: int) -> None:
    sock.bind(("127.0.0.1", port))


def test_block_is_free_and_below_the_ephemeral_range() -> None:
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    base = free_port_block(140)
    assert 20000 <= base and base + 140 <= ephemeral_low
    for port in (base, base + 139):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            _bind(sock, port)


def test_a_block_with_a_bound_port_is_skipped() -> None:
    base = free_port_block(20)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        _bind(held, base + 3)
        assert free_port_block(10, low=base, high=base + 20) == base + 10
        with pytest.raises(RuntimeError, match="no 10 consecutive free ports"):
            free_port_block(10, low=base, high=base + 10)
