"""Run anvil (npm ``@foundry-rs/anvil``, pinned in package.json) as a subprocess.

Always with ``--block-time``: anvil's automine mode stalls under concurrent submission (measured here), and a
block time is what a real chain has anyway. Accounts come from a fixed mnemonic so the devnet is reproducible.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from dinfer.errors import ChainError
from dinfer.processes import spawn_group, terminate_group

if TYPE_CHECKING:
    from dinfer.crypto import Keypair

DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"
"""anvil's well-known development mnemonic. Never use these keys on a real chain."""

DEFAULT_CHAIN_ID = 31337


def derive_accounts(mnemonic: str, count: int) -> list[Keypair]:
    """The first ``count`` accounts of ``mnemonic`` on the standard Ethereum path."""
    # Local imports: eth_account takes ~1 s and dinfer.crypto brings eth_utils, while the many readers of
    # devnet.json import this module only for DEFAULT_MNEMONIC.
    from eth_account import Account

    from dinfer.crypto import Keypair

    Account.enable_unaudited_hdwallet_features()
    return [
        Keypair.from_private_key(Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}").key)
        for i in range(count)
    ]


def find_anvil() -> str:
    """Path of the anvil binary: ``DINFER_ANVIL``, the project's node_modules, or PATH."""
    override = os.environ.get("DINFER_ANVIL")
    candidates = [override] if override else []
    here = Path(__file__).resolve()
    candidates += [str(p / "node_modules" / ".bin" / "anvil") for p in [Path.cwd(), *here.parents]]
    for cand in candidates:
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    found = shutil.which("anvil")
    if found:
        return found
    raise ChainError("anvil not found: run `make install` (installs the pinned @foundry-rs/anvil from npm)")


def free_port() -> int:
    """A free TCP port on loopback (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(span: int, *, low: int = 20000, high: int | None = None) -> int:
    """First port of ``span`` consecutive free loopback ports below the kernel's ephemeral range.

    A devnet restarts hosts on fixed ports; a port handed out by the OS (``free_port``) sits in the ephemeral range,
    where any outgoing connection may take it as its source port while the host is down and make the restart fail
    with "address already in use". Ports below that range are only ever taken by a deliberate ``bind``.
    """
    last = (high or _ephemeral_low()) - span
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, last + 1, 10)
        if not any(_bound(port) for port in range(base, base + span)):
            return base
    raise RuntimeError(f"no {span} consecutive free ports between {low} and {last + span}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@dataclass
class AnvilProcess:
    """A running anvil. Use ``await AnvilProcess.start(...)`` and ``stop()`` (also on Ctrl-C)."""

    port: int
    block_time: float
    mnemonic: str
    accounts: list[Keypair]
    chain_id: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    async def start(
        cls,
        *,
        port: int | None = None,
        block_time: float = 1.0,
        mnemonic: str = DEFAULT_MNEMONIC,
        accounts: int = 20,
        balance_eth: int = 1_000_000,
        chain_id: int = DEFAULT_CHAIN_ID,
        log_path: Path | None = None,
        ready_timeout: float = 20.0,
    ) -> AnvilProcess:
        port = port or free_port()
        if port_in_use(port):
            raise ChainError(
                f"port {port} is already in use; pick another with --anvil-port or DINFER_DEVNET__ANVIL_PORT"
            )
        cmd = [
            find_anvil(), "--host", "127.0.0.1", "--port", str(port), "--block-time", str(block_time),
            "--mnemonic", mnemonic, "--accounts", str(accounts), "--balance", str(balance_eth),
            "--chain-id", str(chain_id), "--gas-limit", "60000000", "--code-size-limit", "49152",
        ]
        proc = spawn_group(cmd, log_path)
        node = cls(port, block_time, mnemonic, derive_accounts(mnemonic, accounts), chain_id, proc)
        try:
            await node.wait_ready(ready_timeout)
        except BaseException:
            node.stop()
            raise
        return node

    async def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise ChainError(f"anvil exited with code {self.proc.returncode} before it was ready")
                try:
                    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
                    r = await client.post(self.url, json=body)
                    if r.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise ChainError(f"anvil did not answer on {self.url} within {timeout:.0f} s")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate anvil and its process group; never leaves an orphan."""
        terminate_group(self.proc, timeout)
