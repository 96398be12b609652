"""Typed clients of Inference.vy (escrow, batched start/finish/reassign records, expiry, queries, deployment) and
of Validation.vy (validate, dispute and count views), which Inference trusts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from web3 import AsyncWeb3
from web3.logs import DISCARD

from dinfer.chain.compiler import compile_contract
from dinfer.chain.contracts.base import ContractClient
from dinfer.chain.contracts.epochs import EpochsClient, MemberStatus
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.deploy import deploy_contract
from dinfer.chain.txqueue import TxSender
from dinfer.crypto import inference_id as id_of_signature
from dinfer.stats import critical_values, pack_critical_values, z_alpha_e4

MAX_START_BATCH = 64
"""Records per start transaction (Inference ``MAX_BATCH``)."""
MAX_SKIP = 32
"""Skipped members per start record (Inference ``MAX_SKIP``)."""
MAX_BATCH_SKIPPED = 256
"""Skipped members of all records of one start transaction (Inference ``MAX_BATCH_SKIPPED``)."""
_M32 = (1 << 32) - 1
_M40 = (1 << 40) - 1


class InferenceStatus(IntEnum):
    NONE = 0
    STARTED = 1
    FINISHED = 2
    EXPIRED = 3
    INVALIDATED = 4


@dataclass(frozen=True)
class StartRecord:
    """A TA's start record: the client's request signature and the executor the TA picked."""

    body_hash: bytes
    timestamp: int
    signature: bytes
    model_key: bytes
    executor: str
    skipped: tuple[str, ...] = ()
    prompt_tokens_est: int = 0
    max_tokens: int = 0

    @property
    def inference_id(self) -> bytes:
        return id_of_signature(self.signature)

    def to_chain(self, model_slot: int) -> tuple[bytes, bytes, bytes, int]:
        """``IInference.StartRecord``: (body_hash, r, s, meta) with the batch's ``model_slot`` for its model.

        ``meta`` packs, low bits first, executor 160 | timestamp 40 | reserved tokens 32 | v 8 | model slot 8 |
        skipped count 8. Out-of-range values are saturated so that the contract rejects them by name (a
        timestamp past 2^40 as FutureTimestamp, more tokens than 32 bits hold as BadTokenCount).
        """
        sig = self.signature
        tokens = min(self.prompt_tokens_est + self.max_tokens, _M32)
        meta = (
            int(self.executor, 16)
            | min(self.timestamp, _M40) << 160
            | tokens << 200
            | sig[64] << 232
            | model_slot << 240
            | len(self.skipped) << 248
        )
        return self.body_hash, sig[:32], sig[32:64], meta


StartBatch = tuple[list[bytes], list[tuple[bytes, bytes, bytes, int]], list[str]]
"""``start_inferences`` arguments: (models, records, skipped)."""


def start_batch_args(records: Sequence[StartRecord]) -> StartBatch:
    """Encode start records as ``start_inferences(models, records, skipped)``: each distinct model key once (a
    record names its model by slot), every record's skipped list concatenated in record order.

    Raises ``ValueError`` for more than ``MAX_START_BATCH`` records, a skipped list longer than ``MAX_SKIP`` or
    more than ``MAX_BATCH_SKIPPED`` skipped members in all (``start_chunks`` splits a longer batch).
    """
    if len(records) > MAX_START_BATCH:
        raise ValueError(f"{len(records)} start records: at most {MAX_START_BATCH} per transaction")
    models: list[bytes] = []
    slots: dict[bytes, int] = {}
    encoded: list[tuple[bytes, bytes, bytes, int]] = []
    skipped: list[str] = []
    for rec in records:
        if len(rec.skipped) > MAX_SKIP:
            raise ValueError(f"a start record skips {len(rec.skipped)} members: at most {MAX_SKIP}")
        slot = slots.setdefault(rec.model_key, len(models))
        if slot == len(models):
            models.append(rec.model_key)
        encoded.append(rec.to_chain(slot))
        skipped.extend(rec.skipped)
    if len(skipped) > MAX_BATCH_SKIPPED:
        raise ValueError(f"{len(skipped)} skipped members in one start batch: at most {MAX_BATCH_SKIPPED}")
    return models, encoded, skipped


def start_chunks(records: Sequence[StartRecord]) -> list[list[StartRecord]]:
    """Split start records, in order, into batches that ``start_batch_args`` accepts (count and skipped room)."""
    chunks: list[list[StartRecord]] = []
    room = 0
    for rec in records:
        if not chunks or len(chunks[-1]) == MAX_START_BATCH or len(rec.skipped) > room:
            chunks.append([])
            room = MAX_BATCH_SKIPPED
        chunks[-1].append(rec)
        room -= len(rec.skipped)
    return chunks


@dataclass(frozen=True)
class FinishRecord:
    inference_id: bytes
    prompt_tokens: int
    completion_tokens: int
    response_hash: bytes = bytes(32)

    def to_chain(self) -> tuple[Any, ...]:
        return (self.inference_id, self.prompt_tokens, self.completion_tokens, self.response_hash)


@dataclass(frozen=True)
class ReassignRecord:
    inference_id: bytes
    failed_executor: str
    next_executor: str

    def to_chain(self) -> tuple[Any, ...]:
        return (self.inference_id, self.failed_executor, self.next_executor)


@dataclass(frozen=True)
class InferenceInfo:
    status: InferenceStatus
    reassigned: bool
    client: str
    ta: str
    executor: str
    model_key: bytes
    epoch: int
    start_block: int
    reserved_tokens: int
    prompt_tokens: int
    completion_tokens: int
    price_per_token: int
    reserved: int
    cost: int
    skipped: tuple[str, ...] = field(default=())

    @classmethod
    def from_chain(cls, raw: Any) -> InferenceInfo:
        return cls(
            InferenceStatus(int(raw[0])),
            bool(raw[1]),
            str(raw[2]),
            str(raw[3]),
            str(raw[4]),
            bytes(raw[5]),
            *(int(x) for x in raw[6:14]),
            tuple(str(s) for s in raw[14]),
        )


@dataclass(frozen=True)
class ExecutorStats:
    missed: int
    total: int
    first_missed_block: int
    slashed: bool
    status: MemberStatus


class ValidationOutcome(IntEnum):
    NONE = 0
    DISPUTED = 1
    CONFIRMED_INVALID = 2
    CONTRADICTED = 3
    NO_TIEBREAKER = 4


@dataclass(frozen=True)
class ValidationState:
    """Validation.vy's record of one inference (``validation_of``)."""

    outcome: ValidationOutcome
    validations: int
    first_invalid: str
    """The validator whose failed validation opened the dispute (zero address when none)."""
    tiebreaker: str
    dispute_block: int


