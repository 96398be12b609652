"""Keys, signatures and request hashing (secp256k1 via eth-account; coincurve makes signing fast).

Request authorisation (design §5): a client signs ``request_digest(sha256(body), timestamp, ta_address)``
with EIP-191 ``personal_sign``. The contract recomputes the same digest, ``ecrecover``s the client and derives
``inference_id = keccak256(signature)``. Signatures are 65 bytes ``r ‖ s ‖ v`` with ``v ∈ {27, 28}`` and low
``s`` (EIP-2); high-``s`` twins are refused so one request cannot yield two inference ids.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any, NewType

import coincurve
from eth_utils import keccak, to_checksum_address

from dinfer.errors import CryptoError

Address = NewType("Address", str)
"""A checksummed 0x-prefixed address."""

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2

EIP712_DOMAIN_NAME = "dinfer"
EIP712_DOMAIN_VERSION = "1"


@dataclass(frozen=True)
class Keypair:
    """A secp256k1 account. ``private_key`` is 0x-hex."""

    private_key: str
    address: Address

    @classmethod
    def from_private_key(cls, key: str | bytes) -> Keypair:
        raw = _plain_key_bytes(key)
        if raw is not None:
            # A plain 32-byte key goes straight to libsecp256k1 (the address eth_account derives): a CLI that signs
            # one request does not pay eth_account's ~1 s import. Anything else, refusals included (coincurve's
            # ValueError: outside the curve order), goes through eth_account below.
            with contextlib.suppress(ValueError):
                return cls(private_key="0x" + raw.hex(), address=_address_of(coincurve.PrivateKey(raw).public_key))
        from eth_account import Account  # eth_account's import costs ~1 s; processes that never sign skip it

        try:
            acct = Account.from_key(key)
        except (ValueError, TypeError) as exc:
            raise CryptoError(f"invalid private key: {exc}") from None
        return cls(private_key="0x" + bytes(acct.key).hex(), address=Address(acct.address))

    @classmethod
    def generate(cls) -> Keypair:
        from eth_account import Account

        acct = Account.create()
        return cls(private_key="0x" + bytes(acct.key).hex(), address=Address(acct.address))


_HEX_KEY = re.compile(r"(?:0[xX])?[0-9a-fA-F]{64}")


def _plain_key_bytes(key: object) -> bytes | None:
    """The 32 bytes of ``key`` when it is raw bytes or exactly 64 hex digits (``0x`` optional), else None."""
    if isinstance(key, bytes):
        return bytes(key) if len(key) == 32 else None
    if isinstance(key, str) and _HEX_KEY.fullmatch(key):
        return bytes.fromhex(key[-64:])
    return None


def _address_of(public: coincurve.PublicKey) -> Address:
    return checksum("0x" + keccak(public.format(compressed=False)[1:])[-20:].hex())


def checksum(address: str) -> Address:
    """Checksummed form of ``address``; ``CryptoError`` if it is not a 20-byte hex address."""
    try:
        return _checksummed(address)
    except (ValueError, TypeError) as exc:
        raise CryptoError(f"not an address: {address!r}") from exc


@functools.lru_cache(maxsize=4096)
def _checksummed(address: str) -> Address:
    """Cached: the request path checksums the same few addresses (client, TA, executor) five or more times per
    inference, and each ``to_checksum_address`` is a keccak plus validation (~70 µs on a small VM). Refusals raise
    and are not cached."""
    return Address(to_checksum_address(address))


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def request_digest(body_sha256: bytes, timestamp: int, ta_address: str) -> bytes:
    """``keccak256(abi.encode(bytes32 body_sha256, uint256 timestamp, address ta))`` — what a client signs."""
    if len(body_sha256) != 32:
        raise CryptoError("body hash must be 32 bytes (sha256 of the request body)")
    if timestamp < 0:
        raise CryptoError("timestamp must be non-negative")
    ta = bytes.fromhex(checksum(ta_address)[2:])
    return keccak(body_sha256 + timestamp.to_bytes(32, "big") + ta.rjust(32, b"\0"))


def _check_low_s(signature: bytes) -> None:
    if len(signature) != 65:
        raise CryptoError(f"signature must be 65 bytes, got {len(signature)}")
    s = int.from_bytes(signature[32:64], "big")
    if s == 0 or s > SECP256K1_HALF_N:
        raise CryptoError("signature s value is not in the lower half order (malleable signature refused)")
    if signature[64] not in (27, 28):
        raise CryptoError("signature v must be 27 or 28")


_EIP191_PREFIX = b"\x19Ethereum Signed Message:\n32"


def _key_bytes(private_key: str) -> bytes:
    try:
        raw = bytes.fromhex(private_key.removeprefix("0x"))
    except ValueError:
        raise CryptoError("private key must be 32 bytes of hex") from None
    if len(raw) != 32:
        raise CryptoError(f"private key must be 32 bytes, got {len(raw)}")
    return raw


def sign_digest_eip191(digest: bytes, private_key: str) -> bytes:
    """EIP-191 ``personal_sign`` of a 32-byte digest; returns 65 bytes ``r‖s‖v`` (v = 27/28, low s).

    Straight to libsecp256k1 (coincurve, RFC 6979 nonces: the same bytes ``eth_account`` produces) — the request
    path signs and checks several of these per inference, and eth_account's wrappers cost ~3× more."""
    if len(digest) != 32:
        raise CryptoError(f"digest must be 32 bytes, got {len(digest)}")
    try:
        key = coincurve.PrivateKey(_key_bytes(private_key))
    except ValueError as exc:
        raise CryptoError(f"invalid private key: {exc}") from None
    sig = key.sign_recoverable(keccak(_EIP191_PREFIX + digest), hasher=None)
    return sig[:64] + bytes([sig[64] + 27])


