"""Cached reads of chain state the request path needs: epoch, groups, member statuses, prices, host URLs.

The hot path must not make a dozen RPC calls per request: group membership changes once per epoch, statuses and
balances are read at most every ``ttl`` seconds. The chain stays authoritative — the contract re-checks every
start record — so a slightly stale view costs at worst one rejected record, never money.

Epoch, head, member statuses and balances are served *stale-while-revalidate*: once older than ``ttl`` (and
younger than ``STALE_FACTOR × ttl``) the cached value is answered at once and re-read in the background, so a request
waits for an RPC round trip only when nothing recent is cached (see ``balance`` for why that is safe for money).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
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


STALE_FACTOR = 2.0
"""How old (in TTLs) a stale-while-revalidate value may be and still be answered while it is re-read: 2 s at the
default TTL, inside the 8 blocks (``POC_EDGE_BLOCKS``) in which the contract takes either order at a PoC edge."""

log = logging.getLogger(__name__)


_MISSING = object()
"""Not in the cache, or too old to answer with."""


class _TTLCache:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._data: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any | None:
        hit = self._data.get(key)
        if hit is not None and self._clock() - hit[0] < self.ttl:
            return hit[1]
        return None

    def age(self, key: Any) -> tuple[float, Any] | None:
        """``(seconds since it was stored, value)``, however old; None when never stored."""
        hit = self._data.get(key)
        return None if hit is None else (self._clock() - hit[0], hit[1])

    def put(self, key: Any, value: Any) -> Any:
        self._data[key] = (self._clock(), value)
        return value

    def shift(self, key: Any, value: Any) -> None:
        """Replace a stored value, keeping the time it was stored (its expiry)."""
        if key in self._data:
            self._data[key] = (self._data[key][0], value)

    def drop(self, key: Any) -> None:
        self._data.pop(key, None)


class ChainView:
    """Read-through caches over the Registry, Epochs and Inference contracts."""

    def __init__(self, registry: RegistryClient, epochs: EpochsClient, inference: InferenceClient, *,
                 ttl: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.epochs = epochs
        self.inference = inference
        self._short = _TTLCache(ttl, clock)
        self._long = _TTLCache(30.0, clock)
        self._groups: dict[tuple[int, bytes], Group] = {}
        self._snapshots: dict[tuple[int, str], Model] = {}
        """Epoch model snapshots never change once taken: cached for good."""
        self._windows: dict[int, PoCWindow] = {}
        """PoC windows are fixed when their epoch starts: cached for good."""
        self._lock = asyncio.Lock()
        self._refreshing: dict[Any, asyncio.Task[None]] = {}
        """Background re-reads of stale-while-revalidate keys, one per key."""
        self._generation: dict[Any, int] = {}
        """Per key, bumped when this node moves or drops the cached value (``forget_balance``/``spend_balance``): a
        read that started before must not store its answer."""

    async def _revalidated(self, key: Any, load: Callable[[], Awaitable[Any]]) -> Any:
        """The cached value of ``key``: fresh → as is; stale but recent → as is, re-read in the background;
        missing or too old → read now."""
        value = self._answerable(key, load)
        if value is _MISSING:
            return await self._load_and_keep(key, load)
        return value

    async def _load_and_keep(self, key: Any, load: Callable[[], Awaitable[Any]]) -> Any:
        """Read ``key`` now and cache the answer, unless this node moved the value while the read was on its way."""
        generation = self._generation.get(key, 0)
        value = await load()
        if self._generation.get(key, 0) == generation:
            self._short.put(key, value)
        return value

    def _bump(self, key: Any) -> None:
        self._generation[key] = self._generation.get(key, 0) + 1

    def _answerable(self, key: Any, load: Callable[[], Awaitable[Any]]) -> Any:
        """``_revalidated`` without waiting: the cached value (a stale one starts its background re-read), or
        ``_MISSING`` when it must be read now."""
        hit = self._short.age(key)
        if hit is None:
            return _MISSING
        age, value = hit
        if age < self._short.ttl:
            return value
        if age < STALE_FACTOR * self._short.ttl:
            if key not in self._refreshing:
                self._refreshing[key] = asyncio.get_running_loop().create_task(self._refresh(key, load))
            return value
        return _MISSING

    async def _refresh(self, key: Any, load: Callable[[], Awaitable[Any]]) -> None:
        try:
            await self._load_and_keep(key, load)
        except Exception as exc:  # the next request reads it in its own path once the value is too old
            log.debug("background re-read of %r failed: %s", key, exc)
        finally:
            self._refreshing.pop(key, None)

    async def epoch(self) -> int:
        return int(await self._revalidated("epoch", self.epochs.current_epoch))

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
        # concurrently: after an idle spell both are re-read, and a request should wait for one round trip, not two
        statuses, head = await asyncio.gather(self._statuses(epoch, group.members), self.head())
        window = await self.poc_window(epoch)
        if not window.contains(head + 1, poc_edge):
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
        """The latest block number (stale-while-revalidate over the short TTL)."""

        async def load() -> int:
            return int(await self.epochs.contract.w3.eth.block_number)

        return int(await self._revalidated("head", load))

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
        """A member's status (stale-while-revalidate over the short TTL)."""
        return await self._revalidated(  # type: ignore[no-any-return]
            ("status", epoch, member), self._status_loader(epoch, member)
        )

    async def _statuses(self, epoch: int, members: tuple[str, ...]) -> tuple[MemberStatus, ...]:
        """Every member's status: from the cache without a task per member (the hot path), the missing ones read
        concurrently."""
        statuses = [self._answerable(("status", epoch, m), self._status_loader(epoch, m)) for m in members]
        missing = [i for i, st in enumerate(statuses) if st is _MISSING]
        if missing:
            read = await asyncio.gather(*(self.status(epoch, members[i]) for i in missing))
            for i, st in zip(missing, read, strict=True):
                statuses[i] = st
        return tuple(statuses)

    def _status_loader(self, epoch: int, member: str) -> Callable[[], Awaitable[MemberStatus]]:
        return lambda: self.epochs.status_of(epoch, member)

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

    async def balance(self, client: str, *, fresh: bool = False) -> int:
        """Escrow balance, stale-while-revalidate like statuses; ``fresh`` reads it now.

        The TA subtracts its own reservations until their starts land and moves them into the cached value when
        one lands (``spend_balance``), so its own spending is never counted twice nor missed. What others do (a
        withdrawal, another TA's starts) shows within ``STALE_FACTOR × ttl`` — the contract re-checks every start,
        so a stale read costs at worst one refused start, as a fresh read followed by a withdrawal in the same
        block would. A too-low cached value never refuses a client: the TA reads ``fresh`` before a 402. (At one
        request per second or slower, a TTL-bound read put an RPC round trip, ~4–5 ms, on every request's path.)
        """
        key = ("balance", client)
        if fresh:
            return int(await self._load_and_keep(key, lambda: self.inference.balance_of(client)))
        return int(await self._revalidated(key, lambda: self.inference.balance_of(client)))

    def forget_balance(self, client: str) -> None:
        """Drop ``client``'s cached balance (the escrow moved by an amount this node does not know)."""
        key = ("balance", client)
        self._bump(key)
        self._short.drop(key)

    def spend_balance(self, client: str, wei: int) -> None:
        """A start of ``client``'s landed and reserved ``wei``: the cached balance (if any) goes down by as much,
        keeping its age, so steady traffic reads the balance once per TTL rather than once per landed start.
        A read already on its way (from before the start landed) is not kept."""
        key = ("balance", client)
        self._bump(key)
        hit = self._short.age(key)
        if hit is not None:
            self._short.shift(key, hit[1] - wei)
