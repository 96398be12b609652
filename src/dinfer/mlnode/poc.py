"""Proof-of-Compute kernel: a random transformer block whose output distance to a target proves work.

Spec (DESIGN §4), one implementation shared by generators and validators:

* **Weights** — one pre-norm transformer block (multi-head self-attention + GELU MLP, no biases) of width
  ``dim``; every matrix is standard normal / sqrt(fan_in) in float32 from a PCG64 generator seeded with
  ``sha256("dinfer-poc-weights" ++ block_hash)``. The **target** is a unit vector from
  ``sha256("dinfer-poc-target" ++ block_hash)``.
* **Input of nonce n** — ``seq_len × dim`` standard normals (float32) from
  ``sha256(block_hash ++ public_key ++ uint64_be(n))``: the host's key is in the seed, so hosts cannot share work.
* **Distance** — the block's output, mean-pooled over the sequence and L2-normalised, has Euclidean distance
  ``d ∈ [0, 2]`` to the target. A nonce is *valid* when ``d < r_target``.
* **Validation** — recompute the distance of each sampled nonce; it passes when
  ``|claimed − recomputed| ≤ DISTANCE_TOLERANCE`` and ``claimed < r_target``. On one machine recomputation is
  bit-identical; across BLAS builds and batch shapes float32 summation order differs by a few ulps per dot
  product (observed ≤ 1e-6 on distances ≈ 1.4), so the tolerance of 1e-4 leaves two orders of margin while still
  catching any tampered distance that matters (faking a valid nonce needs a change of ~1e-2 or more).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dinfer.mlnode.poc_params import MAX_POC_DIM as MAX_POC_DIM  # re-exported: sizes live apart from numpy
from dinfer.mlnode.poc_params import PoCParams
from dinfer.mlnode.poc_params import params_for_model as params_for_model

DISTANCE_TOLERANCE = 1e-4
"""Largest |claimed − recomputed| distance a validator accepts (see the module docstring)."""

F32 = np.float32


def parse_block_hash(value: str) -> bytes:
    """``0x``-prefixed or bare 64-hex-digit block hash → 32 bytes; ``ValueError`` naming the problem."""
    text = value[2:] if value.startswith(("0x", "0X")) else value
    if len(text) != 64:
        raise ValueError(f"block_hash must be 32 bytes (64 hex digits), got {len(text)} digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"block_hash is not hex: {value!r}") from None


def _rng(*parts: bytes) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(int.from_bytes(hashlib.sha256(b"".join(parts)).digest(), "big")))


def _layer_norm(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + F32(1e-5))


def _gelu(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return F32(0.5) * x * (F32(1.0) + np.tanh(F32(0.7978845608) * (x + F32(0.044715) * x * x * x)))


class PoCKernel:
    """The block for one epoch (``block_hash``) and one host (``public_key``)."""

    def __init__(self, block_hash: bytes, public_key: str, params: PoCParams | None = None) -> None:
        if len(block_hash) != 32:
            raise ValueError(f"block_hash must be 32 bytes, got {len(block_hash)}")
        self.block_hash = block_hash
        self.public_key = public_key
        self.params = p = params or PoCParams()
        rng = _rng(b"dinfer-poc-weights", block_hash)
        d, f = p.dim, p.dim * p.ffn_mult

        def mat(rows: int, cols: int) -> npt.NDArray[np.float32]:
            return (rng.standard_normal((rows, cols), dtype=F32) / F32(np.sqrt(rows))).astype(F32)

        self.wq, self.wk, self.wv, self.wo = mat(d, d), mat(d, d), mat(d, d), mat(d, d)
        self.w1, self.w2 = mat(d, f), mat(f, d)
        target = _rng(b"dinfer-poc-target", block_hash).standard_normal(d, dtype=F32)
        self.target = (target / np.linalg.norm(target)).astype(F32)

    def inputs(self, nonces: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """``(len(nonces), seq_len, dim)`` float32 inputs, each from its own nonce-seeded generator."""
        p = self.params
        seeds = [self.block_hash + self.public_key.encode() + int(n).to_bytes(8, "big") for n in np.asarray(nonces)]
        return np.stack([_rng(s).standard_normal((p.seq_len, p.dim), dtype=F32) for s in seeds])

    def forward(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The block on ``(batch, seq, dim)``; returns unit vectors ``(batch, dim)``."""
        p = self.params
        b, s, d = x.shape
        h, dh = p.n_heads, d // p.n_heads
        a = _layer_norm(x)
        q = (a @ self.wq).reshape(b, s, h, dh).transpose(0, 2, 1, 3)
        k = (a @ self.wk).reshape(b, s, h, dh).transpose(0, 2, 1, 3)
        v = (a @ self.wv).reshape(b, s, h, dh).transpose(0, 2, 1, 3)
        scores = (q @ k.transpose(0, 1, 3, 2)) / F32(np.sqrt(dh))
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        attn = (scores / scores.sum(axis=-1, keepdims=True)) @ v
        x = x + attn.transpose(0, 2, 1, 3).reshape(b, s, d) @ self.wo
        x = x + _gelu(_layer_norm(x) @ self.w1) @ self.w2
        y = x.mean(axis=1)
        return (y / np.linalg.norm(y, axis=-1, keepdims=True)).astype(F32)

    def distances(self, nonces: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Distance of each nonce's output to the target (float32, in [0, 2])."""
        arr = np.asarray(nonces, dtype=np.uint64)
        if arr.size == 0:
            return np.zeros(0, dtype=F32)
        y = self.forward(self.inputs(arr))
        return np.linalg.norm(y - self.target, axis=-1).astype(F32)


@dataclass(frozen=True)
class NonceCheck:
    """A validator's verdict on one claimed nonce."""

    nonce: int
    claimed: float
    recomputed: float
    ok: bool


def validate_claims(
    kernel: PoCKernel,
    nonces: list[int],
    distances: list[float],
    r_target: float,
    tolerance: float = DISTANCE_TOLERANCE,
) -> list[NonceCheck]:
    """Recompute ``nonces`` and judge each claimed distance (tolerance and r_target, see the module docstring)."""
    if len(nonces) != len(distances):
        raise ValueError(f"{len(nonces)} nonces but {len(distances)} distances")
    recomputed = kernel.distances(nonces)
    return [
        NonceCheck(n, float(c), float(r), abs(float(c) - float(r)) <= tolerance and float(c) < r_target)
        for n, c, r in zip(nonces, distances, recomputed, strict=True)
    ]