@dataclass(frozen=True)
class BatchOutcome:
    """What one batched transaction did, record by record (from its events)."""

    applied: tuple[bytes, ...]
    """Ids started / finished / reassigned by this transaction."""
    rejected: dict[bytes, str]
    """Id → reason of every record the contract skipped (``RecordRejected``)."""
    duplicates: tuple[bytes, ...] = ()
    """Ids whose finish was already recorded (``DuplicateFinish``: a no-op, never a double charge)."""


_APPLIED_EVENT = {"start": "InferenceStarted", "finish": "InferenceFinished", "reassign": "InferenceReassigned"}


class InferenceClient(ContractClient):
    """Inference.vy. Clients deposit/withdraw; TAs start and reassign; executors finish; anyone expires."""

    # --- escrow
    async def deposit(self, amount: int) -> dict[str, Any]:
        return await self._transact("deposit", value=amount)

    async def withdraw(self, amount: int) -> dict[str, Any]:
        return await self._transact("withdraw", amount)

    async def withdraw_earnings(self) -> dict[str, Any]:
        return await self._transact("withdraw_earnings")

    async def balance_of(self, client: str) -> int:
        return int(await self._call("balance_of", client))

    async def earnings(self, host: str) -> int:
        return int(await self._call("earnings", host))

    # --- records (batched; bad records come back as RecordRejected events, not exceptions)
    async def start_inferences(self, records: Sequence[StartRecord], gas: int | None = None) -> dict[str, Any]:
        """One start transaction (``start_batch_args`` says what fits; ``start_chunks`` splits the rest)."""
        return await self._transact("start_inferences", *start_batch_args(records), gas=gas)

    async def finish_inferences(self, records: list[FinishRecord], gas: int | None = None) -> dict[str, Any]:
        return await self._transact("finish_inferences", [r.to_chain() for r in records], gas=gas)

    async def reassign(self, records: list[ReassignRecord]) -> dict[str, Any]:
        return await self._transact("reassign", [r.to_chain() for r in records])

    async def expire(self, inference_id: bytes) -> dict[str, Any]:
        return await self._transact("expire", inference_id)

    async def report_downtime(self, executor: str) -> dict[str, Any]:
        return await self._transact("report_downtime", executor)

    def outcome(self, receipt: dict[str, Any], kind: str) -> BatchOutcome:
        """Split a batch receipt (``kind``: start, finish or reassign) into applied, rejected and duplicate ids."""

        def ids(event: str) -> list[Any]:
            return list(self.contract.events[event]().process_receipt(receipt, errors=DISCARD))

        return BatchOutcome(
            applied=tuple(bytes(e["args"]["inference_id"]) for e in ids(_APPLIED_EVENT[kind])),
            rejected={bytes(e["args"]["inference_id"]): str(e["args"]["reason"]) for e in ids("RecordRejected")},
            duplicates=tuple(bytes(e["args"]["inference_id"]) for e in ids("DuplicateFinish")),
        )

    # --- queries
    async def get_inference(self, inference_id: bytes) -> InferenceInfo:
        return InferenceInfo.from_chain(await self._call("get_inference", inference_id))

    async def executor_stats(self, epoch: int, executor: str) -> ExecutorStats:
        raw = await self._call("executor_stats", epoch, executor)
        return ExecutorStats(int(raw[0]), int(raw[1]), int(raw[2]), bool(raw[3]), MemberStatus(int(raw[4])))

    async def missed_stat_test_fails(self, missed: int, total: int) -> bool:
        return bool(await self._call("missed_stat_test_fails", missed, total))

    # --- validation debts (charges a validation put on an executor whose earnings could not cover them)
    async def debt_of(self, executor: str) -> int:
        return int(await self._call("debts", executor))

    async def owed(self, executor: str, creditor: str) -> tuple[int, int]:
        """(unpaid refund, unpaid validation fee) that ``executor`` owes ``creditor``."""
        return (
            int(await self._call("owed_refunds", executor, creditor)),
            int(await self._call("owed_fees", executor, creditor)),
        )

    async def settle_debt(self, executor: str, creditor: str) -> dict[str, Any]:
        return await self._transact("settle_debt", executor, creditor)

    async def validation_address(self) -> str:
        return str(await self._call("validation"))

    async def set_validation(self, validation: str) -> dict[str, Any]:
        return await self._transact("set_validation", validation)

    async def validation_client(self) -> ValidationClient:
        """The Validation contract this Inference trusts, acting as the same account."""
        address = await self.validation_address()
        contract = self.contract.w3.eth.contract(address=address, abi=compile_contract("Validation").abi)
        return ValidationClient(contract, self.sender)

    async def model_tokens(self, epoch: int, model_key: bytes) -> int:
        """Prompt + completion tokens of the model's inferences finished in ``epoch`` (Epochs' demand measure)."""
        return int(await self._call("model_tokens", epoch, model_key))


