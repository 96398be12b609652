"""``devnet.json``: where a running devnet's chain, contracts and hosts are.

Apart from ``dinfer.devnet`` so that the many tools that only read the file (``--admin`` defaults, ``dinfer client``,
the SDK) do not import the devnet's chain and contract stack, which takes seconds.
"""

from __future__ import annotations

import json
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
