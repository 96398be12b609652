"""Two chains behind one interface: in-process py-evm (fast tests) and anvil (multi-process, devnet).

Both hand out an ``AsyncWeb3`` and funded ``Keypair``s; everything above (deploy, contract clients, tx queue,
event polling) is backend-agnostic and signs locally with ``eth_sendRawTransaction``.
"""

from __future__ import annotations

from typing import Any, Protocol

from web3 import AsyncWeb3
from web3.providers.eth_tester import AsyncEthereumTesterProvider

from dinfer.chain.anvil import AnvilProcess
from dinfer.chain.rpc_pool import PooledProvider
from dinfer.crypto import Keypair


class ChainBackend(Protocol):
    w3: AsyncWeb3
    accounts: list[Keypair]
    chain_id: int

    async def mine(self, blocks: int = 1) -> None:
        """Produce ``blocks`` blocks now."""

    async def set_next_timestamp(self, timestamp: int) -> None:
        """Timestamp of the next block (tests of time windows)."""

    async def close(self) -> None:
        """Release the chain (stops anvil)."""


def connect(urls: list[str], *, connections_per_url: int = 2, request_timeout: float = 10.0,
            health_interval: float = 30.0) -> AsyncWeb3:
    """An ``AsyncWeb3`` over a self-healing pool of connections to ``urls``."""
    provider = PooledProvider(
        urls, connections_per_url=connections_per_url, request_timeout=request_timeout, health_interval=health_interval
    )
    return AsyncWeb3(provider)


class EthTesterBackend:
    """py-evm in-process via eth-tester. Every transaction is mined in its own block at once."""

    def __init__(self) -> None:
        self._provider = AsyncEthereumTesterProvider()
        self.tester: Any = self._provider.ethereum_tester
        self.w3 = AsyncWeb3(self._provider)
        self.accounts = [Keypair.from_private_key(k.to_hex()) for k in self.tester.backend.account_keys]
        self.chain_id = 131277322940537

    @classmethod
    async def start(cls) -> EthTesterBackend:
        backend = cls()
        backend.chain_id = await backend.w3.eth.chain_id
        return backend

    async def mine(self, blocks: int = 1) -> None:
        self.tester.mine_blocks(blocks)

    async def set_next_timestamp(self, timestamp: int) -> None:
        self.tester.time_travel(timestamp)

    async def close(self) -> None:
        return None


class AnvilBackend:
    """A real anvil subprocess reached through the RPC pool."""

    def __init__(self, anvil: AnvilProcess, w3: AsyncWeb3) -> None:
        self.anvil = anvil
        self.w3 = w3
        self.accounts = anvil.accounts
        self.chain_id = anvil.chain_id

    @classmethod
    async def start(cls, **anvil_kwargs: Any) -> AnvilBackend:
        anvil = await AnvilProcess.start(**anvil_kwargs)
        return cls(anvil, connect([anvil.url]))

    @property
    def url(self) -> str:
        return self.anvil.url

    async def mine(self, blocks: int = 1) -> None:
        await self.w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]

    async def set_next_timestamp(self, timestamp: int) -> None:
        await self.w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.w3.provider.disconnect()
        self.anvil.stop()
