"""Validation test helpers: the Inference ledger plus its Validation contract and the Python spec of the rules.

Actors: the ledger's four group members act as executors and validators; ``client`` pays for inferences.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "inference"))

from inference_ledger import Ledger, make_ledger

from dinfer.chain.contracts.inference import StartRecord, ValidationClient
from dinfer.crypto import Keypair
from dinfer.validation import effective_rate_bps, second_validator, should_validate

BPS = 10_000


def sampled(inference_id: bytes, validator: str, rate_bps: int) -> bool:
    """The Python spec (``dinfer.validation``) the contract must match."""
    return should_validate(inference_id, validator, rate_bps)


async def rate_of(vl: VLedger, inference_id: bytes) -> int:
    """The per-validator rate the Python spec gives this inference now (``effective_rate_bps``)."""
    base = await vl.base.registry.param("validation_rate_bps")
    info = await vl.base.inference.get_inference(inference_id)
    size = await vl.base.epochs.group_size(info.epoch, info.model_key)
    stats = await vl.base.inference.executor_stats(info.epoch, info.executor)
    return effective_rate_bps(base, size, stats.total, await vl.validation.invalid_count(info.epoch, info.executor))


def tiebreaker(ledger: Ledger, inference_id: bytes, executor: str, first: str, active: list[bool]) -> str | None:
    """The Python spec (``dinfer.validation.second_validator``) the contract must match."""
    return second_validator(inference_id, ledger.group, ledger.weights, executor, first, ledger.max_draws, active)


@dataclass
class VLedger:
    """The Inference ledger and the Validation contract it trusts."""

    base: Ledger
    validation: ValidationClient

    def as_(self, who: Keypair) -> ValidationClient:
        return ValidationClient(self.validation.contract, self.base.sender_for(who))

    async def set_param(self, name: str, value: int) -> None:
        await self.base.registry.propose_param(name, value)  # governance_delay_blocks is 0 in the test genesis

    async def finished(self, prompt: int = 10, completion: int = 5) -> StartRecord:
        """A started and finished inference (executor picked by the spec)."""
        rec = await self.base.record()
        await self.base.start(rec)
        await self.base.finish(rec, prompt=prompt, completion=completion)
        return rec


async def make_vledger(chain, registry, genesis, actors, sender_for) -> VLedger:  # type: ignore[no-untyped-def]
    base = await make_ledger(chain, registry, genesis, actors, sender_for)
    return VLedger(base, await base.inference.validation_client())