def recover_digest_eip191(digest: bytes, signature: bytes) -> Address:
    """Signer of an EIP-191 signature over ``digest``; refuses malleable (high-s) signatures."""
    _check_low_s(signature)
    if len(digest) != 32:
        raise CryptoError(f"digest must be 32 bytes, got {len(digest)}")
    try:
        public = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([signature[64] - 27]), keccak(_EIP191_PREFIX + digest), hasher=None
        )
    except Exception as exc:  # libsecp256k1 refuses r/s out of range or a point that does not exist
        raise CryptoError(f"signature does not recover: {exc}") from None
    return _address_of(public)


def sign_request(body: bytes, timestamp: int, ta_address: str, private_key: str) -> bytes:
    """Client signature authorising ``ta_address`` to start an inference for ``body``."""
    return sign_digest_eip191(request_digest(sha256(body), timestamp, ta_address), private_key)


def recover_request_signer(body: bytes, timestamp: int, ta_address: str, signature: bytes) -> Address:
    """Who signed this request (the paying client)."""
    return recover_digest_eip191(request_digest(sha256(body), timestamp, ta_address), signature)


def inference_id(signature: bytes) -> bytes:
    """``keccak256(signature)`` — an inference's id; unique forever because the contract refuses reuse."""
    _check_low_s(signature)
    return keccak(signature)


def eip712_domain(chain_id: int, verifying_contract: str) -> dict[str, Any]:
    return {
        "name": EIP712_DOMAIN_NAME,
        "version": EIP712_DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": checksum(verifying_contract),
    }


def sign_typed(domain: dict[str, Any], types: dict[str, Any], message: dict[str, Any], private_key: str) -> bytes:
    """EIP-712 signature (65 bytes) over ``message`` of the primary type in ``types``."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    try:
        signable = encode_typed_data(domain_data=domain, message_types=types, message_data=message)
    except Exception as exc:
        raise CryptoError(f"invalid typed data: {exc}") from None
    return bytes(Account.sign_message(signable, private_key).signature)


def recover_typed(domain: dict[str, Any], types: dict[str, Any], message: dict[str, Any], signature: bytes) -> Address:
    """Signer of an EIP-712 signature; refuses malleable signatures."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    _check_low_s(signature)
    try:
        signable = encode_typed_data(domain_data=domain, message_types=types, message_data=message)
        return Address(Account.recover_message(signable, signature=signature))
    except CryptoError:
        raise
    except Exception as exc:
        raise CryptoError(f"typed-data signature does not recover: {exc}") from None


