"""Inference validation (design §4, issue #8): who validates what, and how an executor's logprobs are scored.

Everything here is pure and deterministic; ``Inference.vy`` mirrors ``sample_threshold``/``should_validate`` and
``tiebreak_id``/``second_validator`` exactly, so any change here is a protocol change.

Sampling. Validator ``v`` validates inference ``id`` when
``h = uint256(keccak256(abi.encode(bytes32 id, address v)))`` is below ``T = floor(rate_bps · 2²⁵⁶ / 10000)``
(``sample_threshold``). In uint256 arithmetic (Validation.vy): ``T = rate_bps · Q + rate_bps · R // 10000`` with
``2²⁵⁶ = 10000 · Q + R``; a rate of 10000 bps (or more) samples everything without computing ``T`` (it would be
``2²⁵⁶`` and overflow).

Rate. ``validation_rate_bps`` is the expected number of validations per inference (× 10⁴), split evenly over
the other members of the epoch group, so validation costs the same share of the network's compute at any group
size; an executor with fewer than ``NEW_EXECUTOR_INFERENCES`` inferences in the epoch, or with a confirmed invalid
one in it, is checked ``REPUTATION_FACTOR`` times as often (each, multiplied): ``effective_rate_bps``. 10000 (or
more) is the audit setting: every other member validates every inference. ``Validation.vy`` computes the same.

Tie-breaker. After a failed validation, the second validator is the first member of the weighted executor order
(``dinfer.selection``) of ``tiebreak_id(id) = keccak256(abi.encode(bytes32 id, string "tiebreak"))`` that is neither
the executor nor the first validator and is ACTIVE (Validation.vy replays it with ``Epochs.walk``, which gives up
after 32 non-ACTIVE members). A different id than the executor order's, so the tie-breaker is not simply the
executor's fallback.

Score. See ``score``: 1 for identical distributions, falling towards 0 as the validator's teacher-forced
log-probabilities diverge from the executor's claimed ones.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from fractions import Fraction

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_canonical_address

from dinfer.selection import executor_order
from dinfer.stats import BPS

__all__ = [
    "LOGPROB_FLOOR",
    "NEW_EXECUTOR_INFERENCES",
    "REPUTATION_FACTOR",
    "TIEBREAK_SALT",
    "catch_probability",
    "effective_rate_bps",
    "inferences_to_catch",
    "position_distance",
    "sample_hash",
    "sample_threshold",
    "sampling_consistent",
    "score",
    "second_validator",
    "should_validate",
    "tiebreak_id",
    "top_by_text",
]

_UINT256 = 2**256
LOGPROB_FLOOR = -20.0
"""Log-probabilities below this (and ``-inf``) count as this value, so one impossible token bounds the distance
of its position at ``-LOGPROB_FLOOR`` instead of making it infinite."""
TIEBREAK_SALT = "tiebreak"


def _check_id(inference_id: bytes) -> None:
    if len(inference_id) != 32:
        raise ValueError(f"inference_id must be 32 bytes, got {len(inference_id)}")


def _check_rate(rate_bps: int) -> None:
    if not 0 <= rate_bps <= BPS:
        raise ValueError(f"rate_bps must be in [0, {BPS}], got {rate_bps}")


NEW_EXECUTOR_INFERENCES = 100
"""An executor with fewer inferences than this in the epoch counts as new: it is checked more."""
REPUTATION_FACTOR = 2
"""How much more often a new executor, and one with a confirmed invalid inference this epoch, is checked."""


def effective_rate_bps(base_bps: int, group_size: int, executor_inferences: int, executor_invalid: int) -> int:
    """Per-validator sampling rate (bps) of one executor's inferences (see the module docstring).

    Example:
        >>> [effective_rate_bps(2_000, 11, 500, 0), effective_rate_bps(2_000, 11, 5, 1)]
        [200, 800]
    """
    if base_bps < 0 or group_size < 0 or executor_inferences < 0 or executor_invalid < 0:
        raise ValueError("rates, sizes and counts must be non-negative")
    if base_bps >= BPS:
        return BPS
    rate = base_bps
    if executor_inferences < NEW_EXECUTOR_INFERENCES:
        rate *= REPUTATION_FACTOR
    if executor_invalid > 0:
        rate *= REPUTATION_FACTOR
    return min(BPS, rate // max(group_size - 1, 1))


def sample_threshold(rate_bps: int) -> int:
    """``T = floor(rate_bps · 2²⁵⁶ / 10000)``: a validator samples an inference when its hash is below ``T``.

    ``T = 2²⁵⁶`` (every hash) at 10000 bps; 0 (none) at 0 bps.
    """
    _check_rate(rate_bps)
    return rate_bps * _UINT256 // BPS


def sample_hash(inference_id: bytes, validator: str) -> int:
    """``uint256(keccak256(abi.encode(bytes32 inference_id, address validator)))``."""
    _check_id(inference_id)
    return int.from_bytes(keccak(inference_id + bytes(12) + to_canonical_address(validator)), "big")


def should_validate(inference_id: bytes, validator: str, rate_bps: int) -> bool:
    """Whether ``validator`` must validate ``inference_id`` at a sampling rate of ``rate_bps`` basis points.

    Example:
        >>> should_validate(bytes(32), "0x" + "11" * 20, 10_000), should_validate(bytes(32), "0x" + "11" * 20, 0)
        (True, False)
    """
    return sample_hash(inference_id, validator) < sample_threshold(rate_bps)


def tiebreak_id(inference_id: bytes) -> bytes:
    """``keccak256(abi.encode(bytes32 inference_id, string "tiebreak"))``: the id whose weighted order picks the
    second validator."""
    _check_id(inference_id)
    return keccak(abi_encode(["bytes32", "string"], [inference_id, TIEBREAK_SALT]))


def second_validator(
    inference_id: bytes,
    members: Sequence[str],
    weights: Sequence[int],
    executor: str,
    first_validator: str,
    max_draws: int,
    active: Sequence[bool] | None = None,
) -> str | None:
    """The tie-breaking validator of a failed validation, or ``None`` when the order holds no eligible member.

    Walks ``executor_order(tiebreak_id(inference_id), weights, max_draws)`` over the epoch group ``members`` and
    returns the first member that is neither ``executor`` nor ``first_validator`` (addresses compare
    case-insensitively) and, when ``active`` is given, is ACTIVE.
    """
    if len(members) != len(weights):
        raise ValueError(f"{len(members)} members but {len(weights)} weights")
    if active is not None and len(active) != len(members):
        raise ValueError(f"{len(members)} members but {len(active)} active flags")
    excluded = {to_canonical_address(executor), to_canonical_address(first_validator)}
    for i in executor_order(tiebreak_id(inference_id), weights, max_draws):
        if to_canonical_address(members[i]) in excluded:
            continue
        if active is not None and not active[i]:
            continue
        return members[i]
    return None


# -- scoring ------------------------------------------------------------------------------------------------------


def _clamped(value: float) -> float:
    if math.isnan(value):
        raise ValueError("logprob is NaN")
    if value > 0.0:
        raise ValueError(f"logprob must be <= 0, got {value}")
    return max(value, LOGPROB_FLOOR)


def position_distance(executor_top: Mapping[Hashable, float], validator_top: Mapping[Hashable, float]) -> float:
    """Mean absolute log-probability difference over the union of both top-k sets at one position, in nats.

    A token missing from one side's top-k is known only to be below that side's smallest listed logprob, so it
    takes that smallest value (the tightest bound: honest runs whose k-th and (k+1)-th tokens swap places through
    rounding are not penalised). Every value is clamped at ``LOGPROB_FLOOR``, so the result is in
    ``[0, -LOGPROB_FLOOR]``. Two empty sets are identical (distance 0).
    """
    if not executor_top and not validator_top:
        return 0.0
    if not executor_top or not validator_top:
        return -LOGPROB_FLOOR  # one side claims nothing: maximal disagreement
    e = {k: _clamped(v) for k, v in executor_top.items()}
    v = {k: _clamped(x) for k, x in validator_top.items()}
    e_missing, v_missing = min(e.values()), min(v.values())
    union = e.keys() | v.keys()
    return sum(abs(e.get(t, e_missing) - v.get(t, v_missing)) for t in union) / len(union)


def top_by_text(top: Sequence[tuple[str, float]], chosen: tuple[str, float]) -> dict[str, float]:
    """A top-k list keyed by token text exactly as llama.cpp's OpenAI logprobs build it.

    llama.cpp renders ``top_logprobs`` as a dict from token text to logprob, filled in descending order (so when
    two ids share a text, e.g. two partial UTF-8 pieces rendering as ``""``, the lower logprob wins), then updated
    with the emitted token's own text and logprob. Building the validator's side the same way makes honest claims
    compare key for key.
    """
    out = {text: logprob for text, logprob in sorted(top, key=lambda t: t[1], reverse=True)}
    out[chosen[0]] = chosen[1]
    return out


def score(
    executor_top_logprobs: Sequence[Mapping[Hashable, float]],
    validator_top_logprobs: Sequence[Mapping[Hashable, float]],
) -> float:
    """Similarity in ``[0, 1]`` of the executor's claimed top-k logprobs and the validator's teacher-forced ones.

    Definition: for each generated position ``t`` take ``d_t = position_distance(E_t, V_t)`` (the mean absolute
    difference, in nats, of the log-probabilities of the tokens in the union of both top-k sets, a missing token
    taking its side's smallest listed value, all clamped at ``LOGPROB_FLOOR``); then
    ``score = exp(-mean_t d_t)``. So 1 means identical, ``e^-0.1 ≈ 0.905`` means the claims are off by 0.1 nats per
    token on average, and ``e^-20`` is the floor. Keys are whatever identifies a token on both sides (ids, or the
    token strings of OpenAI logprobs). Positions must line up: ``ValueError`` on different lengths or none at all.

    Example:
        >>> score([{1: -0.1, 2: -2.5}], [{1: -0.1, 2: -2.5}])
        1.0
    """
    if len(executor_top_logprobs) != len(validator_top_logprobs):
        raise ValueError(
            f"executor has {len(executor_top_logprobs)} positions, validator {len(validator_top_logprobs)}"
        )
    if not executor_top_logprobs:
        raise ValueError("nothing to score: no generated positions")
    total = sum(position_distance(e, v) for e, v in zip(executor_top_logprobs, validator_top_logprobs, strict=True))
    return math.exp(-total / len(executor_top_logprobs))


# -- statistics of the catch rate ---------------------------------------------------------------------------------


def _check_probability(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")


def catch_probability(rate: float, n: int, validators: int = 1) -> float:
    """Probability that at least one of ``n`` bad inferences is sampled by at least one of ``validators``.

    Each (inference, validator) pair is sampled independently with probability ``rate`` (the hash is uniform), so
    all ``n · validators`` pairs escape with ``(1 - rate)^(n · validators)``.

    Example:
        >>> round(catch_probability(0.01, 300), 3)
        0.951
    """
    _check_probability(rate)
    if n < 0 or validators < 0:
        raise ValueError("n and validators must be non-negative")
    pairs = n * validators
    if pairs == 0 or rate == 0.0:
        return 0.0
    if rate == 1.0:
        return 1.0
    return -math.expm1(pairs * math.log1p(-rate))  # 1 - (1 - rate)^pairs without cancellation


def inferences_to_catch(rate: float, confidence: float, validators: int = 1) -> int:
    """Smallest ``n`` with ``catch_probability(rate, n, validators) >= confidence``."""
    _check_probability(rate)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if rate == 0.0 or validators <= 0:
        raise ValueError("nothing is ever sampled at rate 0 or with no validators")
    if rate == 1.0:
        return 1
    n = max(1, math.ceil(math.log1p(-confidence) / (validators * math.log1p(-rate))))
    while n > 1 and catch_probability(rate, n - 1, validators) >= confidence:  # float rounding guard
        n -= 1
    while catch_probability(rate, n, validators) < confidence:
        n += 1
    return n


def _binomial_cdf(k: int, n: int, p: Fraction) -> Fraction:
    """Exact ``P(X <= k)`` for ``X ~ Binomial(n, p)``, summing the ``k + 1`` lower terms only."""
    if k < 0:
        return Fraction(0)
    a, d = p.numerator, p.denominator
    b = d - a
    term = b**n  # i = 0 term, scaled by d^n
    total = term
    for i in range(1, min(k, n) + 1):
        term = term * (n - i + 1) * a // (i * b)  # exact: each term is an integer multiple here
        total += term
    return Fraction(total, d**n)


def sampling_consistent(hits: int, trials: int, rate_bps: int, alpha: float = 1e-6) -> bool:
    """Two-sided exact binomial test: is ``hits`` out of ``trials`` plausible at ``rate_bps``?

    False when either tail probability (``P(X ≥ hits)`` or ``P(X ≤ hits)``) is below ``alpha / 2``; used to check
    that ``should_validate`` samples at the configured rate.
    """
    _check_rate(rate_bps)
    if not 0 <= hits <= trials:
        raise ValueError(f"need 0 <= hits <= trials, got {hits}/{trials}")
    if rate_bps in (0, BPS):
        return hits == (0 if rate_bps == 0 else trials)
    p = Fraction(rate_bps, BPS)
    lower = _binomial_cdf(hits, trials, p)
    upper = 1 - _binomial_cdf(hits - 1, trials, p)
    half = Fraction(alpha) / 2
    return upper >= half and lower >= half
