"""Typed client of Sessions.vy: session jobs, proofs of work (unsigned or client-signed receipts), settlement."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from web3.logs import DISCARD

from dinfer.chain.contracts.base import ContractClient
from dinfer.crypto import Address, checksum, recover_receipt, sign_receipt
from dinfer.errors import ChainError


class SessionState(enum.IntEnum):
    """On-chain ``SessionState`` flag values."""

    ACTIVE = 1
    COMPLETED = 2
    TIMED_OUT = 4


@dataclass(frozen=True)
class Session:
    """One session job as stored on chain (amounts in wei, times in seconds)."""

    job_id: int
    client: str
    host: str
    model_key: bytes
    """``keccak256(model_id)``; the id itself is in the ``SessionCreated`` event."""
    price_per_token: int
    deposit: int
    treasury_fee_bps: int
    max_duration: int
    proof_interval: int
    start_time: int
    last_proof_time: int
    last_proof_block: int
    cumulative_tokens: int
    proof_count: int
    state: SessionState

    @classmethod
    def from_chain(cls, job_id: int, raw: Any) -> Session:
        return cls(job_id, str(raw[0]), str(raw[1]), bytes(raw[2]), *(int(x) for x in raw[3:13]), SessionState(raw[13]))

    @property
    def max_tokens(self) -> int:
        """Most tokens the deposit pays for."""
        return self.deposit // self.price_per_token

    @property
    def cost(self) -> int:
        """Wei owed for the tokens proven so far."""
        return self.cumulative_tokens * self.price_per_token


@dataclass(frozen=True)
class ReceiptDomain:
    """The EIP-712 domain of this Sessions contract: what ``crypto.sign_receipt`` needs besides the message."""

    chain_id: int
    sessions_contract: Address

    def sign(self, job_id: int, cumulative_tokens: int, private_key: str) -> bytes:
        """The client's 65-byte receipt acknowledging ``cumulative_tokens`` served on ``job_id``.

        Example:
            >>> domain = await sessions.receipt_domain()                  # doctest: +SKIP
            >>> proof = domain.sign(job_id, 300, client_key)
            >>> await host_sessions.submit_proof_of_work(job_id, 100, proof)
        """
        return sign_receipt(self.chain_id, self.sessions_contract, job_id, cumulative_tokens, private_key)

    def recover(self, job_id: int, cumulative_tokens: int, signature: bytes) -> Address:
        """Who signed a receipt (the host checks this before queueing a proof)."""
        return recover_receipt(self.chain_id, self.sessions_contract, job_id, cumulative_tokens, signature)


class SessionsClient(ContractClient):
    """Sessions.vy. Views need no sender; state changes use the client's ``TxSender``."""

    # --- lifecycle
    async def create_session(
        self, host: str, model_id: str, price_per_token: int, max_duration: int, proof_interval: int, *,
        deposit: int, gas: int | None = None,
    ) -> dict[str, Any]:
        """Open a session escrowing ``deposit`` wei; ``job_id_of(receipt)`` gives the new job id.

        ``gas`` (on every state-changing method) skips estimation; a refusal is then mined and still raised.
        """
        return await self._transact(
            "create_session", host, model_id, price_per_token, max_duration, proof_interval, value=deposit, gas=gas
        )

    def job_id_of(self, receipt: dict[str, Any]) -> int:
        """The job id from a ``create_session`` receipt."""
        created = self.contract.events.SessionCreated().process_receipt(receipt, errors=DISCARD)
        if len(created) != 1:
            raise ChainError(f"receipt {receipt['transactionHash'].hex()} has {len(created)} SessionCreated events")
        return int(created[0]["args"]["job_id"])

    async def submit_proof_of_work(
        self, job_id: int, tokens_claimed: int, proof: bytes = b"", *, gas: int | None = None
    ) -> dict[str, Any]:
        """Claim ``tokens_claimed`` more tokens; ``proof`` is empty (time-bounded) or a receipt for the new total."""
        return await self._transact("submit_proof_of_work", job_id, tokens_claimed, proof, gas=gas)

    async def complete_session(self, job_id: int, *, gas: int | None = None) -> dict[str, Any]:
        return await self._transact("complete_session", job_id, gas=gas)

    async def trigger_session_timeout(self, job_id: int, *, gas: int | None = None) -> dict[str, Any]:
        return await self._transact("trigger_session_timeout", job_id, gas=gas)

    # --- pull payments
    async def withdraw_earnings(self, *, gas: int | None = None) -> dict[str, Any]:
        return await self._transact("withdraw_earnings", gas=gas)

    async def withdraw_refund(self, *, gas: int | None = None) -> dict[str, Any]:
        return await self._transact("withdraw_refund", gas=gas)

    async def sweep_treasury(self, *, gas: int | None = None) -> dict[str, Any]:
        return await self._transact("sweep_treasury", gas=gas)

    async def earnings(self, host: str) -> int:
        return int(await self._call("earnings", host))

    async def refunds(self, client: str) -> int:
        return int(await self._call("refunds", client))

    async def treasury_balance(self) -> int:
        return int(await self._call("treasury_balance"))

    # --- views
    async def get_session(self, job_id: int) -> Session:
        return Session.from_chain(job_id, await self._call("get_session", job_id))

    async def get_token_usage(self, job_id: int) -> int:
        return int(await self._call("get_token_usage", job_id))

    async def get_remaining_tokens(self, job_id: int) -> int:
        return int(await self._call("get_remaining_tokens", job_id))

    async def get_proof_count(self, job_id: int) -> int:
        return int(await self._call("get_proof_count", job_id))

    async def next_job_id(self) -> int:
        return int(await self._call("next_job_id"))

    async def registry_address(self) -> str:
        return str(await self._call("REGISTRY"))

    async def receipt_digest(self, job_id: int, cumulative_tokens: int) -> bytes:
        return bytes(await self._call("receipt_digest", job_id, cumulative_tokens))

    async def domain_separator(self) -> bytes:
        return bytes(await self._call("domain_separator"))

    async def receipt_domain(self) -> ReceiptDomain:
        """Chain id + this contract: the EIP-712 domain clients sign receipts in."""
        return ReceiptDomain(int(await self.contract.w3.eth.chain_id), checksum(self.address))
