"""Crypto: fixed vectors for request hashing and signatures, EIP-712 receipts, malleability refusal."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from hypothesis import given, settings
from hypothesis import strategies as st

from dinfer import crypto
from dinfer.errors import CryptoError
from support import examples

# Well-known test key (anvil account 0); never holds value.
KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ADDR = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
TA = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
BODY = b'{"model":"HuggingFaceTB/SmolLM2-135M-Instruct","messages":[{"role":"user","content":"hi"}]}'


def test_keypair_from_known_key() -> None:
    kp = crypto.Keypair.from_private_key(KEY)
    assert kp.address == ADDR
    with pytest.raises(CryptoError):
        crypto.Keypair.from_private_key("0x1234")


SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@settings(max_examples=examples(50, 500), deadline=None)
@given(st.integers(1, SECP256K1_N - 1), st.sampled_from(["0x", "0X", "", "bytes"]), st.booleans())
def test_keypair_matches_eth_account_for_every_spelling_of_a_key(secret: int, prefix: str, upper: bool) -> None:
    """The coincurve fast path derives exactly eth_account's address and key string."""
    raw = secret.to_bytes(32, "big")
    digits = raw.hex().upper() if upper else raw.hex()
    key: str | bytes = raw if prefix == "bytes" else prefix + digits
    kp = crypto.Keypair.from_private_key(key)
    account = Account.from_key(raw)
    assert (kp.address, kp.private_key) == (account.address, "0x" + raw.hex())


@pytest.mark.parametrize("key", ["0x" + "00" * 32, "0x" + f"{SECP256K1_N:064x}", "0x" + "ff" * 32, b"\x00" * 32])
def test_keys_outside_the_curve_order_are_refused(key: str | bytes) -> None:
    with pytest.raises(CryptoError):
        crypto.Keypair.from_private_key(key)


def test_request_digest_fixed_vector() -> None:
    body_hash = crypto.sha256(BODY)
    assert body_hash.hex() == "98c8f57d8a678d2d42a544a61eb941045de319d27d8a53405cc9cf05aaae0073"
    digest = crypto.request_digest(body_hash, 1_700_000_000, TA)
    # abi.encode(bytes32, uint256, address) then keccak256 — recomputed independently with eth_abi:
    from eth_abi import encode
    from eth_utils import keccak

    assert digest == keccak(encode(["bytes32", "uint256", "address"], [body_hash, 1_700_000_000, TA]))


def test_sign_and_recover_request() -> None:
    sig = crypto.sign_request(BODY, 1_700_000_000, TA, KEY)
    assert sig.hex() == (  # fixed vector (RFC 6979 deterministic nonces)
        "c70ec7651c45b0fbf7fba36ff0372814f4f3dde83880624dcb29e9df9e8851ab"
        "2ffacaba3c298f751eafade829b925fb102e78f8861d63d8bda7972e2a1ef4f31b"
    )
    assert crypto.recover_request_signer(BODY, 1_700_000_000, TA, sig) == ADDR
    # any change to body, time or TA gives another signer
    assert crypto.recover_request_signer(BODY + b" ", 1_700_000_000, TA, sig) != ADDR
    assert crypto.recover_request_signer(BODY, 1_700_000_001, TA, sig) != ADDR
    assert crypto.recover_request_signer(BODY, 1_700_000_000, ADDR, sig) != ADDR
    # deterministic (RFC 6979): same inputs, same signature, same inference id
    assert crypto.sign_request(BODY, 1_700_000_000, TA, KEY) == sig
    assert crypto.inference_id(sig) == crypto.inference_id(crypto.sign_request(BODY, 1_700_000_000, TA, KEY))


def test_high_s_twin_refused() -> None:
    sig = crypto.sign_request(BODY, 1, TA, KEY)
    r, s, v = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
    twin = r + (crypto.SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])  # v flips 27 <-> 28
    with pytest.raises(CryptoError, match="lower half"):
        crypto.recover_request_signer(BODY, 1, TA, twin)
    with pytest.raises(CryptoError):
        crypto.inference_id(twin)


def test_bad_signature_inputs() -> None:
    with pytest.raises(CryptoError, match="65 bytes"):
        crypto.recover_request_signer(BODY, 1, TA, b"\x01" * 64)
    with pytest.raises(CryptoError, match="v must be"):
        crypto.recover_request_signer(BODY, 1, TA, b"\x01" * 64 + b"\x05")
    with pytest.raises(CryptoError, match="not an address"):
        crypto.request_digest(b"\0" * 32, 1, "0xnope")
    with pytest.raises(CryptoError, match="32 bytes"):
        crypto.request_digest(b"\0" * 31, 1, TA)


def test_eip712_receipt_roundtrip() -> None:
    contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    sig = crypto.sign_receipt(31337, contract, job_id=7, cumulative_tokens=300, private_key=KEY)
    assert crypto.recover_receipt(31337, contract, 7, 300, sig) == ADDR
    assert crypto.recover_receipt(31337, contract, 7, 301, sig) != ADDR
    assert crypto.recover_receipt(1, contract, 7, 300, sig) != ADDR  # domain separation by chain id


def test_eip191_digest_roundtrip() -> None:
    digest = bytes(range(32))
    sig = crypto.sign_digest_eip191(digest, KEY)
    assert crypto.recover_digest_eip191(digest, sig) == ADDR


@settings(max_examples=examples(40, 400), deadline=None)
@given(key=st.integers(min_value=1, max_value=crypto.SECP256K1_N - 1), digest=st.binary(min_size=32, max_size=32))
def test_libsecp256k1_path_matches_eth_account(key: int, digest: bytes) -> None:
    """The direct coincurve signing path gives eth_account's exact bytes, and recovers the signer."""
    private = "0x" + key.to_bytes(32, "big").hex()
    ours = crypto.sign_digest_eip191(digest, private)
    reference = Account.sign_message(encode_defunct(primitive=digest), private).signature
    assert ours == bytes(reference)
    assert crypto.recover_digest_eip191(digest, ours) == Account.from_key(private).address


def test_fast_path_refuses_bad_keys_and_digests() -> None:
    key = crypto.Keypair.generate().private_key
    for bad_key in ("0x12", "not-hex", "0x" + "00" * 32):
        with pytest.raises(CryptoError):
            crypto.sign_digest_eip191(b"\x01" * 32, bad_key)
    with pytest.raises(CryptoError):
        crypto.sign_digest_eip191(b"\x01" * 31, key)
    sig = crypto.sign_digest_eip191(b"\x01" * 32, key)
    with pytest.raises(CryptoError):
        crypto.recover_digest_eip191(b"\x01" * 33, sig)
    with pytest.raises(CryptoError):
        crypto.recover_digest_eip191(b"\x01" * 32, b"\x00" * 64 + b"\x1b")  # r = 0: no such point
