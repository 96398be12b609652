"""The py-evm chain the SDK unit tests share: the genesis chain plus Sessions (and, when asked, Epochs/Inference)
and one registered host (accounts[1]), built once per module and kept as a snapshot."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.inference import deploy_ledger
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.deploy import Deployment, bind, deploy_sessions
from dinfer.chain.txqueue import TxSender


@dataclass
class HostChain:
    backend: EthTesterBackend
    snapshot: object
    deployment: Deployment


def deploy_with_host(base_chain: Any, host_url: str, *, ledger: bool) -> HostChain:
    """Deploy on ``base_chain`` (the ``_base_chain`` fixture) from its genesis snapshot; returns the new snapshot."""
    backend = base_chain.backend
    backend.tester.revert_to_snapshot(base_chain.snapshot)

    async def build() -> Deployment:
        owner, host = backend.accounts[0], backend.accounts[1]
        sender = TxSender(backend.w3, owner, poll_interval=0.01)
        registry = RegistryClient(bind(backend.w3, "Registry", base_chain.registry_address), sender)
        host_registry = registry.with_sender(TxSender(backend.w3, host, poll_interval=0.01))
        await host_registry.register_host(host_url, "{}", await registry.param("min_collateral_wei"))  # type: ignore[attr-defined]
        contracts = {"Registry": registry.address}
        if ledger:
            _, inference = await deploy_ledger(backend.w3, sender, registry)
            contracts["Inference"] = inference.address
        contracts["Sessions"] = (await deploy_sessions(backend.w3, sender, registry.address)).address
        return Deployment(chain_id=backend.chain_id, deployer=owner.address, block=0, contracts=contracts)

    deployment = asyncio.run(build())
    return HostChain(backend, backend.tester.take_snapshot(), deployment)
