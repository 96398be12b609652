"""Genesis file: the protocol parameters and governance models a fresh network is deployed with.

Field limits mirror the contract's storage types (``String[64]`` etc.), so a bad genesis fails here with the
field's name instead of as an opaque revert halfway through a deployment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dinfer.config import ProtocolParams, format_validation_error, read_toml
from dinfer.errors import ConfigError

_PACKAGED = Path(__file__).resolve().parent / "_genesis"
_SOURCE = Path(__file__).resolve().parents[2] / "genesis"


class GenesisModel(BaseModel):
    """One governance model (Registry ``Model``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    """Name clients put in ``model`` (OpenAI field)."""
    hf_repo: str = Field(min_length=1, max_length=128)
    hf_commit: str = Field(min_length=1, max_length=64)
    """Content id of the weights: a Hugging Face commit, or the sha256 of a file shipped by a package."""
    model_args: list[str] = Field(default_factory=list, max_length=16)
    """Engine arguments every host must use, as flag/value pairs (``["--n_ctx", "2048"]``), merged with local ones."""
    vram_mib: int = Field(ge=0, le=10_000_000)
    throughput_per_nonce: int = Field(ge=1, le=10**12)
    units_of_compute_per_token: int = Field(ge=1, le=10**12)
    price_per_token: int = Field(ge=0, le=10**24)
    """Wei per token (prompt and completion alike)."""

    @field_validator("model_args")
    @classmethod
    def _arg_pairs(cls, args: list[str]) -> list[str]:
        for arg in args:
            if not 0 < len(arg) <= 64:
                raise ValueError(f"each model arg must be 1..64 characters, got {arg!r}")
        if len(args) % 2 or any(not flag.startswith("--") for flag in args[::2]):
            raise ValueError(f"model_args must be '--flag', 'value' pairs, got {args!r}")
        return args

    def to_chain(self) -> tuple[Any, ...]:
        """The Registry ``Model`` struct as a tuple in ABI order."""
        return (
            self.id, self.hf_repo, self.hf_commit, list(self.model_args), self.vram_mib,
            self.throughput_per_nonce, self.units_of_compute_per_token, self.price_per_token,
        )


class Genesis(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    mlnode_version: str = Field("v0.1.0", min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")
    params: ProtocolParams = ProtocolParams()
    models: list[GenesisModel] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _unique_ids(self) -> Genesis:
        ids = [m.id for m in self.models]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate model ids: {', '.join(dupes)}")
        return self

    def model(self, model_id: str) -> GenesisModel:
        for m in self.models:
            if m.id == model_id:
                return m
        raise ConfigError(f"model {model_id!r} is not in the genesis file")


def default_genesis_path() -> Path:
    for root in (_SOURCE, _PACKAGED):
        if (root / "devnet.toml").is_file():
            return root / "devnet.toml"
    raise ConfigError("packaged genesis/devnet.toml not found")


def load_genesis(path: Path | str | None = None) -> Genesis:
    """Read and validate a genesis TOML; ``ConfigError`` naming each bad field (``models.0.vram_mib: ...``)."""
    path = Path(path) if path else default_genesis_path()
    data = read_toml(path)
    try:
        return Genesis(**data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {format_validation_error(exc)}") from None
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
