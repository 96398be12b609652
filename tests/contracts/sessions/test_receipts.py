"""Sessions.submit_proof_of_work with client-signed EIP-712 receipts: accepted without the time bound, and every
forgery (wrong signer, count, job, chain, contract, malleable twin, malformed bytes, replay) refused."""

from __future__ import annotations

import pytest
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from sessions_helpers import MAX_TOKENS, MIN_PROVEN, RATE

from dinfer.chain.contracts.sessions import SessionsClient
from dinfer.crypto import RECEIPT_TYPES, SECP256K1_N, Keypair, eip712_domain, sign_receipt
from dinfer.errors import TxReverted
from support import events


async def test_python_and_contract_agree_on_the_digest(chain, sessions: SessionsClient, job: int) -> None:
    domain = await sessions.receipt_domain()
    assert domain.chain_id == chain.chain_id and domain.sessions_contract == sessions.address
    signable = encode_typed_data(
        domain_data=eip712_domain(domain.chain_id, domain.sessions_contract),
        message_types=RECEIPT_TYPES,
        message_data={"jobId": job, "cumulativeTokens": 1234},
    )
    assert await sessions.domain_separator() == bytes(signable.header)
    assert await sessions.receipt_digest(job, 1234) == keccak(b"\x19\x01" + signable.header + signable.body)


async def test_signed_receipt_lifts_the_time_bound(chain, sessions, host_sessions, job: int, actors) -> None:
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 1)  # an unsigned claim could reach 2 × RATE here
    claim = 2 * RATE + 3_000
    with pytest.raises(TxReverted.named("ClaimAboveTimeBound")):
        await host_sessions.submit_proof_of_work(job, claim)
    proof = (await sessions.receipt_domain()).sign(job, claim, actors.client.private_key)
    receipt = await host_sessions.submit_proof_of_work(job, claim, proof)
    assert events(sessions.contract, receipt, "ProofOfWork") == [
        {
            "job_id": job,
            "host": actors.host.address,
            "tokens_claimed": claim,
            "cumulative_tokens": claim,
            "signed": True,
        }
    ]
    session = await sessions.get_session(job)
    assert (session.cumulative_tokens, session.proof_count, session.last_proof_time) == (claim, 1, start + 1)


async def test_receipt_signs_the_new_cumulative_total(chain, sessions, host_sessions, job: int, actors) -> None:
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 1)
    await host_sessions.submit_proof_of_work(job, 1_000)  # unsigned first
    domain = await sessions.receipt_domain()
    with pytest.raises(TxReverted.named("InvalidReceipt")):  # a receipt for the increment is not a receipt
        await host_sessions.submit_proof_of_work(job, 500, domain.sign(job, 500, actors.client.private_key))
    await host_sessions.submit_proof_of_work(job, 500, domain.sign(job, 1_500, actors.client.private_key))
    await host_sessions.submit_proof_of_work(
        job, MAX_TOKENS - 1_500, domain.sign(job, MAX_TOKENS, actors.client.private_key)
    )
    assert (await sessions.get_token_usage(job), await sessions.get_proof_count(job)) == (MAX_TOKENS, 3)


def _high_s_twin(signature: bytes) -> bytes:
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])  # the same signer, malleated


def _forgeries(chain_id: int, contract: str, job: int, client: Keypair, stranger: Keypair) -> dict[str, bytes]:
    n = 3_000  # the cumulative total the claim below produces
    good = sign_receipt(chain_id, contract, job, n, client.private_key)
    return {
        "wrong signer": sign_receipt(chain_id, contract, job, n, stranger.private_key),
        "wrong count": sign_receipt(chain_id, contract, job, n + 1, client.private_key),
        "wrong job": sign_receipt(chain_id, contract, job + 1, n, client.private_key),
        "other chain id": sign_receipt(chain_id + 1, contract, job, n, client.private_key),
        "other contract": sign_receipt(chain_id, "0x" + "ab" * 20, job, n, client.private_key),
        "high s": _high_s_twin(good),
        "v = 0": good[:64] + b"\x00",
        "v = 29": good[:64] + bytes([29]),
        "s = 0": good[:32] + bytes(32) + good[64:],
        "zero signature": bytes(65),
        "truncated": good[:64],
        "one byte": b"\x01",
    }


@pytest.mark.parametrize(
    "forgery",
    [
        "wrong signer",
        "wrong count",
        "wrong job",
        "other chain id",
        "other contract",
        "high s",
        "v = 0",
        "v = 29",
        "s = 0",
        "zero signature",
        "truncated",
        "one byte",
    ],
)
async def test_forged_receipts_are_refused(chain, sessions, host_sessions, job: int, actors, forgery: str) -> None:
    start = (await sessions.get_session(job)).start_time
    await chain.set_next_timestamp(start + 10)  # the unsigned bound (20_000) would allow the claim: the proof decides
    proof = _forgeries(chain.chain_id, sessions.address, job, actors.client, actors.non_owner)[forgery]
    before = await sessions.get_session(job)
    with pytest.raises(TxReverted.named("InvalidReceipt")):
        await host_sessions.submit_proof_of_work(job, 3_000, proof)
    assert await sessions.get_session(job) == before


async def test_high_s_twin_recovers_the_client_off_chain(sessions, job: int, actors) -> None:
    """The twin is a valid ECDSA signature of the client: only the low-s rule refuses it (contract and Python)."""
    from eth_keys import keys

    domain = await sessions.receipt_domain()
    good = domain.sign(job, 3_000, actors.client.private_key)
    twin = _high_s_twin(good)
    digest = await sessions.receipt_digest(job, 3_000)
    sig = keys.Signature(vrs=(twin[64] - 27, int.from_bytes(twin[:32], "big"), int.from_bytes(twin[32:64], "big")))
    assert sig.recover_public_key_from_msg_hash(digest).to_checksum_address() == actors.client.address
    assert domain.recover(job, 3_000, good) == actors.client.address


async def test_a_receipt_is_usable_once(chain, sessions, host_sessions, job: int, actors) -> None:
    proof = (await sessions.receipt_domain()).sign(job, 1_000, actors.client.private_key)
    await host_sessions.submit_proof_of_work(job, 1_000, proof)
    with pytest.raises(TxReverted.named("InvalidReceipt")):
        await host_sessions.submit_proof_of_work(job, MIN_PROVEN, proof)  # would make 1_100, not 1_000
    assert await sessions.get_token_usage(job) == 1_000


async def test_signed_claims_still_need_host_minimum_and_deposit(chain, sessions, host_sessions, job, actors) -> None:
    domain = await sessions.receipt_domain()
    with pytest.raises(TxReverted.named("BelowMinProvenTokens")):
        await host_sessions.submit_proof_of_work(
            job, MIN_PROVEN - 1, domain.sign(job, MIN_PROVEN - 1, actors.client.private_key)
        )
    with pytest.raises(TxReverted.named("ClaimExceedsDeposit")):
        await host_sessions.submit_proof_of_work(
            job, MAX_TOKENS + 1, domain.sign(job, MAX_TOKENS + 1, actors.client.private_key)
        )
    with pytest.raises(TxReverted.named("NotSessionHost")):
        await sessions.submit_proof_of_work(job, MIN_PROVEN, domain.sign(job, MIN_PROVEN, actors.client.private_key))
    assert await sessions.get_proof_count(job) == 0