RECEIPT_TYPES: dict[str, Any] = {
    "Receipt": [{"name": "jobId", "type": "uint256"}, {"name": "cumulativeTokens", "type": "uint256"}]
}
"""EIP-712 type of a session receipt: the client acknowledges ``cumulativeTokens`` served on ``jobId``."""


def sign_receipt(chain_id: int, sessions_contract: str, job_id: int, cumulative_tokens: int, private_key: str) -> bytes:
    msg = {"jobId": job_id, "cumulativeTokens": cumulative_tokens}
    return sign_typed(eip712_domain(chain_id, sessions_contract), RECEIPT_TYPES, msg, private_key)


def recover_receipt(chain_id: int, sessions_contract: str, job_id: int, cumulative_tokens: int, sig: bytes) -> Address:
    msg = {"jobId": job_id, "cumulativeTokens": cumulative_tokens}
    return recover_typed(eip712_domain(chain_id, sessions_contract), RECEIPT_TYPES, msg, sig)


# --------------------------------------------------------------------- sessions (WebSocket protocol, issue 10)

SESSION_AUTH_TAG = "dinfer-session-auth"
PROMPT_TAG = "dinfer-prompt"


def session_auth_digest(chain_id: int, sessions_contract: str, job_id: int, host: str, timestamp: int) -> bytes:
    """``keccak256(abi.encode("dinfer-session-auth", chain_id, sessions, job_id, host, timestamp))`` — what a
    session's client signs (EIP-191) to open a WebSocket session or get a JWT from ``host``."""
    from eth_abi import encode

    if timestamp < 0 or job_id < 0:
        raise CryptoError("job_id and timestamp must be non-negative")
    return keccak(encode(["string", "uint256", "address", "uint256", "address", "uint256"],
                         [SESSION_AUTH_TAG, chain_id, checksum(sessions_contract), job_id, checksum(host), timestamp]))


def sign_session_auth(chain_id: int, sessions_contract: str, job_id: int, host: str, timestamp: int,
                      private_key: str) -> bytes:
    """The client's 65-byte session-auth signature."""
    return sign_digest_eip191(session_auth_digest(chain_id, sessions_contract, job_id, host, timestamp), private_key)


def recover_session_auth(chain_id: int, sessions_contract: str, job_id: int, host: str, timestamp: int,
                         signature: bytes) -> Address:
    """Who signed a session-auth message (the host compares it with the session's client on chain)."""
    return recover_digest_eip191(session_auth_digest(chain_id, sessions_contract, job_id, host, timestamp), signature)


def prompt_digest(job_id: int, message_index: int, timestamp: int, nonce: bytes, content: str) -> bytes:
    """``keccak256(abi.encode("dinfer-prompt", job_id, message_index, timestamp, bytes32 nonce,
    bytes32 sha256(utf8 content)))`` — what a client signs for every session prompt (replay protection)."""
    from eth_abi import encode

    if len(nonce) != 32:
        raise CryptoError(f"nonce must be 32 bytes, got {len(nonce)}")
    if min(job_id, message_index, timestamp) < 0:
        raise CryptoError("job_id, message_index and timestamp must be non-negative")
    return keccak(encode(["string", "uint256", "uint256", "uint256", "bytes32", "bytes32"],
                         [PROMPT_TAG, job_id, message_index, timestamp, nonce, sha256(content.encode())]))


def sign_prompt(job_id: int, message_index: int, timestamp: int, nonce: bytes, content: str,
                private_key: str) -> bytes:
    """The client's 65-byte signature of one session prompt."""
    return sign_digest_eip191(prompt_digest(job_id, message_index, timestamp, nonce, content), private_key)


def recover_prompt_signer(job_id: int, message_index: int, timestamp: int, nonce: bytes, content: str,
                          signature: bytes) -> Address:
    """Who signed a session prompt."""
    return recover_digest_eip191(prompt_digest(job_id, message_index, timestamp, nonce, content), signature)
