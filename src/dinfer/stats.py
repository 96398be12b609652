"""MissedStatTest (design §4): is an executor missing inferences more often than the tolerated rate ``p0``?

One-sided exact binomial test: with ``X ~ Binomial(total, p0)`` the test *fails* (the executor is judged down)
when ``P(X ≥ missed) < alpha``. Everything is exact integer/rational arithmetic, so the contract's table and
these functions agree bit for bit.

The contract cannot afford the exact sum, so it holds a critical-value table for ``total ≤ 256``
(``critical_values``, generated here at deploy) and beyond that uses ``normal_approx_fails``: a normal
approximation with continuity and Cornish–Fisher skew correction, computed with integer ``isqrt`` exactly as
written here. ``tests/unit/test_stats.py`` bounds its disagreement with the exact test.
"""

from __future__ import annotations

from fractions import Fraction
from math import comb, isqrt
from statistics import NormalDist

__all__ = [
    "BPS",
    "TABLE_MAX_TOTAL",
    "binomial_tail",
    "critical_value",
    "critical_values",
    "missed_stat_test_fails",
    "missed_stat_test_fails_bps",
    "normal_approx_critical",
    "normal_approx_fails",
    "pack_critical_values",
    "z_alpha_e4",
]

BPS = 10_000
"""Basis points in 1."""
TABLE_MAX_TOTAL = 256
"""Largest window the contract's critical-value table covers."""
Z_SCALE = 10_000
"""``z_alpha`` is passed to the contract as an integer ``round(z · 10⁴)``."""


def _fraction(x: float | Fraction, name: str) -> Fraction:
    f = x if isinstance(x, Fraction) else Fraction(x).limit_denominator(10**12)
    if not 0 < f < 1:
        raise ValueError(f"{name} must be in (0, 1), got {x}")
    return f


def _check_counts(missed: int, total: int) -> None:
    if total < 0 or missed < 0:
        raise ValueError("missed and total must be non-negative")
    if missed > total:
        raise ValueError(f"missed ({missed}) cannot exceed total ({total})")


def binomial_tail(missed: int, total: int, p0: float | Fraction) -> Fraction:
    """Exact ``P(X ≥ missed)`` for ``X ~ Binomial(total, p0)``."""
    _check_counts(missed, total)
    p = _fraction(p0, "p0")
    a, d = p.numerator, p.denominator
    num = sum(comb(total, i) * a**i * (d - a) ** (total - i) for i in range(missed, total + 1))
    return Fraction(num, d**total)


def missed_stat_test_fails(missed: int, total: int, p0: float = 0.10, alpha: float = 0.05) -> bool:
    """True when ``P(X ≥ missed | total, p0) < alpha``: the miss count is too high to be bad luck.

    Example:
        >>> missed_stat_test_fails(4, 10), missed_stat_test_fails(3, 10)
        (True, False)
    """
    _check_counts(missed, total)
    if missed == 0:
        return False
    return binomial_tail(missed, total, p0) < _fraction(alpha, "alpha")


def missed_stat_test_fails_bps(missed: int, total: int, p0_bps: int, alpha_bps: int) -> bool:
    """``missed_stat_test_fails`` with p0 and alpha in basis points (the on-chain unit)."""
    return missed_stat_test_fails(missed, total, Fraction(p0_bps, BPS), Fraction(alpha_bps, BPS))


def critical_value(total: int, p0: float | Fraction, alpha: float | Fraction) -> int:
    """Smallest ``missed`` for which the test fails at this ``total``; ``total + 1`` when none does."""
    if total < 0:
        raise ValueError("total must be non-negative")
    p, al = _fraction(p0, "p0"), _fraction(alpha, "alpha")
    a, d = p.numerator, p.denominator
    b = d - a
    scale = d**total
    bound = al.numerator * scale  # tail·d^n · alpha_den < alpha_num · d^n  ⇔  P(X ≥ m) < alpha
    tail = scale  # d^n · P(X ≥ m), starting at m = 0
    term = b**total  # d^n · P(X = m) = C(n, m)·a^m·b^(n−m)
    for m in range(total + 1):
        if m > 0 and tail * al.denominator < bound:
            return m
        tail -= term
        term = term * (total - m) * a // ((m + 1) * b)  # exact: the next binomial term is an integer
    return total + 1


def critical_values(p0_bps: int, alpha_bps: int, max_total: int = TABLE_MAX_TOTAL) -> list[int]:
    """``[critical_value(total) for total in 0 … max_total]`` with p0 and alpha in basis points.

    The contract table: the test fails iff ``missed ≥ table[total]`` (``total + 1`` means never).
    """
    p, al = Fraction(p0_bps, BPS), Fraction(alpha_bps, BPS)
    return [critical_value(n, p, al) for n in range(max_total + 1)]


def pack_critical_values(values: list[int]) -> list[int]:
    """Pack 16-bit entries 16 per ``uint256`` word, entry ``i`` at bits ``16·(i % 16)`` of word ``i // 16``."""
    words = [0] * ((len(values) + 15) // 16)
    for i, v in enumerate(values):
        if not 0 <= v < 2**16:
            raise ValueError(f"critical value {v} does not fit 16 bits")
        words[i // 16] |= v << (16 * (i % 16))
    return words


def z_alpha_e4(alpha_bps: int) -> int:
    """``round(Φ⁻¹(1 − alpha) · 10⁴)``: the one-sided normal quantile the contract is deployed with."""
    if not 0 < alpha_bps < BPS:
        raise ValueError("alpha_bps must be in (0, 10000)")
    return round(NormalDist().inv_cdf(1 - alpha_bps / BPS) * Z_SCALE)


def normal_approx_fails(missed: int, total: int, p0_bps: int, z_e4: int) -> bool:
    """The contract's rule beyond the table, in the same integer arithmetic.

    Fails when ``missed − ½ − n·p − (z² − 1)(1 − 2p)/6 > z·σ`` with ``σ = √(n·p·(1 − p))`` — the continuity-
    corrected normal quantile plus the first Cornish–Fisher skew term — multiplied through by ``6·BPS·10⁸`` so
    that no division (and no rounding of negative numbers) is needed::

        lhs  = 3·(2·m·S − S − 2·n·p_bps)·10⁸ − (z_e4² − 10⁸)·(S − 2·p_bps)
        rhs  = 6·z_e4·isqrt(n·p_bps·(S − p_bps)·10⁸)
    """
    _check_counts(missed, total)
    if not 0 < p0_bps < BPS:
        raise ValueError("p0_bps must be in (0, 10000)")
    s = BPS
    lhs = 3 * (2 * missed * s - s - 2 * total * p0_bps) * 10**8 - (z_e4 * z_e4 - 10**8) * (s - 2 * p0_bps)
    rhs = 6 * z_e4 * isqrt(total * p0_bps * (s - p0_bps) * 10**8)
    return lhs > rhs


def normal_approx_critical(total: int, p0_bps: int, z_e4: int) -> int:
    """Smallest ``missed`` the normal rule fails at (``total + 1`` when none), found by bisection."""
    lo, hi = 0, total + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if normal_approx_fails(mid, total, p0_bps, z_e4):
            hi = mid
        else:
            lo = mid + 1
    return lo
