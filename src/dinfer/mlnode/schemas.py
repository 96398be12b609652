"""Wire types of the ML node API (pydantic). Field names follow Gonka's mlnode where one exists.

The OpenAI request shapes are shared with the host node (``dinfer.openai_types``).
"""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HEX32 = r"^(0x)?[0-9a-fA-F]{64}$"


class MLNodeState(enum.StrEnum):
    """What the ML node is doing (``GET /api/v1/state``)."""

    UNKNOWN = "UNKNOWN"  # started, no command received yet
    INFERENCE = "INFERENCE"  # engines loaded and serving
    POC = "POC"  # Proof-of-Compute running; inference refused with 503
    STOPPED = "STOPPED"  # nothing loaded, nothing running
    FAILED = "FAILED"  # an engine failed to start or crashed; inference/up recovers


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InferenceUpRequest(_Strict):
    """``POST /api/v1/inference/up``: load a governance model."""

    model: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:/-]+$")
    """Model id clients will name; also how the GGUF is found when ``model_path`` is absent."""
    model_path: str | None = Field(None, max_length=4096)
    """llama.cpp: GGUF path. vLLM: local path or Hugging Face repo (the governance model's ``hf_repo``)."""
    revision: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    """vLLM: ``hf_commit`` to pin."""
    args: list[str] = Field(default_factory=list, max_length=256, alias="additional_args")
    """The governance model's ``model_args`` (Gonka calls them ``additional_args``)."""
    instances: int | None = Field(None, ge=1, le=64)
    """Engine processes to start; ``engine_instances`` from the settings when absent."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())


class PoCParamsModel(_Strict):
    """Size of the PoC transformer block (from the model's ``throughput_per_nonce``)."""

    dim: int = Field(64, ge=8, le=2048)
    seq_len: int = Field(8, ge=1, le=256)
    n_heads: int = Field(4, ge=1, le=64)
    ffn_mult: int = Field(4, ge=1, le=8)

    @model_validator(mode="after")
    def _heads_divide(self) -> PoCParamsModel:
        if self.dim % self.n_heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of n_heads ({self.n_heads})")
        return self


class _PoCCommon(_Strict):
    block_hash: str = Field(pattern=HEX32)
    """Epoch block hash (32 bytes hex) that seeds the weights and the target."""
    public_key: str = Field(min_length=1, max_length=256)
    """The host's identity; seeds the nonce inputs so work cannot be shared between hosts."""
    node_id: str | None = Field(None, min_length=1, max_length=64)
    r_target: float = Field(gt=0, le=4)
    """Distance threshold: nonces with distance < r_target are valid."""
    params: PoCParamsModel = PoCParamsModel()


class PowInitGenerateRequest(_PoCCommon):
    """``POST /api/v1/pow/init/generate``."""

    block_height: int = Field(ge=0)
    batch_size: int = Field(256, ge=1)
    url: str | None = Field(None, max_length=2048)
    """Callback base URL of the host node; batches go to ``{url}/generated``."""
    start_nonce: int = Field(0, ge=0, lt=2**63)
    max_nonces: int | None = Field(None, ge=1, le=10**12)
    """Stop after this many nonces (unbounded until ``pow/stop`` when absent)."""

    @field_validator("url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        return url


class PowValidateRequest(_PoCCommon):
    """``POST /api/v1/pow/init/validate``: recompute a sample of someone's claimed (nonce, distance) pairs."""

    block_height: int | None = Field(None, ge=0)
    """Informational (the block hash seeds the work); accepted for Gonka compatibility."""

    nonces: list[int] = Field(min_length=1, max_length=100_000)
    distances: list[float] = Field(min_length=1, max_length=100_000)
    merkle_root: str | None = Field(None, pattern=HEX32)
    proofs: list[list[str]] | None = None
    """Merkle proof (hex sibling hashes) per nonce; checked against ``merkle_root`` when both are given."""

    @model_validator(mode="after")
    def _lengths(self) -> PowValidateRequest:
        if len(self.nonces) != len(self.distances):
            raise ValueError(f"nonces ({len(self.nonces)}) and distances ({len(self.distances)}) differ in length")
        if self.proofs is not None and len(self.proofs) != len(self.nonces):
            raise ValueError(f"proofs ({len(self.proofs)}) and nonces ({len(self.nonces)}) differ in length")
        if any(n < 0 or n >= 2**63 for n in self.nonces):
            raise ValueError("nonces must be in [0, 2**63)")
        return self
