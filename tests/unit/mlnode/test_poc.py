"""PoC kernel: determinism, seeding, validation tolerance (design §4)."""

from __future__ import annotations

import numpy as np
import pytest

from dinfer.mlnode.poc import DISTANCE_TOLERANCE, PoCKernel, PoCParams, parse_block_hash, validate_claims

HASH_A = bytes.fromhex("11" * 32)
HASH_B = bytes.fromhex("22" * 32)


def test_same_seed_gives_identical_distances() -> None:
    nonces = list(range(200))
    a = PoCKernel(HASH_A, "host-1").distances(nonces)
    b = PoCKernel(HASH_A, "host-1").distances(nonces)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 2.0


def test_block_hash_and_public_key_both_change_the_work() -> None:
    nonces = list(range(100))
    base = PoCKernel(HASH_A, "host-1").distances(nonces)
    assert not np.allclose(base, PoCKernel(HASH_B, "host-1").distances(nonces))
    assert not np.allclose(base, PoCKernel(HASH_A, "host-2").distances(nonces))


def test_a_nonce_does_not_depend_on_its_batch() -> None:
    kernel = PoCKernel(HASH_A, "host-1")
    batch = kernel.distances(list(range(64)))
    singles = np.array([kernel.distances([n])[0] for n in (0, 17, 63)])
    assert np.max(np.abs(batch[[0, 17, 63]] - singles)) <= DISTANCE_TOLERANCE / 10


def test_kernel_size_follows_params() -> None:
    small = PoCKernel(HASH_A, "k", PoCParams(dim=32, seq_len=4, n_heads=2, ffn_mult=2))
    big = PoCKernel(HASH_A, "k", PoCParams(dim=128, seq_len=16, n_heads=8))
    assert small.w1.shape == (32, 64) and big.w1.shape == (128, 512)
    assert small.inputs([1]).shape == (1, 4, 32)
    assert not np.allclose(small.distances([1, 2]), big.distances([1, 2]))


def test_validate_passes_honest_claims_and_catches_tampering() -> None:
    kernel = PoCKernel(HASH_A, "host-1")
    nonces = list(range(300))
    dist = kernel.distances(nonces)
    r_target = float(np.quantile(dist, 0.3))
    valid = [int(n) for n in np.flatnonzero(dist < r_target)]
    claimed = [float(dist[n]) for n in valid]
    checks = validate_claims(PoCKernel(HASH_A, "host-1"), valid, claimed, r_target)
    assert all(c.ok for c in checks) and len(checks) == len(valid) > 0

    tampered = list(claimed)
    tampered[0] -= 10 * DISTANCE_TOLERANCE  # a "better" distance than computed
    verdict = validate_claims(kernel, valid, tampered, r_target)
    assert [c.ok for c in verdict] == [False] + [True] * (len(valid) - 1)

    invalid = int(np.flatnonzero(dist >= r_target)[0])  # honestly computed but not under the target
    assert not validate_claims(kernel, [invalid], [float(dist[invalid])], r_target)[0].ok
    # claims computed under another host's key fail: the work was not this host's
    other = PoCKernel(HASH_A, "host-2").distances(valid[:5])
    assert not any(c.ok for c in validate_claims(kernel, valid[:5], [float(d) for d in other], 2.0))


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_block_hash("0xabc")
    with pytest.raises(ValueError, match="not hex"):
        parse_block_hash("zz" * 32)
    assert parse_block_hash("0x" + "ab" * 32) == bytes.fromhex("ab" * 32)
    with pytest.raises(ValueError, match="multiple of n_heads"):
        PoCParams(dim=30, n_heads=4)
    with pytest.raises(ValueError, match="32 bytes"):
        PoCKernel(b"short", "k")
    with pytest.raises(ValueError, match="distances"):
        validate_claims(PoCKernel(HASH_A, "k"), [1, 2], [1.0], 1.0)
