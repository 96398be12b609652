"""Local network for `make run`: anvil + the dinfer contracts deployed from the genesis file.

Writes ``<state_dir>/devnet.json`` (RPC URL, chain id, contract addresses, demo keys) for every other tool and test,
logs per process under ``<state_dir>/``, and a pid file so ``dinfer devnet down`` can stop it from another shell.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dinfer.chain.anvil import DEFAULT_MNEMONIC, AnvilProcess
from dinfer.chain.backends import connect
from dinfer.chain.deploy import Deployment, deploy_network
from dinfer.chain.txqueue import TxSender
from dinfer.config import DevnetSettings
from dinfer.errors import ConfigError
from dinfer.genesis import Genesis, load_genesis

OWNER_INDEX = 0
TREASURY_INDEX = 9
DEMO_CLIENT_INDEX = 10
HOST_INDEX_BASE = 1
"""anvil accounts: 0 governance owner, 1..8 hosts, 9 treasury, 10.. demo clients."""


@dataclass
class DevnetInfo:
    """What ``devnet.json`` holds."""

    rpc_url: str
    chain_id: int
    deployment: dict[str, Any]
    owner_key: str
    treasury: str
    demo_client_key: str
    demo_client_address: str
    mnemonic: str = DEFAULT_MNEMONIC
    hosts: list[dict[str, Any]] = field(default_factory=list)
    pid: int = 0

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> DevnetInfo:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"no devnet at {path}: start one with `make run` (or `dinfer devnet up`)") from None

    @property
    def contracts(self) -> Deployment:
        return Deployment(**self.deployment)


class Devnet:
    """Starts, describes and stops the local network. Use as ``async with Devnet(settings) as net: ...``."""

    def __init__(self, settings: DevnetSettings, genesis: Genesis | None = None) -> None:
        self.settings = settings
        self.genesis = genesis or load_genesis(settings.genesis)
        self.state_dir = Path(settings.state_dir)
        self.anvil: AnvilProcess | None = None
        self.info: DevnetInfo | None = None

    @property
    def info_path(self) -> Path:
        return self.state_dir / "devnet.json"

    async def start(self) -> DevnetInfo:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.anvil = await AnvilProcess.start(
            port=self.settings.anvil_port,
            block_time=self.settings.block_time_s,
            accounts=DEMO_CLIENT_INDEX + 10,
            log_path=self.state_dir / "anvil.log",
        )
        w3 = connect([self.anvil.url])
        try:
            owner = self.anvil.accounts[OWNER_INDEX]
            treasury = self.anvil.accounts[TREASURY_INDEX]
            sender = TxSender(w3, owner, poll_interval=0.1)
            deployment = await deploy_network(w3, sender, self.genesis, treasury=treasury.address)
            await sender.close()
        finally:
            await w3.provider.disconnect()
        deployment.save(self.state_dir / "deployment.json")
        client = self.anvil.accounts[DEMO_CLIENT_INDEX]
        self.info = DevnetInfo(
            rpc_url=self.anvil.url,
            chain_id=self.anvil.chain_id,
            deployment=asdict(deployment),
            owner_key=owner.private_key,
            treasury=treasury.address,
            demo_client_key=client.private_key,
            demo_client_address=client.address,
            pid=os.getpid(),
        )
        self.info.save(self.info_path)
        return self.info

    def stop(self) -> None:
        if self.anvil is not None:
            self.anvil.stop()
            self.anvil = None
        if self.info_path.exists():
            self.info_path.unlink()

    async def __aenter__(self) -> Devnet:
        try:
            await self.start()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()


def stop_running(state_dir: Path, timeout: float = 15.0) -> bool:
    """Ask a devnet started in another shell to stop (SIGINT to its supervisor). False if none is running."""
    path = state_dir / "devnet.json"
    if not path.exists():
        return False
    info = DevnetInfo.load(path)
    try:
        os.kill(info.pid, signal.SIGINT)
    except ProcessLookupError:  # stale file from a killed supervisor
        path.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and path.exists():
        time.sleep(0.1)
    return True
