"""Keccak Merkle tree over PoC leaves (sorted pairs, OpenZeppelin-compatible)."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from dinfer.merkle import distance_scaled, hash_pair, leaf_hash, merkle_proof, merkle_root, verify_proof


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(i * 7 + 1, 1.0 + i / 1000) for i in range(n)]


def test_leaf_is_keccak_of_abi_encoded_nonce_and_scaled_distance() -> None:
    assert distance_scaled(1.234567891) == 1_234_567_891
    assert leaf_hash(42, 1.234567891) == keccak(encode(["uint256", "uint256"], [42, 1_234_567_891]))


def test_hand_built_three_leaf_tree() -> None:
    a, b, c = _leaves(3)
    ab = keccak(min(a, b) + max(a, b))
    root = keccak(min(ab, c) + max(ab, c))  # c has no sibling on level 0 and moves up unchanged
    assert merkle_root([a, b, c]) == root
    assert merkle_proof([a, b, c], 2) == [ab]
    assert merkle_proof([a, b, c], 0) == [b, c]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
def test_every_proof_verifies_and_a_tampered_leaf_does_not(n: int) -> None:
    leaves = _leaves(n)
    root = merkle_root(leaves)
    for i, leaf in enumerate(leaves):
        proof = merkle_proof(leaves, i)
        assert verify_proof(root, leaf, proof)
        assert not verify_proof(root, leaf_hash(10**6 + i, 1.0), proof)
    if n > 1:
        assert not verify_proof(root, leaves[0], merkle_proof(leaves, 1))


def test_sorted_pairs_make_hashing_order_free() -> None:
    a, b = _leaves(2)
    assert hash_pair(a, b) == hash_pair(b, a)


def test_root_changes_with_any_distance_digit() -> None:
    base = [leaf_hash(1, 1.25), leaf_hash(2, 1.3)]
    assert merkle_root(base) != merkle_root([leaf_hash(1, 1.250000001), leaf_hash(2, 1.3)])


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one leaf"):
        merkle_root([])
    with pytest.raises(IndexError):
        merkle_proof(_leaves(2), 2)
    with pytest.raises(ValueError, match="outside"):
        leaf_hash(-1, 1.0)
    with pytest.raises(ValueError, match="outside"):
        distance_scaled(-0.5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**63 - 1), st.floats(0, 2)), min_size=1, max_size=40), st.data())
def test_property_proofs_verify(pairs: list[tuple[int, float]], data: st.DataObject) -> None:
    leaves = [leaf_hash(n, d) for n, d in pairs]
    i = data.draw(st.integers(0, len(leaves) - 1))
    assert verify_proof(merkle_root(leaves), leaves[i], merkle_proof(leaves, i))
