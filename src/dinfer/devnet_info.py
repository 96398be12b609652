"""``devnet.json``: where a running devnet's chain, contracts and hosts are; ``stop_running`` stops that devnet.

Apart from ``dinfer.devnet`` so that the many tools that only read the file (``--admin`` defaults, ``dinfer client``,
the SDK) do not import the devnet's chain and contract stack, which takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dinfer.chain.anvil import DEFAULT_MNEMONIC
from dinfer.errors import ConfigError

if TYPE_CHECKING:
    from dinfer.chain.deploy import Deployment


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
    model: str = ""
    mnemonic: str = DEFAULT_MNEMONIC
    hosts: list[dict[str, Any]] = field(default_factory=list)
    pid: int = 0
    discovery_url: str = ""
    """The devnet's HTTP discovery service (``dinfer discovery serve``), empty when off."""

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
        from dinfer.chain.deploy import Deployment  # imports web3

        return Deployment(**self.deployment)

    @property
    def base_url(self) -> str:
        """OpenAI base URL of the first host."""
        return self.hosts[0]["url"] + "/v1" if self.hosts else ""


def stop_running(state_dir: Path, timeout: float = 30.0) -> bool:
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
