"""Client-side encryption of conversation blobs: keys derived from the client's private key, never stored.

Keys (HKDF-SHA256, RFC 5869)::

    master  = HKDF(ikm = secp256k1 private key, salt = "dinfer/conversations/v1", info = "master")
    conv_key = HKDF(ikm = master, salt = "", info = "dinfer/conversation/" + conversation id)

A sealed blob is ``0x01 ‖ nonce (24 random bytes) ‖ XChaCha20-Poly1305 ciphertext+tag`` with associated data
``"dinfer/conv/v1|" + conversation id + "|" + kind``: a blob cannot be moved to another conversation or replayed as
another kind (a message as a head) without failing authentication. Its id is ``sha256(sealed blob)``.

Heads are also signed (EIP-191 by the client's account) so a head carries who wrote it, not only the shared key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

import orjson
from eth_utils import keccak
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
)
from nacl.exceptions import CryptoError as NaclCryptoError

from dinfer.crypto import Address, Keypair, recover_digest_eip191, sign_digest_eip191
from dinfer.errors import CryptoError

SEAL_VERSION = 1
NONCE_BYTES = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_MASTER_SALT = b"dinfer/conversations/v1"
_HEAD_SIG_CONTEXT = b"dinfer/conversation-head/v1"


class SealError(CryptoError):
    """A sealed blob does not open with this key and context (tampered, damaged or not ours)."""


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) extract-then-expand."""
    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF length out of range")
    prk = hmac.new(salt or b"\0" * 32, ikm, hashlib.sha256).digest()
    out, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
    return out[:length]


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON (sorted keys) — what gets encrypted and signed."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def blob_id(sealed: bytes) -> str:
    """Content address of a sealed blob: lowercase hex sha256."""
    return hashlib.sha256(sealed).hexdigest()


def _associated_data(conversation_id: str, kind: str) -> bytes:
    return f"dinfer/conv/v1|{conversation_id}|{kind}".encode()


class ConversationKeys:
    """Per-conversation encryption keys and head signatures for one client account.

    Example:
        >>> keys = ConversationKeys("0x" + "11" * 32)
        >>> sealed = keys.seal("c0ffee", "message", b"hello")
        >>> keys.open("c0ffee", "message", sealed)
        b'hello'
    """

    def __init__(self, private_key: str | bytes) -> None:
        self._account = Keypair.from_private_key(private_key)
        raw = bytes.fromhex(self._account.private_key[2:])
        self._master = hkdf_sha256(raw, salt=_MASTER_SALT, info=b"master")
        self._subkeys: dict[str, bytes] = {}

    @property
    def address(self) -> Address:
        return self._account.address

    def _subkey(self, conversation_id: str) -> bytes:
        key = self._subkeys.get(conversation_id)
        if key is None:
            key = hkdf_sha256(self._master, salt=b"", info=b"dinfer/conversation/" + conversation_id.encode())
            if len(self._subkeys) > 4096:  # bounded: a long-lived client may touch many conversations
                self._subkeys.clear()
            self._subkeys[conversation_id] = key
        return key

    def seal(self, conversation_id: str, kind: str, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` for ``conversation_id`` as a blob of ``kind`` (random nonce)."""
        nonce = os.urandom(NONCE_BYTES)
        ct = crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, _associated_data(conversation_id, kind), nonce, self._subkey(conversation_id))
        return bytes([SEAL_VERSION]) + nonce + ct

    def open(self, conversation_id: str, kind: str, sealed: bytes) -> bytes:
        """Decrypt and authenticate; ``SealError`` when the blob was altered, is another kind, or is not ours."""
        if len(sealed) < 1 + NONCE_BYTES + 16:
            raise SealError(f"sealed blob too short ({len(sealed)} bytes)")
        if sealed[0] != SEAL_VERSION:
            raise SealError(f"unknown seal version {sealed[0]}")
        nonce, ct = sealed[1:1 + NONCE_BYTES], sealed[1 + NONCE_BYTES:]
        try:
            return bytes(crypto_aead_xchacha20poly1305_ietf_decrypt(
                ct, _associated_data(conversation_id, kind), nonce, self._subkey(conversation_id)))
        except NaclCryptoError:
            raise SealError("authentication failed (altered data, wrong conversation or another key)") from None

    def sign(self, record: dict[str, Any]) -> str:
        """0x-hex EIP-191 signature over the canonical JSON of ``record``."""
        digest = keccak(_HEAD_SIG_CONTEXT + canonical_json(record))
        return "0x" + sign_digest_eip191(digest, self._account.private_key).hex()

    def verify(self, record: dict[str, Any], signature: str) -> bool:
        """True when ``signature`` over ``record`` recovers to this account."""
        digest = keccak(_HEAD_SIG_CONTEXT + canonical_json(record))
        try:
            return recover_digest_eip191(digest, bytes.fromhex(signature.removeprefix("0x"))) == self.address
        except (CryptoError, ValueError):
            return False
