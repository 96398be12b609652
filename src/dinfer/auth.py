"""Signed-request headers shared by clients (SDK) and the host node (TA role).

A client authorises one inference by signing ``request_digest(sha256(body), timestamp, ta_address)`` (see
``dinfer.crypto``) and sending::

    X-Dinfer-Address:   0xClient…            the paying account
    X-Dinfer-Timestamp: 1764000000            unix seconds
    X-Dinfer-TA:        0xTransferAgent…     the host node it authorises to start the inference
    X-Dinfer-Signature: 0x…65 bytes…          EIP-191 signature

The same signature goes on chain in the start record; ``inference_id = keccak256(signature)``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from dinfer import crypto
from dinfer.crypto import Address
from dinfer.errors import AuthError as AuthError  # defined with the other errors; re-exported here
from dinfer.errors import CryptoError

H_ADDRESS = "x-dinfer-address"
H_TIMESTAMP = "x-dinfer-timestamp"
H_TA = "x-dinfer-ta"
H_SIGNATURE = "x-dinfer-signature"

SIGNING_HELP = (
    "sign the request: send X-Dinfer-Address, X-Dinfer-Timestamp, X-Dinfer-TA and X-Dinfer-Signature "
    "(EIP-191 signature of keccak256(abi.encode(sha256(body), timestamp, ta))) — the dinfer SDK does this for you: "
    "dinfer.sdk.openai_client(base_url, private_key)"
)


@dataclass(frozen=True)
class SignedRequest:
    client: Address
    timestamp: int
    ta: Address
    signature: bytes

    @property
    def inference_id(self) -> str:
        return "0x" + crypto.inference_id(self.signature).hex()

    def headers(self) -> dict[str, str]:
        """The four signature headers, as the client sent them (to pass the request on unchanged)."""
        return {H_ADDRESS: self.client, H_TIMESTAMP: str(self.timestamp), H_TA: self.ta,
                H_SIGNATURE: "0x" + self.signature.hex()}


def sign_headers(body: bytes, private_key: str, ta_address: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers that authorise ``ta_address`` to run ``body`` on the signer's account.

    Example:
        >>> headers = sign_headers(b'{"model": "m", "messages": []}', key, ta)   # doctest: +SKIP
    """
    ts = int(time.time()) if timestamp is None else timestamp
    signer = crypto.Keypair.from_private_key(private_key)
    signature = crypto.sign_request(body, ts, ta_address, private_key)
    return {H_ADDRESS: signer.address, H_TIMESTAMP: str(ts), H_TA: crypto.checksum(ta_address),
            H_SIGNATURE: "0x" + signature.hex()}


def verify_headers(headers: Mapping[str, str], body: bytes, *, ta_address: str, window_s: int,
                   now: float | None = None) -> SignedRequest:
    """Check the four headers against ``body``; ``AuthError`` with an actionable message otherwise."""
    lower = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in (H_ADDRESS, H_TIMESTAMP, H_TA, H_SIGNATURE) if not lower.get(h)]
    if missing:
        raise AuthError(f"missing {', '.join(missing)}: {SIGNING_HELP}")
    try:
        client = crypto.checksum(lower[H_ADDRESS])
        ta = crypto.checksum(lower[H_TA])
        timestamp = int(lower[H_TIMESTAMP])
        sig_hex = lower[H_SIGNATURE].removeprefix("0x")
        signature = bytes.fromhex(sig_hex)
    except (CryptoError, ValueError) as exc:
        raise AuthError(f"malformed signature headers ({exc}): {SIGNING_HELP}") from None
    if ta != crypto.checksum(ta_address):
        raise AuthError(f"request is signed for transfer agent {ta}, but this node is {crypto.checksum(ta_address)}")
    current = time.time() if now is None else now
    if abs(current - timestamp) > window_s:
        raise AuthError(f"request timestamp {timestamp} is more than {window_s} s from now ({int(current)}); "
                        "re-sign with the current time")
    try:
        signer = crypto.recover_request_signer(body, timestamp, ta, signature)
    except CryptoError as exc:
        raise AuthError(f"bad signature: {exc}") from None
    if signer != client:
        raise AuthError(f"signature was made by {signer}, not by {client} (body changed after signing?)")
    return SignedRequest(client=client, timestamp=timestamp, ta=ta, signature=signature)


# --------------------------------------------------------------------- TA → executor dispatch

H_TA_SIGNATURE = "x-dinfer-ta-signature"
H_TA_TIMESTAMP = "x-dinfer-ta-timestamp"
H_PREVIOUS = "x-dinfer-previous"
"""Comma-separated executors the TA already tried for this inference (fallback)."""


def dispatch_digest(inference_id: str, executor: str, timestamp: int) -> bytes:
    """What a TA signs when it hands an inference to an executor (so nobody else can make it work for free)."""
    from eth_utils import keccak

    return keccak(b"dinfer-dispatch-v1" + bytes.fromhex(inference_id.removeprefix("0x"))
                  + bytes.fromhex(crypto.checksum(executor)[2:]) + timestamp.to_bytes(32, "big"))


