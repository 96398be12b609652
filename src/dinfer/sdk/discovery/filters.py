"""The global host filters shared by unified discovery, the HTTP discovery service and its client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dinfer.sdk.hosts import HostRecord

__all__ = ["HostFilter"]


@dataclass(frozen=True)
class HostFilter:
    """Which hosts to keep. ``None`` fields do not filter.

    ``max_price`` compares the host's advertised session price for ``model`` (wei per token; without ``model``, its
    cheapest advertised price). A host that advertises no price passes: it charges the model's governance price.
    """

    model: str | None = None
    max_price: int | None = None
    region: str | None = None
    min_stake: int | None = None

    def __post_init__(self) -> None:
        if self.max_price is not None and self.max_price < 0:
            raise ValueError("max_price must be >= 0 (wei per token)")
        if self.min_stake is not None and self.min_stake < 0:
            raise ValueError("min_stake must be >= 0 (wei)")

    def matches(self, host: HostRecord) -> bool:
        if self.model is not None and not host.serves(self.model):
            return False
        if self.region is not None and host.region != self.region:
            return False
        if self.min_stake is not None and host.stake < self.min_stake:
            return False
        if self.max_price is not None:
            prices = host.metadata.prices
            price = prices.get(self.model) if self.model is not None else min(prices.values(), default=None)
            if price is not None and price > self.max_price:
                return False
        return True

    def apply(self, hosts: list[HostRecord]) -> list[HostRecord]:
        return [h for h in hosts if self.matches(h)]

    def query(self) -> dict[str, Any]:
        """As HTTP query parameters (``GET /v1/hosts``)."""
        params = {"model": self.model, "max_price": self.max_price, "region": self.region,
                  "min_stake": self.min_stake}
        return {k: v for k, v in params.items() if v is not None}
