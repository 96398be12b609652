"""MissedStatTest: exact binomial, the contract's table, and the contract's normal rule beyond the table."""

from __future__ import annotations

import itertools
from fractions import Fraction
from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dinfer.config import ProtocolParams
from dinfer.stats import (
    TABLE_MAX_TOTAL,
    binomial_tail,
    critical_value,
    critical_values,
    missed_stat_test_fails,
    missed_stat_test_fails_bps,
    normal_approx_critical,
    normal_approx_fails,
    pack_critical_values,
    z_alpha_e4,
)

P0_GRID = [500, 1000, 2000, 3000, 4000, 5000]  # the reference network's precomputed p0 values


def test_reference_values_at_defaults() -> None:
    assert not missed_stat_test_fails(3, 10) and missed_stat_test_fails(4, 10)
    assert not missed_stat_test_fails(15, 100) and missed_stat_test_fails(16, 100)
    table = critical_values(1000, 500)
    assert table[10] == 4 and table[100] == 16


def test_defaults_match_protocol_params() -> None:
    params = ProtocolParams()
    assert (params.missed_p0_bps, params.missed_alpha_bps) == (1000, 500)
    assert critical_values(params.missed_p0_bps, params.missed_alpha_bps)[10] == 4


def test_binomial_tail_small_case_by_hand() -> None:
    # P(X >= 2 | n=3, p=1/10) = 3·(1/100)·(9/10) + 1/1000 = 28/1000
    assert binomial_tail(2, 3, Fraction(1, 10)) == Fraction(28, 1000)
    assert binomial_tail(0, 5, 0.3) == 1


def test_zero_misses_and_empty_window_never_fail() -> None:
    assert not missed_stat_test_fails(0, 0)
    assert not missed_stat_test_fails(0, 1000)
    assert not missed_stat_test_fails(1, 1)  # P(X >= 1 | 1) = 0.1 >= 0.05
    assert missed_stat_test_fails(2, 2)  # 0.01 < 0.05


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="cannot exceed"):
        missed_stat_test_fails(5, 4)
    with pytest.raises(ValueError, match="non-negative"):
        missed_stat_test_fails(-1, 4)
    with pytest.raises(ValueError, match="p0"):
        missed_stat_test_fails(1, 4, p0=1.5)
    with pytest.raises(ValueError, match="alpha_bps"):
        z_alpha_e4(0)
    with pytest.raises(ValueError, match="16 bits"):
        pack_critical_values([2**16])


@pytest.mark.parametrize("p0_bps", P0_GRID)
def test_table_is_the_exact_boundary(p0_bps: int) -> None:
    table = critical_values(p0_bps, 500, 120)
    assert len(table) == 121
    for total, crit in enumerate(table):
        if crit <= total:
            assert missed_stat_test_fails_bps(crit, total, p0_bps, 500)
        if crit - 1 >= 0:
            assert not missed_stat_test_fails_bps(crit - 1, total, p0_bps, 500)
    assert all(b >= a for a, b in itertools.pairwise(table))  # non-decreasing in the window


@given(st.integers(min_value=0, max_value=200), st.data())
@settings(max_examples=150, deadline=None)
def test_exact_test_matches_direct_sum(total: int, data: st.DataObject) -> None:
    missed = data.draw(st.integers(min_value=0, max_value=total))
    tail = sum(comb(total, i) * Fraction(1, 10) ** i * Fraction(9, 10) ** (total - i) for i in range(missed, total + 1))
    assert missed_stat_test_fails(missed, total) == (missed > 0 and tail < Fraction(1, 20))


def test_full_table_and_packing_round_trip() -> None:
    table = critical_values(1000, 500)
    assert len(table) == TABLE_MAX_TOTAL + 1 and table[0] == 1 and table[1] == 2
    words = pack_critical_values(table)
    assert len(words) == 17
    unpacked = [(words[i // 16] >> (16 * (i % 16))) & 0xFFFF for i in range(len(table))]
    assert unpacked == table


def test_z_alpha() -> None:
    assert z_alpha_e4(500) == 16449
    assert z_alpha_e4(100) == 23263


@pytest.mark.parametrize("p0_bps", P0_GRID)
@pytest.mark.parametrize("alpha_bps", [100, 500, 1000])
def test_normal_rule_agrees_with_exact_beyond_table(p0_bps: int, alpha_bps: int) -> None:
    """Documented tolerance: the normal rule's critical value is the exact one or exactly one more.

    It therefore never slashes where the exact test would not (it may wait for one more miss).
    """
    z = z_alpha_e4(alpha_bps)
    p, alpha = Fraction(p0_bps, 10_000), Fraction(alpha_bps, 10_000)
    diffs = []
    for total in [*range(200, 420, 7), 1000, 2500, 5000]:
        diffs.append(normal_approx_critical(total, p0_bps, z) - critical_value(total, p, alpha))
    assert set(diffs) <= {0, 1}, diffs
    assert diffs.count(0) >= len(diffs) // 3


def test_normal_rule_is_monotone_in_missed() -> None:
    z = z_alpha_e4(500)
    for total in (257, 300, 1000):
        verdicts = [normal_approx_fails(m, total, 1000, z) for m in range(total + 1)]
        first = verdicts.index(True)
        assert all(verdicts[first:]) and not any(verdicts[:first])
        assert first == normal_approx_critical(total, 1000, z)


@pytest.mark.parametrize("total", [257, 1000])
def test_critical_value_is_exact_boundary_for_large_windows(total: int) -> None:
    crit = critical_value(total, Fraction(1, 10), Fraction(1, 20))
    assert missed_stat_test_fails(crit, total) and not missed_stat_test_fails(crit - 1, total)