def sign_dispatch(inference_id: str, executor: str, ta_key: str, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    sig = crypto.sign_digest_eip191(dispatch_digest(inference_id, executor, ts), ta_key)
    return {H_TA_SIGNATURE: "0x" + sig.hex(), H_TA_TIMESTAMP: str(ts)}


def verify_dispatch(headers: Mapping[str, str], inference_id: str, executor: str, ta: str, *, window_s: int,
                    now: float | None = None) -> None:
    """``AuthError`` unless the TA named in the client's request signed this dispatch to ``executor``."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        ts = int(lower[H_TA_TIMESTAMP])
        sig = bytes.fromhex(lower[H_TA_SIGNATURE].removeprefix("0x"))
    except (KeyError, ValueError):
        raise AuthError(f"executor requests need {H_TA_SIGNATURE} and {H_TA_TIMESTAMP} from the TA") from None
    current = time.time() if now is None else now
    if abs(current - ts) > window_s:
        raise AuthError(f"dispatch timestamp {ts} is more than {window_s} s from now")
    try:
        signer = crypto.recover_digest_eip191(dispatch_digest(inference_id, executor, ts), sig)
    except CryptoError as exc:
        raise AuthError(f"bad dispatch signature: {exc}") from None
    if signer != crypto.checksum(ta):
        raise AuthError(f"dispatch signed by {signer}, but the client authorised TA {ta}")


# --------------------------------------------------------------------- validator → executor payload fetch

H_VALIDATOR = "x-dinfer-validator"


def payload_digest(inference_id: str, validator: str, timestamp: int) -> bytes:
    """What a validator signs to fetch an inference's payload from its executor."""
    from eth_utils import keccak

    return keccak(b"dinfer-payload-v1" + bytes.fromhex(inference_id.removeprefix("0x"))
                  + bytes.fromhex(crypto.checksum(validator)[2:]) + timestamp.to_bytes(32, "big"))


def sign_payload_fetch(inference_id: str, private_key: str, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    validator = crypto.Keypair.from_private_key(private_key).address
    sig = crypto.sign_digest_eip191(payload_digest(inference_id, validator, ts), private_key)
    return {H_VALIDATOR: validator, H_TIMESTAMP: str(ts), H_SIGNATURE: "0x" + sig.hex()}


def verify_payload_fetch(headers: Mapping[str, str], inference_id: str, *, window_s: int,
                         now: float | None = None) -> Address:
    """The validator that signed this payload fetch; ``AuthError`` when unsigned, stale or not its signature."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        validator = crypto.checksum(lower[H_VALIDATOR])
        ts = int(lower[H_TIMESTAMP])
        sig = bytes.fromhex(lower[H_SIGNATURE].removeprefix("0x"))
        signer = crypto.recover_digest_eip191(payload_digest(inference_id, validator, ts), sig)
    except (KeyError, ValueError, CryptoError):
        raise AuthError(f"payload fetches need {H_VALIDATOR}, {H_TIMESTAMP} and {H_SIGNATURE} (EIP-191 signature of "
                        "keccak256('dinfer-payload-v1' ‖ inference_id ‖ validator ‖ uint256 timestamp))") from None
    current = time.time() if now is None else now
    if abs(current - ts) > window_s:
        raise AuthError(f"payload fetch timestamp {ts} is more than {window_s} s from now")
    if signer != validator:
        raise AuthError(f"payload fetch signed by {signer}, not by {validator}")
    return validator


# --------------------------------------------------------------------- client → host API-key requests (node.keys_api)


def keys_digest(method: str, path: str, body: bytes, timestamp: int, ta: str) -> bytes:
    """``keccak256("dinfer-keys-v1" ‖ METHOD ‖ " " ‖ path ‖ "\\n" ‖ sha256(body) ‖ uint256 ts ‖ ta)``."""
    from eth_utils import keccak

    return keccak(b"dinfer-keys-v1" + f"{method.upper()} {path}\n".encode() + crypto.sha256(body)
                  + timestamp.to_bytes(32, "big") + bytes.fromhex(crypto.checksum(ta)[2:]))


def sign_keys_request(method: str, path: str, body: bytes, private_key: str, ta: str,
                      timestamp: int | None = None) -> dict[str, str]:
    """Headers that let the signer manage its API keys on the node ``ta``.

    Example:
        >>> headers = sign_keys_request("GET", "/v1/keys", b"", client_key, node_address)   # doctest: +SKIP
    """
    ts = int(time.time()) if timestamp is None else timestamp
    signer = crypto.Keypair.from_private_key(private_key)
    sig = crypto.sign_digest_eip191(keys_digest(method, path, body, ts, ta), private_key)
    return {H_ADDRESS: signer.address, H_TIMESTAMP: str(ts), H_TA: crypto.checksum(ta), H_SIGNATURE: "0x" + sig.hex()}


def verify_keys_request(headers: Mapping[str, str], method: str, path: str, body: bytes, *, ta: str,
                        window_s: int, now: float | None = None) -> crypto.Address:
    """The client that signed this keys request; ``AuthError`` (401) when unsigned, stale or forged."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        client = crypto.checksum(lower[H_ADDRESS])
        ts = int(lower[H_TIMESTAMP])
        signed_ta = crypto.checksum(lower.get(H_TA) or ta)
        sig = bytes.fromhex(lower[H_SIGNATURE].removeprefix("0x"))
    except (KeyError, ValueError, CryptoError):
        raise AuthError("sign keys requests: X-Dinfer-Address, X-Dinfer-Timestamp, X-Dinfer-Signature (EIP-191 of "
                        "keccak256('dinfer-keys-v1' ‖ METHOD ' ' path '\\n' ‖ sha256(body) ‖ uint256 timestamp ‖ "
                        "node address)); `dinfer keys` does this") from None
    if signed_ta != crypto.checksum(ta):
        raise AuthError(f"keys request is signed for node {signed_ta}, but this node is {crypto.checksum(ta)}")
    current = time.time() if now is None else now
    if abs(current - ts) > window_s:
        raise AuthError(f"keys request timestamp {ts} is more than {window_s} s from now; sign it again")
    try:
        signer = crypto.recover_digest_eip191(keys_digest(method, path, body, ts, ta), sig)
    except CryptoError as exc:
        raise AuthError(f"bad keys-request signature: {exc}") from None
    if signer != client:
        raise AuthError(f"keys request signed by {signer}, not by {client} (body or path changed after signing?)")
    return client
