"""A validator's verdict rules (node/verdict.py): every way a payload can lie is named, an honest one passes."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from eth_utils import keccak

from dinfer.auth import sign_headers
from dinfer.chain.contracts.inference import InferenceInfo, InferenceStatus
from dinfer.crypto import Keypair, inference_id
from dinfer.node.verdict import MIN_STOP_PROBABILITY, Verdict, check_payload, judge

TA = Keypair.generate()
CLIENT = Keypair.generate()
CLAIMS = [["Hi", -0.5, [["Hi", -0.5], ["Yo", -1.5]]], [" there", -0.25, [[" there", -0.25], ["!", -2.0]]]]


def _payload(body: dict[str, Any] | None = None, **over: Any) -> tuple[str, dict[str, Any]]:
    raw = orjson.dumps(body or {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8})
    auth = sign_headers(raw, CLIENT.private_key, TA.address, timestamp=1_700_000_000)
    iid = "0x" + inference_id(bytes.fromhex(auth["x-dinfer-signature"][2:])).hex()
    payload = {"kind": "chat", "auth": auth, "body_hex": raw.hex(), "text": "Hi there", "prompt_tokens": 12,
               "completion_tokens": 2, "finish_reason": "stop", "max_tokens": 8, "claims": CLAIMS, **over}
    return iid, payload


def _info(prompt: int = 12, completion: int = 2) -> InferenceInfo:
    return InferenceInfo(InferenceStatus.FINISHED, False, CLIENT.address, TA.address, "0x" + "11" * 20, b"\0" * 32,
                         1, 10, 20, prompt, completion, 1, 20, (prompt + completion))


HASH = keccak(b"Hi there")


def _scored(**over: Any) -> dict[str, Any]:
    positions = [{"token": 1, "text": t, "logprob": lp, "top": [{"token": 0, "text": a, "logprob": b} for a, b in top]}
                 for t, lp, top in CLAIMS]
    return {"prompt_tokens": 12, "positions": positions, "end_logprob": math.log(0.3), **over}


def test_honest_payload_passes_with_score_one() -> None:
    iid, payload = _payload()
    static = check_payload(iid, payload, _info(), HASH)
    assert static == []
    verdict = judge(payload, _info(), static, _scored(), 0.8)
    assert verdict == Verdict(True, 1.0, []) and verdict.score_ppm == 1_000_000


@pytest.mark.parametrize(("change", "needle"), [
    (lambda iid, p, info: (iid, {**p, "body_hex": p["body_hex"].replace("68656c6c6f", "6a656c6c6f")}, info),
     "signature"),
    (lambda iid, p, info: ("0x" + "00" * 32, p, info), "not the one the client signed"),
    (lambda iid, p, info: (iid, {**p, "text": "Hi there!"}, info), "response_hash"),
    (lambda iid, p, info: (iid, p, _info(completion=5)), "claims 5 completion tokens"),
    (lambda iid, p, info: (iid, {**p, "finish_reason": "length"}, info), "'length' after 2 of 8"),
    (lambda iid, p, info: (iid, {**p, "max_tokens": 4}, info), "client asked for 8"),
])
def test_each_lie_is_named(change: Any, needle: str) -> None:
    iid, payload = _payload()
    iid, payload, info = change(iid, payload, _info())
    reasons = check_payload(iid, payload, info, HASH)
    assert any(needle in r for r in reasons), reasons


def test_prompt_count_score_and_truncation_are_judged() -> None:
    _iid, payload = _payload()
    assert "prompt has 11" in judge(payload, _info(), [], _scored(prompt_tokens=11), 0.8).reasons[0]
    other = _scored()
    for p in other["positions"]:
        p["logprob"] -= 3.0
        p["top"] = [{"token": 0, "text": "zzz", "logprob": -0.1}]
    low = judge(payload, _info(), [], other, 0.8)
    assert not low.ok and low.score < 0.8 and "below the threshold" in low.reasons[0]
    cut = judge(payload, _info(), [], _scored(end_logprob=math.log(MIN_STOP_PROBABILITY / 10)), 0.8)
    assert not cut.ok and "truncated" in cut.reasons[0]
    # a client stop sequence ends answers anywhere: no end-of-generation check then
    _, stopped = _payload({"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8,
                             "stop": ["\n"]})
    assert judge(stopped, _info(), [], _scored(end_logprob=-30.0), 0.8).ok
    assert not judge(payload, _info(), [], _scored(positions=[]), 0.8).ok
