"""Cached reads of chain state the request path needs: epoch, groups, member statuses, prices, host URLs.

The hot path must not make a dozen RPC calls per request: group membership changes once per epoch, statuses and
balances are read at most every ``ttl`` seconds. The chain stays authoritative — the contract re-checks every
start record — so a slightly stale view costs at worst one rejected record, never money.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from dinfer import selection
from dinfer.chain.contracts.epochs import EpochsClient, Group, MemberStatus, PoCWindow, model_key
from dinfer.chain.contracts.inference import InferenceClient
from dinfer.chain.contracts.registry import Model, RegistryClient
from dinfer.errors import TxReverted


@dataclass(frozen=True)
class GroupView:
    epoch: int
    model: Model
    group: Group
    statuses: tuple[MemberStatus, ...]
    poc_window: PoCWindow | None = None
    """Set when the next block is inside the epoch's PoC window: the PoC order applies (``poc_slot``)."""
    poc_slot: tuple[bool, ...] = ()
    """Per member, ``Epochs.poc_eligible`` (only read inside the PoC window)."""

    @property
    def active(self) -> list[bool]:
        return [s == MemberStatus.ACTIVE for s in self.statuses]

    @property
    def in_poc(self) -> bool:
        return self.poc_window is not None

    @property
    def eligible(self) -> list[bool]:
        """Who may execute now: ACTIVE members, and inside the PoC window only those with a POC_SLOT node."""
        if self.poc_window is None:
            return self.active
        return selection.eligible_flags(self.active, self.poc_slot, True)


class _TTLCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._data: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any | None:
        hit = self._data.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        return None

    def put(self, key: Any, value: Any) -> Any:
        self._data[key] = (time.monotonic(), value)
        return value

    def drop(self, key: Any) -> None:
        self._data.pop(key, None)


