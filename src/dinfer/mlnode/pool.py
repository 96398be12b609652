"""Engine instances of one loaded model, each with a bounded queue; requests go to the least busy instance.

llama.cpp serves one sequence at a time, so each instance admits ``concurrency`` requests and lets at most
``queue_limit`` wait; past that the ML node answers 503 + Retry-After instead of piling up work it cannot do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from dinfer.errors import QueueFull
from dinfer.mlnode.engines.base import Engine


@dataclass
class EngineSlot:
    """One engine instance with its admission control."""

    engine: Engine
    concurrency: int
    in_flight: int = 0
    waiting: int = 0
    served: int = 0
    _sem: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self._sem = asyncio.Semaphore(self.concurrency)

    @property
    def load(self) -> int:
        return self.in_flight + self.waiting


class Lease:
    """A granted place on one engine; ``release()`` exactly once when the response is done."""

    def __init__(self, slot: EngineSlot) -> None:
        self.slot = slot
        self._released = False

    @property
    def engine(self) -> Engine:
        return self.slot.engine

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.slot.in_flight -= 1
            self.slot.served += 1
            self.slot._sem.release()


class EnginePool:
    """The instances serving one model."""

    def __init__(self, model_id: str, engines: list[Engine], *, concurrency: int, queue_limit: int, retry_after_s: int):
        if not engines:
            raise ValueError("an engine pool needs at least one engine")
        self.model_id = model_id
        self.slots = [EngineSlot(e, concurrency) for e in engines]
        self.queue_limit = queue_limit
        self.retry_after_s = retry_after_s

    async def acquire(self) -> Lease:
        """Wait for a place on the least busy instance; ``QueueFull`` at once when its queue is full."""
        slot = min(self.slots, key=lambda s: s.load)
        if slot.in_flight >= slot.concurrency and slot.waiting >= self.queue_limit:
            raise QueueFull(
                f"all {len(self.slots)} engine(s) for {self.model_id!r} are busy with full queues "
                f"({self.queue_limit} waiting each)",
                retry_after_s=self.retry_after_s,
            )
        slot.waiting += 1
        try:
            await slot._sem.acquire()
        finally:
            slot.waiting -= 1
        slot.in_flight += 1
        return Lease(slot)

    @property
    def queue_depth(self) -> int:
        return sum(s.waiting for s in self.slots)

    @property
    def in_flight(self) -> int:
        return sum(s.in_flight for s in self.slots)

    @property
    def busy(self) -> bool:
        return all(s.in_flight >= s.concurrency for s in self.slots)

    def engines(self) -> list[Engine]:
        return [s.engine for s in self.slots]
