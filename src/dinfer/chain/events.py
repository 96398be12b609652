"""Event subscription by polling logs from a persisted cursor.

The cursor is ``(block, log_index)`` of the last event handled, stored in SQLite after every handled event, so a
restarted listener continues exactly where it stopped: nothing lost, nothing handled twice. (A crash *inside* a
handler replays that one event on restart; handlers that write state should be idempotent by event id —
``ChainEvent.uid`` — which every dinfer handler is.)

Polling ``eth_getLogs`` instead of filters works on every JSON-RPC node, survives RPC reconnects (the pool swaps
connections underneath), and needs no server-side state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
from eth_utils import event_abi_to_log_topic
from web3 import AsyncWeb3
from web3.contract import AsyncContract

from dinfer.retry import sleep_or_stop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChainEvent:
    """A decoded event with its position on chain."""

    name: str
    args: dict[str, Any]
    address: str
    block_number: int
    log_index: int
    tx_hash: str

    @property
    def uid(self) -> str:
        """Unique id of this event occurrence (``tx_hash:log_index``)."""
        return f"{self.tx_hash}:{self.log_index}"


class SqliteCursorStore:
    """Listener cursors in a small SQLite table: its own file, or a connection shared with the node's store
    (``on_connection``) so one file never has two writers. Autocommit; reads are fetched whole."""

    _TABLE = ("CREATE TABLE IF NOT EXISTS event_cursors (name TEXT PRIMARY KEY, block INTEGER NOT NULL,"
              " log_index INTEGER NOT NULL)")

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._db: aiosqlite.Connection | None = None
        self._owned = True
        self._ready = False

    @classmethod
    def on_connection(cls, db: aiosqlite.Connection) -> SqliteCursorStore:
        store = cls(":shared:")
        store._db, store._owned = db, False
        return store

    async def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA busy_timeout=5000")
        if not self._ready:
            await self._db.execute(self._TABLE)
            self._ready = True
        return self._db

    async def load(self, name: str) -> tuple[int, int] | None:
        db = await self._conn()
        rows = list(await db.execute_fetchall("SELECT block, log_index FROM event_cursors WHERE name = ?", (name,)))
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    async def save(self, name: str, block: int, log_index: int) -> None:
        db = await self._conn()
        await db.execute(
            "INSERT INTO event_cursors (name, block, log_index) VALUES (?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET block = excluded.block, log_index = excluded.log_index",
            (name, block, log_index),
        )

    async def close(self) -> None:
        if self._db is not None and self._owned:
            await self._db.close()
        self._db = None


END_OF_BLOCK = 2**31 - 1
"""log_index recorded when a whole block range was scanned (every event of that block is behind the cursor)."""

Handler = Callable[[ChainEvent], Awaitable[None]]


class EventPoller:
    """Polls the logs of one or more contracts and hands decoded events to ``handler`` in chain order.

    Example:
        >>> poller = EventPoller(w3, [registry], store, "registry", handler)   # doctest: +SKIP
        >>> await poller.poll_once()      # or: task = asyncio.create_task(poller.run())
    """

    def __init__(
        self,
        w3: AsyncWeb3,
        contracts: list[AsyncContract],
        store: SqliteCursorStore,
        name: str,
        handler: Handler,
        *,
        start_block: int = 0,
        confirmations: int = 0,
        max_range: int = 2_000,
        poll_interval: float = 0.5,
    ) -> None:
        self.w3 = w3
        self.store = store
        self.name = name
        self.handler = handler
        self.start_block = start_block
        self.confirmations = confirmations
        self.max_range = max_range
        self.poll_interval = poll_interval
        self._addresses = [c.address for c in contracts]
        self._decoders: dict[tuple[str, bytes], tuple[str, Any]] = {}
        for contract in contracts:
            for abi in contract.abi:
                if abi.get("type") == "event":
                    topic = event_abi_to_log_topic(abi)  # type: ignore[arg-type]
                    event = contract.events[abi["name"]]()
                    self._decoders[(contract.address.lower(), topic)] = (abi["name"], event)
        self.handled = 0

    async def cursor(self) -> tuple[int, int]:
        saved = await self.store.load(self.name)
        return saved if saved is not None else (self.start_block - 1, END_OF_BLOCK)

    async def poll_once(self) -> int:
        """Handle every new event up to the confirmed head; returns how many were handled."""
        head = await self.w3.eth.block_number - self.confirmations
        block, index = await self.cursor()
        count = 0
        from_block = block if index != END_OF_BLOCK else block + 1
        while from_block <= head:
            to_block = min(head, from_block + self.max_range - 1)
            logs = await self.w3.eth.get_logs(
                {"address": self._addresses, "fromBlock": from_block, "toBlock": to_block}  # type: ignore[typeddict-item]
            )
            for raw in sorted(logs, key=lambda lg: (lg["blockNumber"], lg["logIndex"])):
                position = (int(raw["blockNumber"]), int(raw["logIndex"]))
                if position <= (block, index):
                    continue  # handled before a restart
                event = self._decode(raw)
                if event is not None:
                    await self.handler(event)
                    count += 1
                await self.store.save(self.name, *position)
                block, index = position
            await self.store.save(self.name, to_block, END_OF_BLOCK)
            block, index = to_block, END_OF_BLOCK
            from_block = to_block + 1
        self.handled += count
        return count

    def _decode(self, raw: Any) -> ChainEvent | None:
        if not raw["topics"]:
            return None
        decoder = self._decoders.get((str(raw["address"]).lower(), bytes(raw["topics"][0])))
        if decoder is None:
            return None
        name, event = decoder
        decoded = event.process_log(raw)
        return ChainEvent(
            name=name,
            args=dict(decoded["args"]),
            address=str(raw["address"]),
            block_number=int(raw["blockNumber"]),
            log_index=int(raw["logIndex"]),
            tx_hash="0x" + bytes(raw["transactionHash"]).hex(),
        )

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll until ``stop`` is set (or the task is cancelled); RPC errors are logged and retried."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception as exc:  # keep listening: the RPC pool heals, the cursor did not move
                log.warning("event poller %s: %s", self.name, exc)
            await sleep_or_stop(stop, self.poll_interval)
