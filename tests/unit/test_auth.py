"""Signed-request headers: round trip, and every way a request can be refused."""

from __future__ import annotations

import pytest

from dinfer.auth import AuthError, sign_headers, verify_headers
from dinfer.crypto import Keypair, inference_id

CLIENT = Keypair.from_private_key("0x" + "11" * 32)
TA = Keypair.from_private_key("0x" + "22" * 32).address
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
NOW = 1_800_000_000


def test_round_trip_gives_client_and_inference_id() -> None:
    headers = sign_headers(BODY, CLIENT.private_key, TA, timestamp=NOW)
    req = verify_headers(headers, BODY, ta_address=TA, window_s=120, now=NOW + 5)
    assert req.client == CLIENT.address and req.timestamp == NOW
    assert req.inference_id == "0x" + inference_id(req.signature).hex()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda h, b: ({k: v for k, v in h.items() if k != "x-dinfer-signature"}, b), "missing x-dinfer-signature"),
    (lambda h, b: (h, b + b" "), "not by"),
    (lambda h, b: ({**h, "x-dinfer-timestamp": str(NOW - 500)}, b), "more than 120 s"),
    (lambda h, b: ({**h, "x-dinfer-signature": "0xzz"}, b), "malformed"),
    (lambda h, b: ({**h, "x-dinfer-address": "0x1234"}, b), "malformed"),
    (lambda h, b: ({**h, "x-dinfer-ta": CLIENT.address}, b), "signed for transfer agent"),
    (lambda h, b: ({**h, "x-dinfer-signature": "0x" + "00" * 65}, b), "bad signature"),
])
def test_refusals(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    headers, body = mutate(sign_headers(BODY, CLIENT.private_key, TA, timestamp=NOW), BODY)
    with pytest.raises(AuthError, match=message):
        verify_headers(headers, body, ta_address=TA, window_s=120, now=NOW)


def test_headers_are_case_insensitive() -> None:
    headers = {k.upper(): v for k, v in sign_headers(BODY, CLIENT.private_key, TA, timestamp=NOW).items()}
    assert verify_headers(headers, BODY, ta_address=TA, window_s=60, now=NOW).client == CLIENT.address
