# pragma version ~=0.4.3
"""
@title MissedStatTest arithmetic (design §4), shared by Inference
@notice Pure helpers mirroring `dinfer.stats`: the packed critical-value table lookup for windows of at most
        256 inferences and the integer normal approximation (continuity + Cornish–Fisher skew term) beyond.
@custom:security Pure functions only; no storage.
"""

BPS: constant(uint256) = 10000
TABLE_MAX_TOTAL: constant(uint256) = 256
TABLE_WORDS: constant(uint256) = 17
E8: constant(uint256) = 100000000


@internal
@pure
def critical_from_word(word: uint256, total: uint256) -> uint256:
    # entry `total` sits at bits 16·(total % 16) of word total // 16 (`dinfer.stats.pack_critical_values`)
    return (word >> (16 * (total % 16))) & 65535


@internal
@pure
def normal_fails(missed: uint256, total: uint256, p0_bps: uint256, z_e4: uint256) -> bool:
    # fail when 3·(2mS − S − 2np)·1e8 − (z² − 1e8)(S − 2p) > 6·z·isqrt(n·p·(S − p)·1e8)  (`normal_approx_fails`)
    s: int256 = convert(BPS, int256)
    m: int256 = convert(missed, int256)
    n: int256 = convert(total, int256)
    p: int256 = convert(p0_bps, int256)
    z: int256 = convert(z_e4, int256)
    lhs: int256 = 3 * (2 * m * s - s - 2 * n * p) * convert(E8, int256) - (z * z - convert(E8, int256)) * (s - 2 * p)
    sigma: uint256 = isqrt(total * p0_bps * (BPS - p0_bps) * E8)
    rhs: int256 = 6 * z * convert(sigma, int256)
    return lhs > rhs
