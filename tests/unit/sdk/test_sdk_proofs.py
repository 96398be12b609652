"""Proof history and verification on the py-evm chain: receipts signed by the real session client code, proofs
submitted by the host to the real Sessions contract, read back and checked through ``AsyncDinferClient``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sdk_chain_support import HostChain, deploy_with_host

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.sessions import SessionsClient
from dinfer.crypto import Keypair, sign_receipt
from dinfer.sdk._session_wire import SessionKeys, SignedReceipt
from dinfer.sdk.client import AsyncDinferClient
from dinfer.sdk.proofs import ProofRecord, verify_history, verify_proof, verify_receipt
from dinfer.sdk.sessions import SessionClient

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
PRICE = 10**9
DEPOSIT = PRICE * 10_000
HOST_URL = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def _sessions_chain(_base_chain) -> HostChain:  # type: ignore[no-untyped-def]
    """The genesis chain plus Sessions and a registered host (accounts[1]), built once per module."""
    return deploy_with_host(_base_chain, HOST_URL, ledger=False)


@dataclass
class Env:
    chain: EthTesterBackend
    client: AsyncDinferClient
    host_sessions: SessionsClient
    host: Keypair
    job_id: int
    session: SessionClient
    """The real session client of the job, not connected: it signs receipts exactly as over a socket."""

    async def receipt(self, tokens: int) -> SignedReceipt:
        """Let the session client answer a host's receipt request (the reply send fails silently: no socket)."""
        await self.session._answer_receipt({"type": "receipt_request", "job_id": self.job_id,
                                            "cumulative_tokens": tokens})
        return self.session.receipts.signed[-1]

    async def prove(self, claimed: int, receipt: SignedReceipt | None = None) -> None:
        proof = bytes.fromhex(receipt.signature[2:]) if receipt else b""
        await self.host_sessions.submit_proof_of_work(self.job_id, claimed, proof)


@pytest.fixture
async def env(chain: EthTesterBackend, _sessions_chain: HostChain, actors, sender_for) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    chain.tester.revert_to_snapshot(_sessions_chain.snapshot)
    client = AsyncDinferClient(actors.client, chain.w3, _sessions_chain.deployment)
    receipt = await client.sessions.create_session(actors.host.address, MODEL, PRICE, 3600, 300, deposit=DEPOSIT)
    job_id = client.sessions.job_id_of(receipt)
    domain = await client.receipt_domain()
    session = SessionClient(client.sessions, actors.client, await client.sessions.get_session(job_id), url=HOST_URL,
                            model=MODEL, keys=SessionKeys(actors.client.private_key, domain.chain_id,
                                                          domain.sessions_contract))
    host_sessions = SessionsClient(client.sessions.contract, sender_for(actors.host))
    yield Env(chain, client, host_sessions, actors.host, job_id, session)
    await client.close()


async def test_proof_history_reads_every_proof_with_its_receipt_in_order(env: Env) -> None:
    first = await env.receipt(150)
    await env.prove(150, first)
    second = await env.receipt(420)
    await env.prove(270, second)

    history = await env.client.get_proof_history(env.job_id)
    assert [(p.tokens_claimed, p.cumulative_tokens, p.signed) for p in history] == [(150, 150, True), (270, 420, True)]
    assert all(p.host == env.host.address and p.job_id == env.job_id for p in history)
    assert history[0].proof == bytes.fromhex(first.signature[2:])
    assert history[1].proof == bytes.fromhex(second.signature[2:])
    assert history[0].block_number < history[1].block_number and history[0].uid != history[1].uid
    assert await env.client.get_proof_history(env.session) == history  # by session as well as by id
    # another job's proofs are not mixed in
    assert await env.client.get_proof_history(env.job_id + 1) == []


async def test_on_chain_proofs_verify_against_the_clients_receipts(env: Env) -> None:
    await env.prove(150, await env.receipt(150))
    await env.prove(250, await env.receipt(400))
    env.client.billing(env.session)  # the tracker counts served tokens from here on
    checks = await env.client.verify_proof_history(env.session)
    assert [c.ok for _, c in checks] == [True, True], [c.reason for _, c in checks]
    assert all(c.signer == env.client.address for _, c in checks)
    for record, _ in checks:
        assert await env.client.verify_proof(record, session=env.session)


async def test_receipt_checks_match_the_contracts_digest(env: Env) -> None:
    """The local EIP-712 digest is the one Sessions.vy verifies."""
    domain = await env.client.receipt_domain()
    from eth_account.messages import encode_typed_data
    from eth_utils import keccak

    from dinfer.crypto import RECEIPT_TYPES, eip712_domain

    signable = encode_typed_data(domain_data=eip712_domain(domain.chain_id, domain.sessions_contract),
                                 message_types=RECEIPT_TYPES, message_data={"jobId": env.job_id,
                                                                            "cumulativeTokens": 321})
    local = keccak(b"\x19" + signable.version + signable.header + signable.body)
    assert local == await env.client.sessions.receipt_digest(env.job_id, 321)
    receipt = await env.receipt(321)
    assert await env.client.verify_proof(receipt)


