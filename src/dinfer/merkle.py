"""Keccak-256 Merkle tree over PoC results, verifiable by a Vyper/Solidity contract.

Leaf format (one per valid nonce)::

    distance_scaled = round(distance * 1e9)                  # unsigned integer, distance in [0, 4]
    leaf = keccak256(abi.encode(uint256 nonce, uint256 distance_scaled))   # 64 bytes in, big-endian words

Inner nodes hash the *sorted* pair (OpenZeppelin ``MerkleProof`` convention)::

    parent = keccak256(min(a, b) ++ max(a, b))

so a proof is just the list of sibling hashes from the leaf up, with no left/right flags, and the on-chain check
is the usual loop ``h = a < b ? keccak(a ++ b) : keccak(b ++ a)``. Leaves are taken in the order given (the
order the nonces were computed). On a level with an odd count the last node moves up unchanged (it has no
sibling, so its proof skips that level). A single leaf is its own root.

Second preimages: an inner node is also keccak of 64 bytes, so a verifier must bound the leaf fields — nonce
< 2**63 and distance_scaled <= 4e9 — which a 32-byte hash read as two words fails with overwhelming probability.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_utils import keccak

DISTANCE_SCALE = 10**9
"""Distances are committed as ``round(distance * DISTANCE_SCALE)``."""
MAX_NONCE = 2**63
MAX_DISTANCE_SCALED = 4 * DISTANCE_SCALE


def distance_scaled(distance: float) -> int:
    """The unsigned integer a distance is committed as; ``ValueError`` outside [0, 4]."""
    scaled = round(float(distance) * DISTANCE_SCALE)
    if not 0 <= scaled <= MAX_DISTANCE_SCALED:
        raise ValueError(f"distance {distance!r} outside [0, 4]")
    return scaled


def leaf_hash(nonce: int, distance: float) -> bytes:
    """``keccak256(abi.encode(uint256 nonce, uint256 round(distance * 1e9)))``."""
    if not 0 <= nonce < MAX_NONCE:
        raise ValueError(f"nonce {nonce} outside [0, 2**63)")
    return keccak(nonce.to_bytes(32, "big") + distance_scaled(distance).to_bytes(32, "big"))


def hash_pair(a: bytes, b: bytes) -> bytes:
    """Parent of two nodes, order-independent (sorted pair)."""
    return keccak(a + b) if a < b else keccak(b + a)


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    out = [hash_pair(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        out.append(level[-1])
    return out


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root of the tree over ``leaves`` (32-byte hashes); ``ValueError`` when empty."""
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    level = list(leaves)
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes from ``leaves[index]`` up to the root."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} outside 0..{len(leaves) - 1}")
    proof: list[bytes] = []
    level, i = list(leaves), index
    while len(level) > 1:
        sibling = i ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        level, i = _next_level(level), i // 2
    return proof


def verify_proof(root: bytes, leaf: bytes, proof: Sequence[bytes]) -> bool:
    """True when ``proof`` links ``leaf`` to ``root`` (same loop as OpenZeppelin ``MerkleProof.verify``)."""
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node == root
