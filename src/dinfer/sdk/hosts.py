"""What the SDK knows about a host: ``HostRecord`` (shared by discovery and host selection) and the schema of the
JSON metadata hosts publish in the Registry (``register_host`` / ``update_host``) and in their announcements.

Metadata example (every field optional)::

    {"hardware": "cpu", "region": "eu-west", "prices": {"HuggingFaceTB/SmolLM2-135M-Instruct": 1000000000},
     "models": ["HuggingFaceTB/SmolLM2-135M-Instruct"], "max_concurrent": 4, "version": "0.1.0"}

``prices`` are the host's session prices in wei per token (it refuses sessions below the model's governance price
either way); ``models`` is what the host says it serves (discovery sources that read the chain use the ML nodes
declared there instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dinfer.crypto import checksum

__all__ = ["HostMetadata", "HostRecord", "MetadataError", "parse_metadata"]


class MetadataError(ValueError):
    """A host's metadata is not valid JSON or does not follow the schema (the host is skipped)."""


class HostMetadata(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    hardware: str = Field("", max_length=128)
    region: str = Field("", max_length=64)
    prices: dict[str, int] = Field(default_factory=dict)
    """Session price per model, wei per token."""
    models: list[str] = Field(default_factory=list, max_length=64)
    max_concurrent: int = Field(0, ge=0, le=100_000)
    version: str = Field("", max_length=32)


def parse_metadata(raw: str | bytes | dict[str, Any]) -> HostMetadata:
    """Validate a host's metadata; ``MetadataError`` naming what is wrong otherwise."""
    import orjson

    try:
        data = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError as exc:
        raise MetadataError(f"metadata is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MetadataError(f"metadata must be a JSON object, got {type(data).__name__}")
    try:
        meta = HostMetadata.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "metadata"
        raise MetadataError(f"metadata field {where}: {first['msg']}") from None
    if any(p < 0 for p in meta.prices.values()):
        raise MetadataError("metadata prices must be non-negative wei per token")
    return meta


@dataclass(frozen=True)
class HostRecord:
    """One host as discovery sees it. Records from several sources merge by ``address``."""

    address: str
    url: str
    models: tuple[str, ...] = ()
    metadata: HostMetadata = field(default_factory=HostMetadata)
    stake: int = 0
    """Collateral in wei (from the Registry; 0 when the source does not know it)."""
    sources: tuple[str, ...] = ()
    """Discovery sources that reported this host (``registry``, ``mdns``, ``dht``, ``http``)."""
    seen_at: float = 0.0
    """Unix time of the latest report."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", checksum(self.address))

    @property
    def region(self) -> str:
        return self.metadata.region

    def price(self, model: str) -> int | None:
        """The host's advertised session price for ``model`` (wei per token), or None when it advertises none."""
        return self.metadata.prices.get(model)

    def serves(self, model: str) -> bool:
        return model in self.models

    def merged(self, other: HostRecord) -> HostRecord:
        """This record completed by ``other`` (same address): the newer URL and metadata win, models and sources
        are united, the larger known stake is kept."""
        if other.address != self.address:
            raise ValueError(f"cannot merge records of {self.address} and {other.address}")
        newer, older = (other, self) if other.seen_at >= self.seen_at else (self, other)
        return replace(
            newer,
            url=newer.url or older.url,
            models=tuple(dict.fromkeys((*newer.models, *older.models))),
            metadata=newer.metadata if newer.metadata != HostMetadata() else older.metadata,
            stake=max(self.stake, other.stake),
            sources=tuple(dict.fromkeys((*self.sources, *other.sources))),
            seen_at=newer.seen_at,
        )