class ChainView:
    """Read-through caches over the Registry, Epochs and Inference contracts."""

    def __init__(self, registry: RegistryClient, epochs: EpochsClient, inference: InferenceClient, *,
                 ttl: float = 1.0) -> None:
        self.registry = registry
        self.epochs = epochs
        self.inference = inference
        self._short = _TTLCache(ttl)
        self._long = _TTLCache(30.0)
        self._groups: dict[tuple[int, bytes], Group] = {}
        self._snapshots: dict[tuple[int, str], Model] = {}
        """Epoch model snapshots never change once taken: cached for good."""
        self._windows: dict[int, PoCWindow] = {}
        """PoC windows are fixed when their epoch starts: cached for good."""
        self._lock = asyncio.Lock()

    async def epoch(self) -> int:
        cached = self._short.get("epoch")
        if cached is None:
            cached = self._short.put("epoch", await self.epochs.current_epoch())
        return int(cached)

    async def max_draws(self) -> int:
        cached = self._long.get("max_draws")
        if cached is None:
            cached = self._long.put("max_draws", await self.registry.param("max_draws"))
        return int(cached)

    async def request_window(self) -> int:
        cached = self._long.get("window")
        if cached is None:
            cached = self._long.put("window", await self.registry.param("request_window_seconds"))
        return int(cached)

    async def model(self, model_id: str) -> Model | None:
        """The governance model, or None when ``model_id`` is not one."""
        key = ("model", model_id)
        cached = self._long.get(key)
        if cached is None:
            if not await self.registry.is_valid_governance_model(model_id):
                return None
            cached = self._long.put(key, await self.registry.get_governance_model(model_id))
        return cached  # type: ignore[no-any-return]

    async def epoch_model(self, epoch: int, model_id: str) -> Model | None:
        """The model as frozen for ``epoch`` (price, args, hash); None when the epoch has no snapshot of it."""
        key = (epoch, model_id)
        cached = self._snapshots.get(key)
        if cached is None:
            try:
                cached = await self.epochs.get_epoch_model(epoch, model_id)
            except TxReverted.named("NoSnapshot"):
                return None
            self._snapshots[key] = cached
        return cached

    async def group(self, model_id: str, poc_edge: int = 0) -> GroupView | None:
        """Current epoch group for ``model_id`` with fresh statuses and the epoch's model snapshot (the price the
        Inference contract charges); None when the model has no group this epoch. Inside the epoch's PoC window
        (widened by ``poc_edge`` blocks on both sides) the view carries the POC_SLOT flags (``eligible``)."""
        epoch = await self.epoch()
        model = await self.epoch_model(epoch, model_id)
        if model is None:
            return None
        gkey = (epoch, model_key(model_id))
        group = self._groups.get(gkey)
        if group is None:
            async with self._lock:
                group = self._groups.get(gkey) or await self.epochs.get_group(epoch, gkey[1])
                self._groups[gkey] = group
        if not group.members:
            self._groups.pop(gkey, None)  # groups may still be forming: look again next time
            return None
        statuses = await asyncio.gather(*(self.status(epoch, m) for m in group.members))
        window = await self.poc_window(epoch)
        if not window.contains(await self.head() + 1, poc_edge):
            return GroupView(epoch, model, group, tuple(statuses))
        slots = await self.poc_slots(epoch, gkey[1], group.members)
        return GroupView(epoch, model, group, tuple(statuses), window, slots)

    async def poc_window(self, epoch: int) -> PoCWindow:
        """The blocks of the PoC stages that end ``epoch`` (fixed when the epoch started: cached for good)."""
        cached = self._windows.get(epoch)
        if cached is None:
            cached = await self.epochs.poc_window(epoch)
            if cached.start:
                self._windows[epoch] = cached
        return cached

    async def poc_slots(self, epoch: int, model: bytes, members: tuple[str, ...]) -> tuple[bool, ...]:
        """``Epochs.poc_eligible`` of every member (allocations change only at the epoch switch or by governance)."""
        key = ("poc_slots", epoch, model)
        cached = self._long.get(key)
        if cached is None:
            flags = await asyncio.gather(*(self.epochs.poc_eligible(epoch, model, m) for m in members))
            cached = self._long.put(key, tuple(flags))
        return cached  # type: ignore[no-any-return]

    async def head(self) -> int:
        """The latest block number (cached for the short TTL)."""
        cached = self._short.get("head")
        if cached is None:
            cached = self._short.put("head", int(await self.epochs.contract.w3.eth.block_number))
        return int(cached)

    async def seconds_per_block(self) -> float:
        """Average block interval over the last 32 blocks (≥ 0.1 s; 1 s when the chain is too young to tell)."""
        cached = self._long.get("block_time")
        if cached is None:
            w3 = self.epochs.contract.w3
            latest = await w3.eth.get_block("latest")
            back = min(32, int(latest["number"]))
            interval = 1.0
            if back > 0:
                earlier = await w3.eth.get_block(int(latest["number"]) - back)
                interval = max(0.1, (int(latest["timestamp"]) - int(earlier["timestamp"])) / back)
            cached = self._long.put("block_time", interval)
        return float(cached)

    async def status(self, epoch: int, member: str) -> MemberStatus:
        key = ("status", epoch, member)
        cached = self._short.get(key)
        if cached is None:
            cached = self._short.put(key, await self.epochs.status_of(epoch, member))
        return cached  # type: ignore[no-any-return]

    def forget_status(self, epoch: int, member: str) -> None:
        self._short.drop(("status", epoch, member))

    async def host_url(self, host: str) -> str:
        key = ("url", host)
        cached = self._long.get(key)
        if cached is None:
            cached = self._long.put(key, (await self.registry.get_host(host)).url)
        return str(cached)

    async def is_host(self, address: str) -> bool:
        key = ("is_host", address)
        cached = self._long.get(key)
        if cached is None:
            cached = self._long.put(key, await self.registry.is_host(address))
        return bool(cached)

    async def balance(self, client: str) -> int:
        """Escrow balance (not cached: it is the spend check)."""
        return await self.inference.balance_of(client)
