"""Pure parts of the session role: digests and signatures, context trimming, the proof plan, the store."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from eth_abi import encode
from eth_utils import keccak

from dinfer import crypto
from dinfer.chain.contracts.sessions import Session, SessionState
from dinfer.crypto import Keypair
from dinfer.errors import CryptoError
from dinfer.node.checkpoints import plan_proof, proof_due, time_bound
from dinfer.node.session_context import ContextTooLarge, estimate_prompt_tokens, trim
from dinfer.node.session_store import ContextEntry, SessionRecord, SessionStore
from dinfer.node.store import NodeStore
from dinfer.ratelimit import RateLimiter

SESSIONS = "0x" + "11" * 20
HOST = "0x" + "22" * 20


# ---------------------------------------------------------------- crypto


def test_session_auth_digest_is_the_abi_encoding() -> None:
    want = keccak(encode(["string", "uint256", "address", "uint256", "address", "uint256"],
                         ["dinfer-session-auth", 31337, SESSIONS, 7, HOST, 1_700_000_000]))
    assert crypto.session_auth_digest(31337, SESSIONS, 7, HOST, 1_700_000_000) == want
    variants = {crypto.session_auth_digest(*args) for args in [
        (31337, SESSIONS, 7, HOST, 1), (1, SESSIONS, 7, HOST, 1), (31337, HOST, 7, HOST, 1),
        (31337, SESSIONS, 8, HOST, 1), (31337, SESSIONS, 7, SESSIONS, 1), (31337, SESSIONS, 7, HOST, 2)]}
    assert len(variants) == 6  # every field is bound


def test_session_auth_sign_and_recover() -> None:
    client = Keypair.generate()
    sig = crypto.sign_session_auth(1, SESSIONS, 3, HOST, 100, client.private_key)
    assert crypto.recover_session_auth(1, SESSIONS, 3, HOST, 100, sig) == client.address
    assert crypto.recover_session_auth(1, SESSIONS, 4, HOST, 100, sig) != client.address
    with pytest.raises(CryptoError):
        crypto.session_auth_digest(1, "not-an-address", 3, HOST, 100)
    with pytest.raises(CryptoError):
        crypto.session_auth_digest(1, SESSIONS, 3, HOST, -1)


def test_prompt_digest_binds_every_field() -> None:
    nonce = secrets.token_bytes(32)
    content = "héllo"
    want = keccak(encode(["string", "uint256", "uint256", "uint256", "bytes32", "bytes32"],
                         ["dinfer-prompt", 5, 2, 99, nonce, crypto.sha256(content.encode())]))
    assert crypto.prompt_digest(5, 2, 99, nonce, content) == want
    client = Keypair.generate()
    sig = crypto.sign_prompt(5, 2, 99, nonce, content, client.private_key)
    assert crypto.recover_prompt_signer(5, 2, 99, nonce, content, sig) == client.address
    assert crypto.recover_prompt_signer(5, 2, 99, nonce, content + "!", sig) != client.address
    assert crypto.recover_prompt_signer(5, 3, 99, nonce, content, sig) != client.address
    with pytest.raises(CryptoError, match="32 bytes"):
        crypto.prompt_digest(5, 2, 99, b"short", content)
    high_s = sig[:32] + (crypto.SECP256K1_N - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big") + bytes(
        [55 - sig[64]])
    with pytest.raises(CryptoError, match="lower half"):
        crypto.recover_prompt_signer(5, 2, 99, nonce, content, high_s)


# ---------------------------------------------------------------- context


def _entries(*sizes: int, system: bool = False) -> list[ContextEntry]:
    out = [ContextEntry("system", "sys", 5)] if system else []
    return out + [ContextEntry("user" if i % 2 == 0 else "assistant", f"m{i}", n) for i, n in enumerate(sizes)]


def test_trim_drops_the_oldest_and_keeps_the_system_prompt() -> None:
    entries = _entries(100, 100, 100, 100, system=True)
    kept = trim(entries, window=512, reserve=64, max_messages=100)
    assert kept[0].role == "system" and kept[-1] == entries[-1]
    assert estimate_prompt_tokens(kept) + 64 <= 512
    assert len(kept) < len(entries)
    assert kept[1:] == entries[-(len(kept) - 1):]  # a suffix: no hole in the conversation


def test_trim_respects_max_messages_and_refuses_what_cannot_fit() -> None:
    assert len(trim(_entries(1, 1, 1, 1, 1), window=10_000, reserve=1, max_messages=3)) == 3
    assert trim([], window=100, reserve=1, max_messages=3) == []
    with pytest.raises(ContextTooLarge, match="context window is 512"):
        trim(_entries(10, 600), window=512, reserve=16, max_messages=10)
    # The system prompt goes before the newest message does.
    kept = trim([*_entries(300, system=True), ContextEntry("user", "x", 390)], window=512, reserve=16,
                max_messages=10)
    assert [e.tokens for e in kept] == [390]


# ---------------------------------------------------------------- proof plan


def test_plan_prefers_a_receipt_then_an_unsigned_claim() -> None:
    sig = b"\x01" * 65
    base = {"bound": 10**9, "max_tokens": 10_000, "min_proven": 100}
    signed = plan_proof(chain_proven=0, billed=350, receipt_tokens=300, receipt=sig, **base)
    assert signed is not None and (signed.tokens_claimed, signed.target, signed.proof) == (300, 300, sig)
    # The receipt adds < min_proven over what is proven: fall back to an unsigned claim of the billed total.
    unsigned = plan_proof(chain_proven=250, billed=400, receipt_tokens=300, receipt=sig, **base)
    assert unsigned is not None and (unsigned.tokens_claimed, unsigned.target, unsigned.signed) == (150, 400, False)
    assert plan_proof(chain_proven=300, billed=350, receipt_tokens=300, receipt=sig, **base) is None
    # Unsigned claims stop at the time bound and at the deposit.
    assert plan_proof(chain_proven=0, billed=5000, receipt_tokens=0, receipt=b"", bound=700, max_tokens=10_000,
                      min_proven=100).target == 700  # type: ignore[union-attr]
    assert plan_proof(chain_proven=0, billed=5000, receipt_tokens=0, receipt=b"", bound=10**6, max_tokens=900,
                      min_proven=100).target == 900  # type: ignore[union-attr]
    assert plan_proof(chain_proven=0, billed=300, receipt_tokens=300, receipt=sig, allow_receipt=False,
                      **base).signed is False  # type: ignore[union-attr]


def test_time_bound_matches_the_contract() -> None:
    s = Session(1, "c", "h", b"", 1, 100, 1000, 60, 10, 1_000, 1_000, 1, 0, 0, SessionState.ACTIVE)
    assert time_bound(s, 1_000, 1000) == 0  # creation block
    assert time_bound(s, 1_010, 1000) == 20_000
    assert time_bound(s, 5_000, 1000) == 120_000  # capped at max_duration
    rec = SessionRecord(1, "c", "h", "m", checkpoints=12, proof_checkpoint=2)
    assert proof_due(rec, 10) and not proof_due(rec, 11)


# ---------------------------------------------------------------- store


async def test_store_nonces_indexes_receipts_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite"
    node = await NodeStore.open(path)
    store = await SessionStore.open(node)
    rec = await store.create_if_absent(4, "0xc", "0xh", "m")
    assert (rec.cumulative_tokens, rec.last_message_index, rec.context) == (0, -1, [])
    assert await store.use_nonce(4, "0xAB") and not await store.use_nonce(4, "0xab")
    assert await store.use_nonce(5, "0xab")  # per job
    assert await store.advance_message_index(4, 0) and not await store.advance_message_index(4, 0)
    assert await store.advance_message_index(4, 7) and not await store.advance_message_index(4, 3)
    assert await store.add_tokens(4, 120) == 120 and await store.add_tokens(4, 5) == 125
    assert await store.set_receipt(4, 100, "0xaa") and not await store.set_receipt(4, 90, "0xbb")
    await store.set_context(4, [ContextEntry("user", "hi", 2), ContextEntry("assistant", "yo", 3)])
    assert await store.add_checkpoint(4) == 1
    await store.set_pending_proof(4, 100)
    await node.close()
    node = await NodeStore.open(path)
    store = await SessionStore.open(node)
    again = await store.create_if_absent(4, "0xother", "0xh", "m")  # never overwritten
    assert (again.client, again.cumulative_tokens, again.receipt_tokens, again.receipt_signature) == (
        "0xc", 125, 100, "0xaa")
    assert (again.last_message_index, again.context_tokens, again.checkpoints) == (7, 5, 1)
    assert [r.job_id for r in await store.pending_jobs()] == [4]
    assert not await store.use_nonce(4, "0xab")
    await node.close()


def test_rate_limiter_charge_goes_into_debt() -> None:
    limiter = RateLimiter(per_minute=60)
    assert limiter.acquire("a", cost=10, now=0) == 0
    limiter.charge("a", 100, now=0)
    wait = limiter.acquire("a", cost=1, now=0)
    assert wait == pytest.approx(51.0)  # 50 above zero in debt + 1, at 1 token/s
    assert limiter.acquire("a", cost=1, now=51) == 0
