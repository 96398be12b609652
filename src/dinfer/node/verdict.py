"""A validator's verdict on one executed inference (design §4, issue #8): pure rules over the executor's payload,
the chain's finish record and the validator's own teacher-forced scoring.

An inference passes when every check holds:

1. the payload's request body carries the client's signature for this inference id (the executor cannot swap the
   prompt), and its output text hashes to the finish record's ``response_hash`` (nor the answer);
2. token counts: the finish record's ``completion_tokens`` equals the number of generated positions the executor
   claimed, and its ``prompt_tokens`` equals the validator's own count of the prompt (over-claims are invalid);
3. finish: ``length`` only at the payload's ``max_tokens`` (and that bound is not below what the client asked);
   ``stop`` without client stop sequences only where the validator's model gives an end-of-generation token at
   least ``MIN_STOP_PROBABILITY`` (a truncated answer ends where the model would not stop);
4. teacher forcing: ``dinfer.validation.score`` of the executor's claimed logprobs against the validator's is at
   least the ``validation_score_threshold_ppm`` protocol parameter (bench/results/validation_scores.json: honest
   ≥ 0.92, another model ≤ 0.01, a 4-bit requantization ≤ 0.52).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from eth_utils import keccak

from dinfer.auth import AuthError, verify_headers
from dinfer.chain.contracts.inference import InferenceInfo
from dinfer.validation import score, top_by_text

MIN_STOP_PROBABILITY = 1e-3
"""Smallest end-of-generation probability a ``stop`` finish may have (measured: complete answers 0.10–0.57,
answers cut in half ≤ 0.0006)."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    score: float
    reasons: list[str] = field(default_factory=list)

    @property
    def score_ppm(self) -> int:
        return max(0, min(1_000_000, round(self.score * 1_000_000)))


def check_payload(inference_id: str, payload: Mapping[str, Any], info: InferenceInfo,
                  response_hash: bytes) -> list[str]:
    """Checks 1–3 that need no model: the reasons the payload fails (empty when it passes)."""
    reasons: list[str] = []
    body = bytes.fromhex(str(payload.get("body_hex", "")))
    auth = payload.get("auth") or {}
    try:
        signed = verify_headers(auth, body, ta_address=info.ta, window_s=0, now=int(auth.get("x-dinfer-timestamp", 0)))
        if signed.inference_id != inference_id.lower() or signed.client != info.client:
            reasons.append("the payload's request is not the one the client signed for this inference")
    except (AuthError, ValueError) as exc:
        reasons.append(f"the payload's request signature does not verify: {exc}")
    text = str(payload.get("text", ""))
    if keccak(text.encode()) != response_hash:
        reasons.append("the payload's output text does not hash to the finish record's response_hash")
    claims = payload.get("claims") or []
    if info.completion_tokens != len(claims):
        reasons.append(f"finish record claims {info.completion_tokens} completion tokens; the output has "
                       f"{len(claims)}")
    finish = payload.get("finish_reason")
    max_tokens = int(payload.get("max_tokens") or 0)
    try:
        asked = orjson.loads(body).get("max_tokens")
    except (orjson.JSONDecodeError, AttributeError):
        asked = None
    if isinstance(asked, int) and max_tokens < asked:
        reasons.append(f"executor bounded the answer at {max_tokens} tokens; the client asked for {asked}")
    if finish == "length" and len(claims) != max_tokens:
        reasons.append(f"finish_reason 'length' after {len(claims)} of {max_tokens} tokens")
    return reasons


def has_stop_sequences(body: bytes) -> bool:
    try:
        stop = orjson.loads(body).get("stop")
    except (orjson.JSONDecodeError, AttributeError):
        return False
    return bool(stop)


def judge(payload: Mapping[str, Any], info: InferenceInfo, static_reasons: Sequence[str],
          scored: Mapping[str, Any], threshold: float) -> Verdict:
    """The verdict from the static checks and the validator ML node's ``/api/v1/score`` answer (text form)."""
    reasons = list(static_reasons)
    if int(scored.get("prompt_tokens", -1)) != info.prompt_tokens:
        reasons.append(f"finish record claims {info.prompt_tokens} prompt tokens; the prompt has "
                       f"{scored.get('prompt_tokens')}")
    claims = payload.get("claims") or []
    positions = scored.get("positions") or []
    if len(positions) != len(claims):
        reasons.append(f"scored {len(positions)} positions for {len(claims)} claims")
        return Verdict(False, 0.0, reasons)
    executor_side = [top_by_text([(t, lp) for t, lp in top], (text, logprob)) for text, logprob, top in claims]
    validator_side = [top_by_text([(t["text"], t["logprob"]) for t in p["top"]], (p["text"], p["logprob"]))
                      for p in positions]
    similarity = score(executor_side, validator_side) if claims else 1.0
    if similarity < threshold:
        reasons.append(f"teacher-forcing score {similarity:.4f} is below the threshold {threshold:.4f}")
    end = scored.get("end_logprob")
    body = bytes.fromhex(str(payload.get("body_hex", "")))
    if payload.get("finish_reason") == "stop" and not has_stop_sequences(body) and end is not None \
            and math.exp(float(end)) < MIN_STOP_PROBABILITY:
        reasons.append(f"answer stops where the model gives end-of-generation only {math.exp(float(end)):.2e} "
                       "(truncated?)")
    return Verdict(not reasons, similarity, reasons)


def failed(reason: str) -> Verdict:
    """A verdict without scoring (payload missing, claims that do not spell the output)."""
    return Verdict(False, 0.0, [reason])
