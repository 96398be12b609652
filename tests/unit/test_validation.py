"""Validation math: sampling by hash, the tie-breaker pick, the logprob score and the catch-rate statistics."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from dinfer.selection import executor_order
from dinfer.stats import binomial_tail
from dinfer.validation import (
    LOGPROB_FLOOR,
    _binomial_cdf,
    catch_probability,
    inferences_to_catch,
    position_distance,
    sample_hash,
    sample_threshold,
    sampling_consistent,
    score,
    second_validator,
    should_validate,
    tiebreak_id,
)

ids = st.binary(min_size=32, max_size=32)
addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
logprobs = st.floats(min_value=-40.0, max_value=0.0, allow_nan=False)
top_k = st.dictionaries(st.integers(0, 50), logprobs, min_size=1, max_size=6)


# -- sampling ----------------------------------------------------------------------------------------------------


def test_sample_hash_is_keccak_of_abi_encoded_id_and_address() -> None:
    iid, validator = bytes(range(32)), "0x" + "ab" * 20
    expected = int.from_bytes(keccak(encode(["bytes32", "address"], [iid, validator])), "big")
    assert sample_hash(iid, validator) == expected
    assert sample_hash(iid, to_checksum_address(validator)) == expected  # checksum case does not matter


def test_threshold_is_the_floor_and_matches_the_uint256_formula() -> None:
    q, r = divmod(2**256, 10_000)
    assert sample_threshold(0) == 0
    assert sample_threshold(10_000) == 2**256
    for rate in (1, 7, 100, 2500, 9999):
        t = sample_threshold(rate)
        assert t * 10_000 <= rate * 2**256 < (t + 1) * 10_000  # largest T with T·10000 ≤ rate·2²⁵⁶
        assert t == rate * q + rate * r // 10_000  # what Validation.vy computes without overflow
        assert t < 2**256


@given(ids, addresses, st.integers(0, 10_000))
@settings(max_examples=200, deadline=None)
def test_should_validate_is_the_exact_comparison(iid: bytes, validator: str, rate: int) -> None:
    h = sample_hash(iid, validator)
    assert should_validate(iid, validator, rate) == (h < rate * 2**256 // 10_000)


@given(ids, addresses, st.integers(0, 9_999))
@settings(max_examples=100, deadline=None)
def test_sampling_is_monotone_in_rate(iid: bytes, validator: str, rate: int) -> None:
    if should_validate(iid, validator, rate):
        assert should_validate(iid, validator, rate + 1)


def test_sampled_fraction_matches_rate() -> None:
    """10k random (id, validator) pairs at 10 %: the hit count passes a two-sided exact binomial test."""
    rng = random.Random(8)
    rate, trials = 1000, 10_000
    hits = sum(
        should_validate(rng.randbytes(32), "0x" + rng.randbytes(20).hex(), rate) for _ in range(trials)
    )
    assert sampling_consistent(hits, trials, rate), hits


@given(st.integers(0, 60), st.integers(0, 60), st.integers(1, 9_999))
@settings(max_examples=50, deadline=None)
def test_binomial_cdf_agrees_with_stats_tail(k: int, n: int, rate: int) -> None:
    p = Fraction(rate, 10_000)
    k = min(k, n)
    assert _binomial_cdf(k, n, p) == 1 - (binomial_tail(k + 1, n, p) if k < n else 0)


def test_sampling_consistent_rejects_wrong_rates() -> None:
    assert sampling_consistent(100, 1000, 1000)
    assert not sampling_consistent(200, 1000, 1000)
    assert not sampling_consistent(40, 1000, 1000)
    assert sampling_consistent(0, 50, 0) and not sampling_consistent(1, 50, 0)
    assert sampling_consistent(50, 50, 10_000) and not sampling_consistent(49, 50, 10_000)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: should_validate(b"\x00" * 31, "0x" + "11" * 20, 10), "32 bytes"),
        (lambda: should_validate(bytes(32), "0x" + "11" * 20, 10_001), "rate_bps"),
        (lambda: should_validate(bytes(32), "0x" + "11" * 20, -1), "rate_bps"),
        (lambda: sampling_consistent(5, 4, 10), "hits"),
    ],
)
def test_sampling_bad_input(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


def test_bad_address_is_refused() -> None:
    with pytest.raises(ValueError):
        should_validate(bytes(32), "0x1234", 10)


# -- tie-breaker -------------------------------------------------------------------------------------------------

MEMBERS = [to_checksum_address("0x" + f"{i:02x}" * 20) for i in range(1, 6)]


def test_tiebreak_id_is_keccak_of_abi_encoded_id_and_salt() -> None:
    iid = bytes(range(32))
    assert tiebreak_id(iid) == keccak(encode(["bytes32", "string"], [iid, "tiebreak"]))


def test_second_validator_walks_the_tiebreak_order_skipping_the_parties() -> None:
    iid = bytes(range(32))
    weights = [5, 1, 3, 2, 4]
    order = executor_order(tiebreak_id(iid), weights, 64)
    executor, first = MEMBERS[order[0]], MEMBERS[order[1]]
    assert second_validator(iid, MEMBERS, weights, executor, first, 64) == MEMBERS[order[2]]
    # lower-case addresses name the same parties
    assert second_validator(iid, MEMBERS, weights, executor.lower(), first.lower(), 64) == MEMBERS[order[2]]
    active = [True] * 5
    active[order[2]] = False
    assert second_validator(iid, MEMBERS, weights, executor, first, 64, active) == MEMBERS[order[3]]


def test_second_validator_none_when_nobody_else() -> None:
    iid = bytes(32)
    assert second_validator(iid, MEMBERS[:2], [1, 1], MEMBERS[0], MEMBERS[1], 64) is None
    assert second_validator(iid, MEMBERS[:3], [1, 1, 0], MEMBERS[0], MEMBERS[1], 64) is None  # weight 0: never


@given(ids, st.lists(st.integers(1, 100), min_size=3, max_size=12), st.data())
@settings(max_examples=100, deadline=None)
def test_second_validator_is_deterministic_and_never_a_party(
    iid: bytes, weights: list[int], data: st.DataObject
) -> None:
    members = [to_checksum_address("0x" + f"{i + 1:040x}") for i in range(len(weights))]
    e, v = data.draw(st.sampled_from(members)), data.draw(st.sampled_from(members))
    pick = second_validator(iid, members, weights, e, v, 256)
    assert pick == second_validator(iid, members, weights, e, v, 256)
    assert pick not in (e, v)
    if pick is None:  # only when the draws never reached a third member
        assert set(executor_order(tiebreak_id(iid), weights, 256)) <= {members.index(e), members.index(v)}


def test_second_validator_bad_input() -> None:
    with pytest.raises(ValueError, match="weights"):
        second_validator(bytes(32), MEMBERS, [1], MEMBERS[0], MEMBERS[1], 8)
    with pytest.raises(ValueError, match="active"):
        second_validator(bytes(32), MEMBERS, [1] * 5, MEMBERS[0], MEMBERS[1], 8, [True])


# -- score -------------------------------------------------------------------------------------------------------


def test_identical_distributions_score_one() -> None:
    pos = [{1: -0.1, 2: -2.5, 3: -4.0}, {7: -0.01, 8: -5.0}]
    assert score(pos, pos) == 1.0


def test_score_by_hand() -> None:
    # position 0: union {1, 2, 3}; 3 is missing on the executor side → its min (-2.0): |−0.5+0.7|, |−2+2|, |−2+3|
    e = [{1: -0.5, 2: -2.0}]
    v = [{1: -0.7, 2: -2.0, 3: -3.0}]
    d = (0.2 + 0.0 + 1.0) / 3
    assert position_distance(e[0], v[0]) == pytest.approx(d)
    assert score(e, v) == pytest.approx(math.exp(-d))


def test_floor_bounds_impossible_tokens() -> None:
    assert position_distance({1: -math.inf}, {1: 0.0}) == -LOGPROB_FLOOR
    assert score([{1: -1e9}], [{1: 0.0}]) == pytest.approx(math.exp(LOGPROB_FLOOR))
    assert position_distance({}, {}) == 0.0
    assert position_distance({1: -0.1}, {}) == -LOGPROB_FLOOR


def test_a_different_model_scores_low_and_a_close_one_high() -> None:
    honest = [{1: -0.10, 2: -2.40, 3: -3.0}] * 20
    close = [{1: -0.11, 2: -2.38, 3: -3.02}] * 20
    other = [{4: -0.2, 5: -1.9, 1: -6.0}] * 20
    assert score(honest, close) > 0.97
    assert score(honest, other) < 0.1


@given(st.lists(st.tuples(top_k, top_k), min_size=1, max_size=20))
@settings(max_examples=200, deadline=None)
def test_score_properties(pairs: list[tuple[dict[int, float], dict[int, float]]]) -> None:
    e, v = [p[0] for p in pairs], [p[1] for p in pairs]
    s = score(e, v)
    assert math.exp(LOGPROB_FLOOR) - 1e-12 <= s <= 1.0
    assert s == pytest.approx(score(v, e))  # symmetric
    assert score(e, e) == 1.0


@given(st.lists(top_k, min_size=1, max_size=10), st.floats(0.01, 5.0))
@settings(max_examples=100, deadline=None)
def test_larger_perturbation_never_scores_higher(base: list[dict[int, float]], shift: float) -> None:
    def shifted(by: float) -> list[dict[int, float]]:
        return [{k: v - by for k, v in pos.items()} for pos in base]

    assert score(base, shifted(shift)) >= score(base, shifted(2 * shift)) - 1e-12


def test_score_bad_input() -> None:
    with pytest.raises(ValueError, match="positions"):
        score([{1: -0.1}], [])
    with pytest.raises(ValueError, match="nothing to score"):
        score([], [])
    with pytest.raises(ValueError, match="NaN"):
        score([{1: math.nan}], [{1: -0.1}])
    with pytest.raises(ValueError, match="<= 0"):
        score([{1: 0.5}], [{1: -0.1}])


# -- catch-rate statistics ---------------------------------------------------------------------------------------


def test_catch_probability_values() -> None:
    assert catch_probability(0.0, 100) == 0.0
    assert catch_probability(1.0, 1) == 1.0
    assert catch_probability(0.1, 0) == 0.0
    assert catch_probability(0.1, 1) == pytest.approx(0.1)
    assert catch_probability(0.1, 1, validators=2) == pytest.approx(0.19)
    assert catch_probability(0.01, 300) == pytest.approx(1 - 0.99**300)


@given(st.floats(0.0001, 0.5), st.floats(0.5, 0.999), st.integers(1, 5))
@settings(max_examples=100, deadline=None)
def test_inferences_to_catch_is_the_smallest_n(rate: float, confidence: float, validators: int) -> None:
    n = inferences_to_catch(rate, confidence, validators)
    assert catch_probability(rate, n, validators) >= confidence
    assert n == 1 or catch_probability(rate, n - 1, validators) < confidence


def test_empirical_catch_rate_matches_catch_probability() -> None:
    """Simulate cheaters with 30 bad inferences under 3 validators at 2 %: caught fraction ≈ the formula."""
    rng = random.Random(80)
    validators = ["0x" + rng.randbytes(20).hex() for _ in range(3)]
    rate_bps, n, runs = 200, 30, 400
    caught = 0
    for _ in range(runs):
        bad = [rng.randbytes(32) for _ in range(n)]
        caught += any(should_validate(iid, v, rate_bps) for iid in bad for v in validators)
    p = catch_probability(rate_bps / 10_000, n, len(validators))
    sd = math.sqrt(runs * p * (1 - p))
    assert abs(caught - runs * p) < 5 * sd, (caught, runs * p)


def test_catch_bad_input() -> None:
    with pytest.raises(ValueError, match="rate"):
        catch_probability(1.5, 3)
    with pytest.raises(ValueError, match="non-negative"):
        catch_probability(0.1, -1)
    with pytest.raises(ValueError, match="confidence"):
        inferences_to_catch(0.1, 1.0)
    with pytest.raises(ValueError, match="rate 0"):
        inferences_to_catch(0.0, 0.9)


def test_effective_rate_splits_over_the_group_and_rises_with_bad_reputation() -> None:
    from dinfer.validation import NEW_EXECUTOR_INFERENCES, effective_rate_bps

    seasoned = NEW_EXECUTOR_INFERENCES
    # the expected validations per inference stay at the base whatever the group size
    for size in (2, 3, 10, 101):
        per_validator = effective_rate_bps(2_000, size, seasoned, 0)
        assert per_validator == 2_000 // (size - 1)
        assert abs(per_validator * (size - 1) - 2_000) < size
    assert effective_rate_bps(2_000, 11, seasoned - 1, 0) == 400  # new executor: ×2
    assert effective_rate_bps(2_000, 11, seasoned, 3) == 400  # caught this epoch: ×2
    assert effective_rate_bps(2_000, 11, 0, 1) == 800  # both
    assert effective_rate_bps(9_000, 2, 0, 1) == 10_000  # capped
    assert effective_rate_bps(10_000, 50, seasoned, 0) == 10_000  # audit setting: everyone, always
    assert effective_rate_bps(2_000, 0, seasoned, 0) == 2_000  # no group known: one validator's worth
    with pytest.raises(ValueError, match="non-negative"):
        effective_rate_bps(-1, 3, 0, 0)
