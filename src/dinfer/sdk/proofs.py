"""Proofs of work from the client's side: read a job's ``ProofOfWork`` history and check it against what the
client signed.

A host proves session tokens with ``Sessions.submit_proof_of_work(job_id, tokens_claimed, proof)``. ``proof`` is
either empty (an unsigned claim the contract bounds by elapsed time) or the client's EIP-712 receipt
``Receipt(uint256 jobId, uint256 cumulativeTokens)`` in the domain ``{name: "dinfer", version: "1", chainId,
verifyingContract: Sessions}`` (``dinfer.crypto.sign_receipt``; the contract's ``_receipt_digest``). The event
holds the amounts; the receipt itself is read back from the transaction's input.

Checks (``ProofCheck``; falsy when the proof is not acceptable, ``reason`` says why):

* ``verify_receipt`` — a receipt recovers to the client for exactly that job and total, with a low-s signature;
* ``verify_proof`` — an on-chain record: the host is the job's host, the running total adds up, a signed proof
  is byte-for-byte one of the receipts this client signed, an unsigned claim stays within the tokens the client
  counted as served.

Example:
    >>> history = await proof_history(sessions, job_id)                               # doctest: +SKIP
    >>> [verify_proof(p, domain=domain, client=me, receipts=session.receipts.signed) for p in history]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dinfer.chain.contracts.sessions import ReceiptDomain, Session, SessionsClient
from dinfer.crypto import checksum
from dinfer.errors import ChainError, CryptoError
from dinfer.sdk._session_wire import SignedReceipt

__all__ = ["ProofCheck", "ProofRecord", "proof_history", "verify_history", "verify_proof", "verify_receipt"]


@dataclass(frozen=True)
class ProofRecord:
    """One ``ProofOfWork`` event with the proof bytes its transaction carried."""

    job_id: int
    host: str
    tokens_claimed: int
    cumulative_tokens: int
    signed: bool
    block_number: int
    tx_hash: str
    log_index: int
    proof: bytes | None
    """The receipt submitted (b"" for an unsigned claim); None when the transaction did not call Sessions
    directly (a contract host), so its input could not be decoded."""

    @property
    def uid(self) -> str:
        return f"{self.tx_hash}:{self.log_index}"


@dataclass(frozen=True)
class ProofCheck:
    """The verdict on one receipt or proof record (truthy when it holds)."""

    ok: bool
    reason: str
    signer: str | None = None

    def __bool__(self) -> bool:
        return self.ok


def _as_bytes(signature: bytes | str) -> bytes:
    if isinstance(signature, bytes):
        return signature
    try:
        return bytes.fromhex(signature.removeprefix("0x"))
    except ValueError:
        raise CryptoError(f"signature is not hex: {signature[:20]!r}…") from None


async def proof_history(sessions: SessionsClient, job_id: int, *, from_block: int = 0,
                        to_block: int | str = "latest") -> list[ProofRecord]:
    """Every ``ProofOfWork`` of ``job_id`` in chain order, with the receipts read from the transactions.

    ``from_block`` narrows the scan (the deployment block is a safe start: ``Deployment.block``).
    """
    if job_id <= 0:
        raise ValueError(f"job ids start at 1, got {job_id}")
    event = sessions.contract.events.ProofOfWork()
    try:
        logs = await event.get_logs(argument_filters={"job_id": job_id}, from_block=from_block, to_block=to_block)
    except Exception as exc:
        raise ChainError(f"reading ProofOfWork logs of job {job_id} failed: {exc}") from exc
    records = []
    for entry in sorted(logs, key=lambda e: (e["blockNumber"], e["logIndex"])):
        args = entry["args"]
        tx_hash = "0x" + bytes(entry["transactionHash"]).hex()
        records.append(ProofRecord(
            job_id=int(args["job_id"]), host=checksum(args["host"]), tokens_claimed=int(args["tokens_claimed"]),
            cumulative_tokens=int(args["cumulative_tokens"]), signed=bool(args["signed"]),
            block_number=int(entry["blockNumber"]), tx_hash=tx_hash, log_index=int(entry["logIndex"]),
            proof=await _proof_bytes(sessions, tx_hash),
        ))
    return records


async def _proof_bytes(sessions: SessionsClient, tx_hash: str) -> bytes | None:
    """The ``proof`` argument of a ``submit_proof_of_work`` transaction sent straight to Sessions."""
    w3: Any = sessions.contract.w3
    try:
        tx = await w3.eth.get_transaction(tx_hash)
    except Exception as exc:
        raise ChainError(f"reading transaction {tx_hash} failed: {exc}") from exc
    if tx.get("to") is None or checksum(tx["to"]) != checksum(sessions.address):
        return None
    try:
        fn, args = sessions.contract.decode_function_input(tx["input"])
    except ValueError:
        return None
    return bytes(args["proof"]) if fn.fn_name == "submit_proof_of_work" else None


def verify_receipt(domain: ReceiptDomain, job_id: int, cumulative_tokens: int, signature: bytes | str,
                   client: str) -> ProofCheck:
    """Does ``signature`` prove that ``client`` acknowledged ``cumulative_tokens`` on ``job_id``?

    This is the check ``Sessions.submit_proof_of_work`` makes (same EIP-712 digest, low-s rule), done locally.
    """
    try:
        raw = _as_bytes(signature)
        signer = domain.recover(job_id, cumulative_tokens, raw)
    except CryptoError as exc:
        return ProofCheck(False, f"receipt does not recover: {exc}")
    if signer != checksum(client):
        return ProofCheck(False, f"receipt for job {job_id} / {cumulative_tokens} tokens was signed by {signer}, "
                                 f"not by the client {checksum(client)}", signer)
    return ProofCheck(True, "receipt signed by the client", signer)


def verify_proof(record: ProofRecord, *, domain: ReceiptDomain, client: str,
                 receipts: Iterable[SignedReceipt] | None = None, session: Session | None = None,
                 served_tokens: int | None = None, previous_cumulative: int | None = None) -> ProofCheck:
    """Check one on-chain proof against the client's own records.

    ``receipts``: the receipts this client signed for the job (``SessionClient.receipts.signed``); when given, a
    signed proof must be one of them exactly. ``session``: the job (its host must have submitted the proof).
    ``served_tokens``: the tokens the client counted as served; an unsigned claim above it is an over-claim.
    ``previous_cumulative``: the total before this proof (the contract adds ``tokens_claimed`` to it).
    """
    own = list(receipts) if receipts is not None else None
    if session is not None:
        if session.job_id != record.job_id:
            return ProofCheck(False, f"proof is for job {record.job_id}, not job {session.job_id}")
        if checksum(session.host) != record.host:
            return ProofCheck(False, f"proof submitted by {record.host}, the job's host is {session.host}")
    if previous_cumulative is not None and previous_cumulative + record.tokens_claimed != record.cumulative_tokens:
        return ProofCheck(False, f"running total broken: {previous_cumulative} + {record.tokens_claimed} "
                                 f"!= {record.cumulative_tokens}")
    if not record.signed:
        if served_tokens is None:
            return ProofCheck(False, "unsigned (time-bounded) claim: pass served_tokens to compare it with the "
                                     "tokens you were served")
        if record.cumulative_tokens > served_tokens:
            return ProofCheck(False, f"unsigned claim of {record.cumulative_tokens} tokens exceeds the "
                                     f"{served_tokens} tokens you were served")
        return ProofCheck(True, f"unsigned claim within the {served_tokens} tokens served")
    if record.proof is None:
        return ProofCheck(False, f"transaction {record.tx_hash} did not call Sessions directly: its receipt cannot "
                                 "be read back")
    check = verify_receipt(domain, record.job_id, record.cumulative_tokens, record.proof, client)
    if not check or own is None:
        return check
    mine = [r for r in own if r.job_id == record.job_id and r.cumulative_tokens == record.cumulative_tokens]
    if not any(_as_bytes(r.signature) == record.proof for r in mine):
        return ProofCheck(False, f"no receipt for {record.cumulative_tokens} tokens on job {record.job_id} among the "
                                 f"{len(own)} this client signed", check.signer)
    return ProofCheck(True, "matches a receipt this client signed", check.signer)


def verify_history(records: list[ProofRecord], *, domain: ReceiptDomain, client: str,
                   receipts: Iterable[SignedReceipt] | None = None, session: Session | None = None,
                   served_tokens: int | None = None) -> list[ProofCheck]:
    """``verify_proof`` on a job's whole history in order (the running total is checked from 0)."""
    signed = list(receipts) if receipts is not None else None
    checks = []
    previous = 0
    for record in records:
        checks.append(verify_proof(record, domain=domain, client=client, receipts=signed, session=session,
                                   served_tokens=served_tokens, previous_cumulative=previous))
        previous = record.cumulative_tokens
    return checks
