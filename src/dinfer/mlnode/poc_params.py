"""Proof-of-Compute kernel sizes (``PoCParams``, ``params_for_model``), re-exported by ``dinfer.mlnode.poc``.

Apart from the kernel so that the host node, which only sizes PoC work for its ML nodes, does not import numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PoCParams:
    """Kernel size; chosen per model from its ``throughput_per_nonce``."""

    dim: int = 64
    seq_len: int = 8
    n_heads: int = 4
    ffn_mult: int = 4

    def __post_init__(self) -> None:
        if self.dim < 1 or self.seq_len < 1 or self.n_heads < 1 or self.ffn_mult < 1:
            raise ValueError(f"PoC params must be positive: {self}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of n_heads ({self.n_heads})")


MAX_POC_DIM = 2048
"""Widest kernel ``params_for_model`` hands out (the ML node API's ``params.dim`` bound)."""


def params_for_model(throughput_per_nonce: int) -> PoCParams:
    """Kernel size of a model's PoC, from its governance ``throughput_per_nonce`` (generators and validators agree).

    Formula: ``dim = 16 · isqrt(throughput_per_nonce // 25)``, clamped to ``[16, 2048]``; ``seq_len = 8``,
    ``n_heads = 4``, ``ffn_mult = 4`` for every model. The matrix work per nonce grows as ``dim²`` ≈
    ``10 · throughput_per_nonce``, so a nonce of a heavier model costs proportionally more compute — the same ratio
    the chain pays it (weight = nonces × throughput_per_nonce). The genesis models get ``dim`` 32 (100) and 96
    (1000): a few thousand nonces/s on two CPU cores, so a 10-block PoC on the devnet yields thousands of nonces.
    """
    if throughput_per_nonce < 1:
        raise ValueError(f"throughput_per_nonce must be >= 1, got {throughput_per_nonce}")
    dim = min(MAX_POC_DIM, 16 * max(1, math.isqrt(throughput_per_nonce // 25)))
    return PoCParams(dim=dim, seq_len=8, n_heads=4, ffn_mult=4)