async def test_forged_receipts_are_rejected(env: Env) -> None:
    domain = await env.client.receipt_domain()
    mallory = Keypair.generate()
    forged = sign_receipt(domain.chain_id, domain.sessions_contract, env.job_id, 500, mallory.private_key)
    check = verify_receipt(domain, env.job_id, 500, forged, env.client.address)
    assert not check and check.signer == mallory.address and "not by the client" in check.reason
    # the contract refuses it too: a forged receipt never becomes a proof
    from dinfer.errors import TxReverted

    with pytest.raises(TxReverted.named("InvalidReceipt")):
        await env.host_sessions.submit_proof_of_work(env.job_id, 500, forged)

    genuine = await env.receipt(500)
    # a genuine receipt does not prove another total, another job, or another contract
    sig = bytes.fromhex(genuine.signature[2:])
    assert verify_receipt(domain, env.job_id, 500, sig, env.client.address)
    assert not verify_receipt(domain, env.job_id, 501, sig, env.client.address)
    assert not verify_receipt(domain, env.job_id + 1, 500, sig, env.client.address)
    other = type(domain)(domain.chain_id, env.host.address)
    assert not verify_receipt(other, env.job_id, 500, sig, env.client.address)
    # malformed and malleable signatures are refused with a reason
    assert "does not recover" in verify_receipt(domain, env.job_id, 500, sig[:64], env.client.address).reason
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = sig[:32] + (n - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big") + bytes([55 - sig[64]])
    assert not verify_receipt(domain, env.job_id, 500, high_s, env.client.address)
    assert "not hex" in verify_receipt(domain, env.job_id, 500, "0xnothex", env.client.address).reason


async def test_a_proof_the_client_never_signed_is_flagged(env: Env) -> None:
    """A receipt valid on chain (client key) that is not among this session's receipts: e.g. signed elsewhere."""
    domain = await env.client.receipt_domain()
    outside = domain.sign(env.job_id, 300, env.client.key.private_key)
    await env.host_sessions.submit_proof_of_work(env.job_id, 300, outside)
    [record] = await env.client.get_proof_history(env.job_id)
    assert verify_proof(record, domain=domain, client=env.client.address)  # the signature itself is the client's
    check = await env.client.verify_proof(record, session=env.session)
    assert not check and "no receipt for 300 tokens" in check.reason


async def test_unsigned_claims_are_checked_against_served_tokens(env: Env) -> None:
    start = (await env.chain.w3.eth.get_block("latest"))["timestamp"]
    await env.chain.set_next_timestamp(start + 10)  # 10 s elapsed: unsigned claims up to 2 × 1000 × 10 tokens
    await env.prove(600)
    [record] = await env.client.get_proof_history(env.job_id)
    assert record.signed is False and record.proof == b""
    domain = await env.client.receipt_domain()
    served_enough = verify_proof(record, domain=domain, client=env.client.address, served_tokens=600)
    assert served_enough, served_enough.reason
    over = verify_proof(record, domain=domain, client=env.client.address, served_tokens=599)
    assert not over and "exceeds the 599 tokens" in over.reason
    unknown = verify_proof(record, domain=domain, client=env.client.address)
    assert not unknown and "served_tokens" in unknown.reason
    # through the client: nothing was served to this session client, so the claim is an over-claim
    check = await env.client.verify_proof(record, session=env.session)
    assert not check and "exceeds the 0 tokens" in check.reason


async def test_records_from_another_host_or_with_broken_totals_are_rejected(env: Env) -> None:
    await env.prove(150, await env.receipt(150))
    [record] = await env.client.get_proof_history(env.job_id)
    domain = await env.client.receipt_domain()
    terms = await env.client.sessions.get_session(env.job_id)
    kw = {"domain": domain, "client": env.client.address, "session": terms}
    assert verify_proof(record, **kw)  # type: ignore[arg-type]
    impostor = ProofRecord(**{**record.__dict__, "host": Keypair.generate().address})
    assert "the job's host" in verify_proof(impostor, **kw).reason  # type: ignore[arg-type]
    wrong_job = ProofRecord(**{**record.__dict__, "job_id": env.job_id + 1})
    assert "not job" in verify_proof(wrong_job, **kw).reason  # type: ignore[arg-type]
    assert "running total" in verify_proof(record, previous_cumulative=10, **kw).reason  # type: ignore[arg-type]
    checks = verify_history([record, record], domain=domain, client=env.client.address)
    assert [c.ok for c in checks] == [True, False]
    unreadable = ProofRecord(**{**record.__dict__, "proof": None})
    assert "cannot be read back" in verify_proof(unreadable, **kw).reason  # type: ignore[arg-type]


async def test_bad_job_ids_are_refused(env: Env) -> None:
    with pytest.raises(ValueError, match="job ids start at 1"):
        await env.client.get_proof_history(0)
