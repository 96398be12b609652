"""Session proofs of work: when to claim, how much, and the ``submit_proof_of_work`` transaction.

Policy (docs/sessions.md, host section):

* a **checkpoint** is every crossed multiple of the Registry's ``checkpoint_tokens`` in a job's billed total; the
  host then asks the client for a signed receipt of that total;
* a proof is due every ``node.session_proof_checkpoints`` checkpoints, and at session end / socket close;
* the claim uses the latest receipt when it covers at least ``min_proven_tokens`` more than the chain has
  (the contract verifies it; no time bound), else an unsigned claim of
  ``min(billed, 2 × expected_tokens_per_sec × elapsed, deposit cap) − proven`` when that reaches the minimum.

No double claims across restarts: the amount is always computed from the chain's ``get_token_usage`` (never
from local memory), and the target total of an in-flight transaction is written to SQLite *before* it is sent;
after a restart a recorded target blocks new claims until the chain reached it or this account has no pending
transaction left (it was dropped or refused). A signed receipt names an exact total, so it can never be counted
twice either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.contracts.sessions import Session, SessionsClient, SessionState
from dinfer.errors import TxDropped, TxReverted
from dinfer.node.session_store import SessionRecord, SessionStore

log = logging.getLogger(__name__)

RETRY_UNSIGNED = frozenset({"InvalidReceipt"})
"""Reverts after which the same proof is retried once as an unsigned claim (the receipt was bad, the work real)."""


@dataclass(frozen=True)
class ProofPlan:
    """One ``submit_proof_of_work`` call."""

    tokens_claimed: int
    target: int
    """The cumulative total on chain once it lands."""
    proof: bytes
    """Client receipt (65 bytes) or ``b""`` for an unsigned claim."""

    @property
    def signed(self) -> bool:
        return bool(self.proof)


@dataclass(frozen=True)
class ProofOutcome:
    """What a submission did: ``plan`` is None when nothing was claimable."""

    proven_tokens: int
    plan: ProofPlan | None = None
    tx_hash: str = ""
    error: str = ""


def time_bound(session: Session, now: int, expected_tokens_per_sec: int) -> int:
    """Most cumulative tokens an unsigned claim may reach at block time ``now`` (Sessions.vy ``_time_bound``)."""
    elapsed = max(0, min(now, session.start_time + session.max_duration) - session.start_time)
    return 2 * expected_tokens_per_sec * elapsed


def plan_proof(*, chain_proven: int, billed: int, receipt_tokens: int, receipt: bytes, bound: int,
               max_tokens: int, min_proven: int, allow_receipt: bool = True) -> ProofPlan | None:
    """The claim to make now, or None when nothing reaches ``min_proven`` (pure; mirrors the contract's checks)."""
    if allow_receipt and receipt and receipt_tokens <= max_tokens and receipt_tokens - chain_proven >= min_proven:
        return ProofPlan(receipt_tokens - chain_proven, receipt_tokens, receipt)
    target = min(billed, bound, max_tokens)
    if target - chain_proven >= min_proven:
        return ProofPlan(target - chain_proven, target, b"")
    return None


def proof_due(record: SessionRecord, every: int) -> bool:
    """True when ``every`` checkpoints passed since the last proof."""
    return record.checkpoints - record.proof_checkpoint >= every


class ProofSubmitter:
    """Claims a job's proven tokens through the host's ``TxSender`` (one submission per job at a time)."""

    def __init__(self, sessions: SessionsClient, registry: RegistryClient, store: SessionStore, *,
                 block_time: Callable[[], Awaitable[int]], has_pending_tx: Callable[[], Awaitable[bool]]) -> None:
        self.sessions = sessions
        self.registry = registry
        self.store = store
        self._block_time = block_time
        self._has_pending_tx = has_pending_tx
        self._locks: dict[int, asyncio.Lock] = {}

    def _lock(self, job_id: int) -> asyncio.Lock:
        return self._locks.setdefault(job_id, asyncio.Lock())

    async def settle_pending(self, job_id: int) -> bool:
        """Resolve an in-flight proof recorded before a restart; True when the job is free to claim again."""
        record = await self.store.get(job_id)
        if record is None or record.pending_proof_target == 0:
            return True
        chain_proven = await self.sessions.get_token_usage(job_id)
        if chain_proven >= record.pending_proof_target or not await self._has_pending_tx():
            await self.store.set_proven(job_id, chain_proven)
            await self.store.set_pending_proof(job_id, 0)
            return True
        return False

    async def submit(self, job_id: int, *, checkpoint: bool = False) -> ProofOutcome:
        """Claim what is claimable now; ``checkpoint`` marks the proof as the periodic one (resets the count)."""
        async with self._lock(job_id):
            return await self._submit(job_id, checkpoint)

    async def _submit(self, job_id: int, checkpoint: bool) -> ProofOutcome:
        if not await self.settle_pending(job_id):
            record = await self.store.get(job_id)
            proven = record.proven_tokens if record else 0
            return ProofOutcome(proven, error="a previous proof is still in flight")
        record = await self.store.get(job_id)
        if record is None:
            return ProofOutcome(0, error="unknown job")
        session = await self.sessions.get_session(job_id)
        chain_proven = session.cumulative_tokens
        await self.store.set_proven(job_id, chain_proven)
        if session.state != SessionState.ACTIVE:
            return ProofOutcome(chain_proven, error=f"session is {session.state.name}")
        params = await self.registry.params()
        bound = time_bound(session, await self._block_time(), params.expected_tokens_per_sec)
        allow_receipt = True
        for _attempt in range(2):
            plan = plan_proof(chain_proven=chain_proven, billed=record.cumulative_tokens,
                              receipt_tokens=record.receipt_tokens, receipt=_hex(record.receipt_signature),
                              bound=bound, max_tokens=session.max_tokens, min_proven=params.min_proven_tokens,
                              allow_receipt=allow_receipt)
            if plan is None:
                return ProofOutcome(chain_proven)
            try:
                return await self._send(job_id, plan, checkpoint)
            except TxReverted as exc:
                log.warning("session %d: proof of %d tokens (%s) refused: %s", job_id, plan.tokens_claimed,
                            "signed" if plan.signed else "unsigned", exc.reason)
                if exc.reason in RETRY_UNSIGNED and plan.signed:
                    allow_receipt = False
                    continue
                return ProofOutcome(chain_proven, plan, error=exc.reason)
        return ProofOutcome(chain_proven, error="no claim after retry")

    async def _send(self, job_id: int, plan: ProofPlan, checkpoint: bool) -> ProofOutcome:
        await self.store.set_pending_proof(job_id, plan.target)
        try:
            receipt = await self.sessions.submit_proof_of_work(job_id, plan.tokens_claimed, plan.proof)
        except (TxReverted, TxDropped):
            # Refused at estimation (no nonce used), mined-and-reverted, or dropped (its nonce filled by a
            # self-transfer): the chain did not move. Any other failure keeps the target recorded, because the
            # transaction may still land; ``settle_pending`` resolves it later from the chain.
            await self.store.set_pending_proof(job_id, 0)
            raise
        tx_hash = receipt["transactionHash"].hex()
        await self.store.log_proof(job_id, tx_hash, plan.tokens_claimed, plan.target, plan.signed)
        await self.store.set_proven(job_id, plan.target)
        await self.store.set_pending_proof(job_id, 0)
        if checkpoint:
            await self.store.mark_proof_checkpoint(job_id)
        log.info("session %d: proved %d tokens (%s), cumulative %d, tx %s", job_id, plan.tokens_claimed,
                 "receipt" if plan.signed else "unsigned", plan.target, tx_hash)
        return ProofOutcome(plan.target, plan, tx_hash)


def _hex(value: str) -> bytes:
    return bytes.fromhex(value[2:] if value.startswith("0x") else value) if value else b""
