"""Typed client of Epochs.vy: epoch number, epoch groups (members + prefix-summed weights), member status."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_utils import keccak

from dinfer.chain.contracts.base import ContractClient

GROUP_CHUNK = 256
"""Members per ``add_group_members`` transaction (the contract's ``MAX_ADD``)."""
GAS_PER_MEMBER = 55_000
"""Upper bound of the gas one appended member costs (two fresh storage words + calldata)."""


class MemberStatus(IntEnum):
    """A participant's status in one epoch (Epochs.vy ``ACTIVE``/``INACTIVE``/``INVALID``)."""

    ACTIVE = 0
    INACTIVE = 1
    INVALID = 2


class WalkCode(IntEnum):
    """Outcome of ``Epochs.walk``."""

    OK = 0
    NO_ACTIVE = 1
    AFTER_NOT_DRAWN = 2
    EMPTY_GROUP = 3
    TOO_MANY_SKIPPED = 4


@dataclass(frozen=True)
class Group:
    """An epoch group: members in order and their weights (the contract stores prefix sums)."""

    members: tuple[str, ...]
    weights: tuple[int, ...]


@dataclass(frozen=True)
class Walk:
    code: WalkCode
    member: str | None
    index: int | None
    skipped: tuple[str, ...]


def model_key(model_id: str) -> bytes:
    """``keccak256(model_id)``: how Registry, Epochs and Inference key a model."""
    return keccak(model_id.encode())


class EpochsClient(ContractClient):
    """Epochs.vy. Governance calls (groups, epoch switch, overrides) need the owner's sender."""

    async def current_epoch(self) -> int:
        return int(await self._call("current_epoch"))

    async def owner(self) -> str:
        return str(await self._call("owner"))

    async def set_inference(self, inference: str) -> dict[str, Any]:
        return await self._transact("set_inference", inference)

    async def add_group(
        self, epoch: int, model: bytes, members: list[str], weights: list[int], *, estimate: bool = True
    ) -> list[dict[str, Any]]:
        """Append ``members`` with ``weights`` in chunks of 256 (one transaction each); returns the receipts.

        ``estimate=False`` sends each chunk with a fixed gas budget (``GAS_PER_MEMBER`` each) instead of asking the
        node to estimate: much faster for large groups on py-evm, whose estimation re-executes the call many times.
        """
        if len(members) != len(weights):
            raise ValueError("members and weights differ in length")
        receipts = []
        for i in range(0, len(members), GROUP_CHUNK):
            chunk = slice(i, i + GROUP_CHUNK)
            gas = None if estimate else 100_000 + GAS_PER_MEMBER * len(members[chunk])
            receipts.append(
                await self._transact("add_group_members", epoch, model, members[chunk], weights[chunk], gas=gas)
            )
        return receipts

    async def advance_epoch(self) -> dict[str, Any]:
        return await self._transact("advance_epoch")

    async def governance_set_status(self, members: str | list[str], status: MemberStatus) -> dict[str, Any]:
        """Governance override of the current epoch's status of one member or a list of them (≤ 256)."""
        batch = [members] if isinstance(members, str) else members
        return await self._transact("governance_set_status", batch, int(status))

    async def clear_invalid(self, member: str) -> dict[str, Any]:
        return await self._transact("clear_invalid", member)

    async def status_of(self, epoch: int, member: str) -> MemberStatus:
        return MemberStatus(int(await self._call("status_of", epoch, member)))

    async def group_size(self, epoch: int, model: bytes) -> int:
        return int(await self._call("group_size", epoch, model))

    async def total_weight(self, epoch: int, model: bytes) -> int:
        return int(await self._call("total_weight", epoch, model))

    async def position_of(self, epoch: int, model: bytes, member: str) -> int | None:
        """Index of ``member`` in the group, ``None`` when it is not a member."""
        position = int(await self._call("position_of", epoch, model, member))
        return position - 1 if position else None

    async def get_group(self, epoch: int, model: bytes) -> Group:
        """The whole group (paged reads of 256)."""
        members: list[str] = []
        prefixes: list[int] = []
        size = await self.group_size(epoch, model)
        while len(members) < size:
            page_members, page_prefixes = await self._call("get_group", epoch, model, len(members), GROUP_CHUNK)
            members += [str(m) for m in page_members]
            prefixes += [int(p) for p in page_prefixes]
        weights = [p - (prefixes[i - 1] if i else 0) for i, p in enumerate(prefixes)]
        return Group(tuple(members), tuple(weights))

    async def walk(self, epoch: int, model: bytes, inference_id: bytes, after: str | None, max_draws: int) -> Walk:
        """The contract's replay of the executor order (what Inference verifies against)."""
        zero = "0x" + "00" * 20
        code, member, index, skipped = await self._call("walk", epoch, model, inference_id, after or zero, max_draws)
        found = WalkCode(int(code)) == WalkCode.OK
        return Walk(
            WalkCode(int(code)),
            str(member) if found else None,
            int(index) if found else None,
            tuple(str(s) for s in skipped),
        )
