"""Typed client of Registry.vy: governance parameters, models, hosts, ML nodes, ML-node versions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dinfer.chain.contracts.base import ContractClient
from dinfer.config import ProtocolParams


@dataclass(frozen=True)
class Model:
    id: str
    hf_repo: str
    hf_commit: str
    model_args: tuple[str, ...]
    vram: int
    throughput_per_nonce: int
    units_of_compute_per_token: int
    price_per_token: int

    @classmethod
    def from_chain(cls, raw: Any) -> Model:
        return cls(raw[0], raw[1], raw[2], tuple(raw[3]), *(int(x) for x in raw[4:8]))

    def to_chain(self) -> tuple[Any, ...]:
        return (self.id, self.hf_repo, self.hf_commit, list(self.model_args), self.vram,
                self.throughput_per_nonce, self.units_of_compute_per_token, self.price_per_token)


@dataclass(frozen=True)
class Host:
    address: str
    url: str
    metadata: str
    collateral: int
    unbonding: int
    unbonding_release_block: int
    registered_block: int


@dataclass(frozen=True)
class HardwareNode:
    node_id: str
    models: tuple[str, ...]
    hardware: str = ""
    throughput: int = 0

    @classmethod
    def from_chain(cls, raw: Any) -> HardwareNode:
        return cls(raw[0], tuple(raw[1]), raw[2], int(raw[3]))

    def to_chain(self) -> tuple[Any, ...]:
        return (self.node_id, list(self.models), self.hardware, self.throughput)


@dataclass(frozen=True)
class NodeRef:
    host: str
    node_id: str
    throughput: int


class RegistryClient(ContractClient):
    """Registry.vy. Views need no sender; state changes use the client's ``TxSender``."""

    # --- governance parameters
    async def param(self, name: str) -> int:
        return int(await self._call("param", ProtocolParams.param_id(name)))

    async def params(self) -> ProtocolParams:
        values = await self._call("params")
        return ProtocolParams(**dict(zip(ProtocolParams.names(), (int(v) for v in values), strict=True)))

    async def propose_param(self, name: str, value: int) -> dict[str, Any]:
        return await self._transact("propose_param", ProtocolParams.param_id(name), value)

    async def apply_param(self, name: str) -> dict[str, Any]:
        return await self._transact("apply_param", ProtocolParams.param_id(name))

    async def owner(self) -> str:
        return str(await self._call("owner"))

    async def transfer_ownership(self, new_owner: str) -> dict[str, Any]:
        return await self._transact("transfer_ownership", new_owner)

    async def accept_ownership(self) -> dict[str, Any]:
        return await self._transact("accept_ownership")

    async def set_slasher(self, slasher: str, allowed: bool = True) -> dict[str, Any]:
        return await self._transact("set_slasher", slasher, allowed)

    async def set_treasury(self, treasury: str) -> dict[str, Any]:
        return await self._transact("set_treasury", treasury)

    # --- models
    async def register_model(self, model: Model) -> dict[str, Any]:
        return await self._transact("register_model", model.to_chain())

    async def update_model(self, model: Model) -> dict[str, Any]:
        return await self._transact("update_model", model.to_chain())

    async def get_governance_models(self) -> list[Model]:
        return [Model.from_chain(m) for m in await self._call("get_governance_models")]

    async def get_governance_model(self, model_id: str) -> Model:
        return Model.from_chain(await self._call("get_governance_model", model_id))

    async def is_valid_governance_model(self, model_id: str) -> bool:
        return bool(await self._call("is_valid_governance_model", model_id))

    # --- hosts
    async def register_host(self, url: str, metadata: str, collateral: int) -> dict[str, Any]:
        return await self._transact("register_host", url, metadata, value=collateral)

    async def update_host(self, url: str, metadata: str) -> dict[str, Any]:
        return await self._transact("update_host", url, metadata)

    async def add_collateral(self, amount: int) -> dict[str, Any]:
        return await self._transact("add_collateral", value=amount)

    async def request_unbond(self, amount: int) -> dict[str, Any]:
        return await self._transact("request_unbond", amount)

    async def withdraw_unbonded(self) -> dict[str, Any]:
        return await self._transact("withdraw_unbonded")

    async def sweep_slashed(self) -> dict[str, Any]:
        return await self._transact("sweep_slashed")

    async def is_host(self, address: str) -> bool:
        return bool(await self._call("is_host", address))

    async def is_active_host(self, address: str) -> bool:
        return bool(await self._call("is_active_host", address))

    async def get_host(self, address: str) -> Host:
        raw = await self._call("get_host", address)
        return Host(address, raw[0], raw[1], *(int(x) for x in raw[2:6]))

    async def get_hosts(self) -> list[str]:
        return [str(a) for a in await self._call("get_hosts")]

    async def collateral_of(self, address: str) -> int:
        return int(await self._call("collateral_of", address))

    async def slashed_balance(self) -> int:
        return int(await self._call("slashed_balance"))

    # --- ML nodes
    async def submit_hardware_diff(self, added: list[HardwareNode], removed: list[str]) -> dict[str, Any]:
        return await self._transact("submit_hardware_diff", [n.to_chain() for n in added], removed)

    async def get_nodes(self, host: str) -> list[HardwareNode]:
        return [HardwareNode.from_chain(n) for n in await self._call("get_nodes", host)]

    async def get_nodes_for_model(self, model_id: str) -> list[NodeRef]:
        return [NodeRef(str(r[0]), r[1], int(r[2])) for r in await self._call("get_nodes_for_model", model_id)]

    # --- ML-node versions
    async def current_mlnode_version(self) -> str:
        return str(await self._call("current_mlnode_version"))

    async def mlnode_upgrade_plan(self) -> tuple[str, int] | None:
        version, height = await self._call("mlnode_upgrade_plan")
        return (str(version), int(height)) if version else None

    async def schedule_mlnode_upgrade(self, target_version: str, upgrade_height: int) -> dict[str, Any]:
        return await self._transact("schedule_mlnode_upgrade", target_version, upgrade_height)

    async def cancel_mlnode_upgrade(self) -> dict[str, Any]:
        return await self._transact("cancel_mlnode_upgrade")

    async def activate_mlnode_upgrade(self) -> dict[str, Any]:
        return await self._transact("activate_mlnode_upgrade")
