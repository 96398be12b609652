"""Write authorisation for the ``dinfer store`` service: the namespace owner signs every write.

A write (PUT/DELETE) carries ``X-Dinfer-Address``, ``X-Dinfer-Timestamp`` and ``X-Dinfer-Signature``: an EIP-191
signature over::

    keccak256("dinfer-store/v1\\n" METHOD "\\n" PATH "\\n" sha256(body) hex "\\n" timestamp "\\n" precondition)

``precondition`` is ``if-match:<etag>``, ``if-none-match:*`` or empty. Signing it too means a captured head write
cannot be replayed once the head has moved on (it would fail its precondition), so no server-side replay cache is
needed: blob writes are idempotent and deletes are too.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping

from eth_utils import keccak

from dinfer.auth import H_ADDRESS, H_SIGNATURE, H_TIMESTAMP
from dinfer.crypto import recover_digest_eip191, sign_digest_eip191
from dinfer.errors import CryptoError
from dinfer.sdk.conversations.errors import StoreAuthRejected

SIGNING_HELP = ("sign writes with the namespace owner's key: X-Dinfer-Address, X-Dinfer-Timestamp, "
                "X-Dinfer-Signature (dinfer.sdk.HttpBackend does this for you)")


def precondition(if_match: str | None, if_none_match: str | None) -> str:
    if if_match:
        return "if-match:" + if_match.strip('"')
    if if_none_match:
        return f"if-none-match:{if_none_match}"
    return ""


def write_digest(method: str, path: str, body: bytes, timestamp: int, cond: str) -> bytes:
    text = "\n".join(("dinfer-store/v1", method.upper(), path, hashlib.sha256(body).hexdigest(), str(timestamp), cond))
    return keccak(text.encode())


def sign_write(method: str, path: str, body: bytes, private_key: str, address: str, *, cond: str = "",
               timestamp: int | None = None) -> dict[str, str]:
    """Headers authorising one write by ``address`` (whose key is ``private_key``)."""
    ts = int(time.time()) if timestamp is None else timestamp
    sig = sign_digest_eip191(write_digest(method, path, body, ts, cond), private_key)
    return {H_ADDRESS: address, H_TIMESTAMP: str(ts), H_SIGNATURE: "0x" + sig.hex()}


def verify_write(headers: Mapping[str, str], method: str, path: str, body: bytes, *, owner: str, cond: str,
                 window_s: int, now: float | None = None) -> None:
    """Accept a write only when signed by ``owner`` within ``window_s``: 401 unsigned/stale/garbled, 403 other key."""
    lower = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in (H_ADDRESS, H_TIMESTAMP, H_SIGNATURE) if not lower.get(h)]
    if missing:
        raise StoreAuthRejected(f"unsigned write: missing {', '.join(missing)}; {SIGNING_HELP}", status=401)
    try:
        timestamp = int(lower[H_TIMESTAMP])
        signature = bytes.fromhex(lower[H_SIGNATURE].removeprefix("0x"))
    except ValueError:
        raise StoreAuthRejected(f"malformed signature headers; {SIGNING_HELP}", status=401) from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > window_s:
        raise StoreAuthRejected(f"stale write signature (timestamp {timestamp}, now {int(current)}, window "
                                f"{window_s}s): check the client's clock", status=401)
    try:
        signer = recover_digest_eip191(write_digest(method, path, body, timestamp, cond), signature)
    except CryptoError as exc:
        raise StoreAuthRejected(f"bad write signature ({exc}); {SIGNING_HELP}", status=401) from None
    if signer.lower() != owner.lower():
        raise StoreAuthRejected(f"write to {owner}'s namespace signed by {signer}: only the owner may write",
                                status=403)
    if lower[H_ADDRESS].lower() != owner.lower():
        raise StoreAuthRejected(f"X-Dinfer-Address {lower[H_ADDRESS]} is not the namespace owner {owner}", status=403)
