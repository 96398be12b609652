"""Typed client of Epochs.vy (+ its PoC.vy): stage clock, PoC batches, epoch groups, timeslots, status, rewards.

PoC batches and validations live in a separate contract (PoC.vy, both stay under the EIP-170 size limit);
``EpochsClient`` reaches it through ``Epochs.poc()`` so callers see one client.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import keccak
from web3.contract import AsyncContract

from dinfer.chain.compiler import compile_contract
from dinfer.chain.contracts.base import ContractClient
from dinfer.chain.contracts.registry import Model
from dinfer.chain.reverts import raise_chain_error
from dinfer.chain.txqueue import TxSender
from dinfer.epochs_clock import Stage
from dinfer.selection import prefix_sums

GROUP_CHUNK = 256
"""Members per ``add_group_members`` transaction (the contract's ``MAX_ADD``)."""
GAS_PER_MEMBER = 105_000
"""Upper bound of the gas one appended member costs (group word, position, participant record + calldata)."""
_MODEL_ABI = "(string,string,string,string[],uint256,uint256,uint256,uint256)"


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

    @cached_property
    def cumulative(self) -> list[int]:
        """Prefix sums of the weights (what the contract stores), computed once per group, not per request."""
        return prefix_sums(self.weights)


@dataclass(frozen=True)
class Walk:
    code: WalkCode
    member: str | None
    index: int | None
    skipped: tuple[str, ...]


@dataclass(frozen=True)
class PoCWindow:
    """The PoC stages (POC_GENERATE, POC_VALIDATE) of the cycle that ends an epoch: blocks ``start <= b < end``.
    Inside it the executor order is the PoC order (``dinfer.selection.eligible_flags``)."""

    start: int
    end: int

    def contains(self, block: int, edge: int = 0) -> bool:
        """``block`` is in the window, or within ``edge`` blocks of it."""
        return self.start != 0 and self.start - edge <= block < self.end + edge


@dataclass(frozen=True)
class PoCBatch:
    """One ML node's committed PoC result in a cycle, with its validation tally."""

    host: str
    node_id: str
    model_id: str
    nonce_count: int
    merkle_root: bytes
    block: int
    passes: int
    fails: int

    @classmethod
    def from_chain(cls, raw: Any) -> PoCBatch:
        return cls(str(raw[0]), str(raw[1]), str(raw[2]), int(raw[3]), bytes(raw[4]), *(int(x) for x in raw[5:8]))

    @property
    def valid(self) -> bool:
        """Valid unless more validations failed than passed (ties and unvalidated batches are valid)."""
        return self.fails <= self.passes


@dataclass(frozen=True)
class MLNodeInfo:
    """An ML node of a participant in an epoch group, with its timeslot allocation."""

    node_id: str
    throughput: int
    poc_weight: int
    pre_poc_slot: bool
    poc_slot: bool
    """True: the node keeps serving inference during the epoch's PoC (its weight is preserved)."""

    @classmethod
    def from_chain(cls, raw: Any) -> MLNodeInfo:
        return cls(str(raw[0]), int(raw[1]), int(raw[2]), bool(raw[3][0]), bool(raw[3][1]))


@dataclass(frozen=True)
class GroupInfo:
    size: int
    total_weight: int
    total_throughput: int
    """Sum of the weighted ML nodes' throughput."""
    expected_throughput: int
    """Sum of the POC_SLOT nodes' throughput."""
    real_throughput: int
    """Tokens/s measured over the epoch (recorded when the epoch ends)."""


@dataclass(frozen=True)
class Coverage:
    covered: int
    total: int

    @property
    def full(self) -> bool:
        return self.total > 0 and self.covered == self.total


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
            gas = None if estimate else 300_000 + GAS_PER_MEMBER * len(members[chunk])
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

    async def walk(self, epoch: int, model: bytes, inference_id: bytes, after: str | None, max_draws: int,
                   poc: bool = False) -> Walk:
        """The contract's replay of the executor order (what Inference verifies against); ``poc`` = the PoC order,
        where ACTIVE members without a POC_SLOT node for the model are skipped too."""
        zero = "0x" + "00" * 20
        code, member, index, skipped = await self._call("walk", epoch, model, inference_id, after or zero, max_draws,
                                                        poc)
        found = WalkCode(int(code)) == WalkCode.OK
        return Walk(
            WalkCode(int(code)),
            str(member) if found else None,
            int(index) if found else None,
            tuple(str(s) for s in skipped),
        )

    # --- stage clock
    async def genesis_block(self) -> int:
        return int(await self._call("genesis_block"))

    async def stage_at(self, height: int) -> Stage:
        return Stage(int(await self._call("stage_at", height)))

    async def current_stage(self) -> Stage:
        return Stage(int(await self._call("current_stage")))

    async def poc_start_at(self, height: int) -> int:
        return int(await self._call("poc_start_at", height))

    async def switched_cycle(self) -> int:
        return int(await self._call("switched_cycle"))

    async def epoch_start_block(self, epoch: int) -> int:
        return int(await self._call("epoch_start_block", epoch))

    # --- PoC (PoC.vy, reached through Epochs.poc())
    async def poc_address(self) -> str:
        return str(await self._call("poc"))

    async def set_poc(self, poc: str) -> dict[str, Any]:
        return await self._transact("set_poc", poc)

    async def _poc(self) -> ContractClient:
        if getattr(self, "_poc_client", None) is None:
            address = await self.poc_address()
            contract: AsyncContract = self.contract.w3.eth.contract(address=address, abi=compile_contract("PoC").abi)
            self._poc_client = ContractClient(contract, self.sender)
        return self._poc_client

    async def poc_contract(self) -> AsyncContract:
        """The bound PoC contract (its events: ``PoCBatchSubmitted``, ``PoCValidated``)."""
        return (await self._poc()).contract

    async def submit_poc_batch(
        self, epoch: int, node_id: str, model_id: str, nonce_count: int, merkle_root: bytes
    ) -> dict[str, Any]:
        return await (await self._poc())._transact(
            "submit_poc_batch", epoch, node_id, model_id, nonce_count, merkle_root
        )

    async def submit_poc_validation(
        self, epoch: int, host: str, node_id: str, sampled_ok: int, sampled_total: int
    ) -> dict[str, Any]:
        return await (await self._poc())._transact(
            "submit_poc_validation", epoch, host, node_id, sampled_ok, sampled_total
        )

    async def get_poc_batches(self, poc_start: int) -> list[PoCBatch]:
        return [PoCBatch.from_chain(b) for b in await (await self._poc())._call("get_poc_batches", poc_start)]

    async def get_poc_batches_for_node(self, poc_start: int, host: str, node_id: str) -> list[PoCBatch]:
        raw = await (await self._poc())._call("get_poc_batches_for_node", poc_start, host, node_id)
        return [PoCBatch.from_chain(b) for b in raw]

    async def get_poc_batches_for_model(self, poc_start: int, model_id: str) -> list[PoCBatch]:
        raw = await (await self._poc())._call("get_poc_batches_for_model", poc_start, model_id)
        return [PoCBatch.from_chain(b) for b in raw]

    async def calculate_node_weight(self, poc_start: int, host: str, node_id: str) -> int:
        return int(await (await self._poc())._call("calculate_node_weight", poc_start, host, node_id))

    async def calculate_model_power(self, poc_start: int, model_id: str) -> int:
        return int(await (await self._poc())._call("calculate_model_power", poc_start, model_id))

    # --- epoch switch, groups, timeslots
    async def switch_epoch(self, gas: int | None = None) -> dict[str, Any]:
        return await self._transact("switch_epoch", gas=gas)

    async def get_epoch_model(self, epoch: int, model_id: str) -> Model:
        """The model as snapshotted for ``epoch`` (the contract returns its ABI encoding raw)."""
        fn = self._fn("get_epoch_model", epoch, model_id)
        try:
            data = await self.contract.w3.eth.call({"to": self.contract.address, "data": fn._encode_transaction_data()})
        except Exception as exc:
            raise_chain_error(exc, "get_epoch_model call failed")
        (raw,) = abi_decode([_MODEL_ABI], bytes(data))
        return Model.from_chain(raw)

    async def snapshot_price(self, epoch: int, model: bytes) -> int:
        return int(await self._call("snapshot_price", epoch, model))

    async def epoch_models(self, epoch: int) -> list[str]:
        return [str(m) for m in await self._call("epoch_models", epoch)]

    async def get_ml_nodes(self, epoch: int, model_id: str, participant: str) -> list[MLNodeInfo]:
        return [MLNodeInfo.from_chain(n) for n in await self._call("get_ml_nodes", epoch, model_id, participant)]

    async def group_info(self, epoch: int, model_id: str) -> GroupInfo:
        return GroupInfo(*(int(x) for x in await self._call("group_info", epoch, model_id)))

    async def is_poc_slot(self, epoch: int, model_id: str, host: str, node_id: str) -> bool:
        return bool(await self._call("is_poc_slot", epoch, model_id, host, node_id))

    async def poc_window(self, epoch: int) -> PoCWindow:
        """Blocks of the PoC stages that end ``epoch`` (fixed when the epoch started)."""
        word = int(await self._call("poc_window", epoch))
        return PoCWindow(start=word >> 128, end=word & ((1 << 128) - 1))

    async def poc_eligible(self, epoch: int, model: bytes, member: str) -> bool:
        """May ``member`` execute the model during ``epoch``'s PoC window (a POC_SLOT node, or an unallocated group)."""
        return bool(await self._call("poc_eligible", epoch, model, member))

    async def allocate_genesis_nodes(self, epoch: int, model_id: str) -> dict[str, Any]:
        return await self._transact("allocate_genesis_nodes", epoch, model_id)

    async def measure_model_throughput_for_blocks(self, epoch: int, model_id: str) -> int:
        return int(await self._call("measure_model_throughput_for_blocks", epoch, model_id))

    async def validate_throughput_performance(self, epoch: int, model_id: str) -> bool:
        return bool(await self._call("validate_throughput_performance", epoch, model_id))

    # --- participants and rewards
    async def participants(self, epoch: int) -> list[str]:
        return [str(p) for p in await self._call("participants", epoch)]

    async def participant_weight(self, epoch: int, participant: str) -> int:
        return int(await self._call("participant_weight", epoch, participant))

    async def participant_coverage(self, epoch: int, participant: str) -> Coverage:
        covered, total = await self._call("participant_coverage", epoch, participant)
        return Coverage(int(covered), int(total))

    async def reward_pool(self) -> int:
        return int(await self._call("reward_pool"))

    async def rewards_of(self, participant: str) -> int:
        return int(await self._call("rewards_of", participant))

    async def fund_rewards(self, amount: int) -> dict[str, Any]:
        return await self._transact("fund_rewards", value=amount)

    async def withdraw_rewards(self) -> dict[str, Any]:
        return await self._transact("withdraw_rewards")

    def with_sender(self, sender: TxSender) -> EpochsClient:
        """The same contracts, acting as another account."""
        return EpochsClient(self.contract, sender)