class ValidationClient(ContractClient):
    """Validation.vy: sampled validators and tie-breakers submit verdicts; views of disputes and counts."""

    async def validate(self, inference_id: bytes, ok: bool, score_ppm: int) -> dict[str, Any]:
        return await self._transact("validate", inference_id, ok, score_ppm)

    async def validation_of(self, inference_id: bytes) -> ValidationState:
        raw = await self._call("validation_of", inference_id)
        return ValidationState(ValidationOutcome(int(raw[0])), int(raw[1]), str(raw[2]), str(raw[3]), int(raw[4]))

    async def has_validated(self, inference_id: bytes, validator: str) -> bool:
        return bool(await self._call("has_validated", inference_id, validator))

    async def is_selected(self, inference_id: bytes, validator: str) -> bool:
        """The on-chain sampling rule alone, at the current ``validation_rate_bps``."""
        return bool(await self._call("is_selected", inference_id, validator))

    async def tiebreaker_for(self, inference_id: bytes, first_validator: str) -> str:
        return str(await self._call("tiebreaker_for", inference_id, first_validator))

    async def invalid_count(self, epoch: int, executor: str) -> int:
        return int(await self._call("invalid_count", epoch, executor))

    async def liar_count(self, epoch: int, validator: str) -> int:
        return int(await self._call("liar_count", epoch, validator))

    async def invalid_slashed(self, epoch: int, executor: str) -> bool:
        return bool(await self._call("invalid_slashed", epoch, executor))


async def deploy_ledger(
    w3: AsyncWeb3, sender: TxSender, registry: RegistryClient
) -> tuple[EpochsClient, InferenceClient]:
    """Deploy Epochs (+ its PoC contract) and Inference next to ``registry`` (the sender must own it) and wire them.

    Order: Epochs(registry) → PoC(epochs, registry) → Epochs.set_poc → Inference(registry, epochs) →
    Epochs.set_inference → Registry.set_slasher(inference) → Validation(registry, epochs, inference) →
    Inference.set_validation → Registry.set_slasher(validation). The MissedStatTest table is generated from the
    Registry's current ``missed_p0_bps`` / ``missed_alpha_bps``.
    """
    p0 = await registry.param("missed_p0_bps")
    alpha = await registry.param("missed_alpha_bps")
    epochs = EpochsClient(await deploy_contract(w3, sender, "Epochs", registry.address), sender)
    poc = await deploy_contract(w3, sender, "PoC", epochs.address, registry.address)
    await epochs.set_poc(poc.address)
    table = pack_critical_values(critical_values(p0, alpha))
    contract = await deploy_contract(
        w3, sender, "Inference", registry.address, epochs.address, table, p0, alpha, z_alpha_e4(alpha)
    )
    inference = InferenceClient(contract, sender)
    await epochs.set_inference(inference.address)
    await registry.with_sender(sender).set_slasher(inference.address, True)
    validation = await deploy_contract(w3, sender, "Validation", registry.address, epochs.address, inference.address)
    await inference.set_validation(validation.address)
    await registry.with_sender(sender).set_slasher(validation.address, True)
    return epochs, inference
