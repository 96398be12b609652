"""Transaction submission: one nonce manager per account, async receipts, fee bumps, and batching.

Guarantees:

* **No nonce gaps.** A nonce is taken only once a transaction is signed and accepted by the node (under one lock
  per account). A call that would revert is caught by gas estimation *before* a nonce is used. A transaction that
  is dropped even after fee bumps gets its nonce filled by a 0-value self-transfer, so later ones still mine.
* **A revert does not block the rest.** A mined-but-reverted transaction consumes its nonce like any other and
  surfaces as ``TxReverted`` to its own caller only.
* **Receipts asynchronously.** ``send`` returns as soon as the node accepted the transaction; ``PendingTx.wait``
  resolves on the receipt. One watcher per sender polls receipts per new block for every pending transaction.
* **Dropped transactions come back.** A node may silently drop pool transactions (anvil does when a burst exceeds
  the block gas limit — measured here). Pending transactions older than ``drop_check_after`` that the node no longer
  knows are re-sent unchanged; the lowest overdue one gets a fee bump after ``receipt_timeout``.
* **Back-pressure.** At most ``max_in_flight`` transactions per account wait for receipts; ``send`` waits for room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from eth_account import Account
from eth_utils import keccak
from web3 import AsyncWeb3
from web3.exceptions import TransactionNotFound, Web3RPCError

from dinfer.chain.reverts import as_tx_reverted, raise_chain_error
from dinfer.crypto import Keypair
from dinfer.errors import ChainError, TxDropped, TxReverted

log = logging.getLogger(__name__)

PRIORITY_FEE_WEI = 1_000_000_000  # 1 gwei tip


@dataclass
class PendingTx:
    """A transaction the node accepted; ``await wait()`` for its receipt."""

    tx_hash: str
    nonce: int
    params: dict[str, Any]
    sender: TxSender = field(repr=False)
    future: asyncio.Future[dict[str, Any]] = field(repr=False)
    sent_at: float = field(default_factory=time.monotonic)
    bumps: int = 0

    async def wait(self) -> dict[str, Any]:
        """The receipt; ``TxReverted`` if it reverted on chain, ``TxDropped`` if it never got mined."""
        return await asyncio.shield(self.future)


class TxSender:
    """Signs and submits transactions for one account.

    Example:
        >>> sender = TxSender(w3, keypair)                         # doctest: +SKIP
        >>> receipt = await sender.transact(registry.functions.register_host(url, "{}"), value=10**18)
    """

    def __init__(
        self,
        w3: AsyncWeb3,
        account: Keypair,
        *,
        receipt_timeout: float = 60.0,
        fee_bump_percent: int = 25,
        max_bumps: int = 3,
        poll_interval: float = 0.1,
        drop_check_after: float = 3.0,
        max_in_flight: int = 256,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.address = account.address
        self._receipt_timeout = receipt_timeout
        self._fee_bump_percent = max(10, fee_bump_percent)
        self._max_bumps = max_bumps
        self._poll_interval = poll_interval
        self._drop_check_after = drop_check_after
        self._room = asyncio.Semaphore(max_in_flight)
        self._lock = asyncio.Lock()
        self._next_nonce: int | None = None
        self._pending: dict[int, PendingTx] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._chain_id: int | None = None
        self._base_fee: tuple[float, int] | None = None  # (fetched at, wei)

    # ------------------------------------------------------------ public API

    async def transact(self, fn: Any, *, value: int = 0, gas: int | None = None) -> dict[str, Any]:
        """Send a contract call and wait for its receipt."""
        pending = await self.send(fn, value=value, gas=gas)
        return await pending.wait()

    async def send(self, fn: Any, *, value: int = 0, gas: int | None = None) -> PendingTx:
        """Estimate, sign with the next nonce, submit; returns once the node accepted the transaction.

        ``fn`` is a web3 contract function call (``contract.functions.f(args)``) or a plain tx dict (``to``, ``data``).
        Raises ``TxReverted`` (without using a nonce) when estimation shows the call would revert.
        """
        params = await self._build(fn, value, gas)
        await self._room.acquire()
        try:
            return await self._send_built(params)
        except BaseException:
            self._room.release()
            raise

    async def _send_built(self, params: dict[str, Any]) -> PendingTx:
        async with self._lock:
            if self._next_nonce is None:
                self._next_nonce = await self.w3.eth.get_transaction_count(self.address, "pending")
            nonce = self._next_nonce
            params = {**params, "nonce": nonce}
            tx_hash = await self._submit(params)
            self._next_nonce = nonce + 1
            loop = asyncio.get_running_loop()
            pending = PendingTx(tx_hash=tx_hash, nonce=nonce, params=params, sender=self, future=loop.create_future())
            self._pending[nonce] = pending
            self._ensure_watcher()
        return pending

    @property
    def in_flight(self) -> int:
        """Transactions sent and not yet mined (tx queue depth for metrics)."""
        return len(self._pending)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    # ------------------------------------------------------------ building and signing

    async def _fees(self) -> tuple[int, int]:
        now = time.monotonic()
        if self._base_fee is None or now - self._base_fee[0] > 1.0:
            block = await self.w3.eth.get_block("latest")
            self._base_fee = (now, int(block.get("baseFeePerGas", 1_000_000_000)))
        base = self._base_fee[1]
        return 2 * base + PRIORITY_FEE_WEI, PRIORITY_FEE_WEI

    async def _build(self, fn: Any, value: int, gas: int | None) -> dict[str, Any]:
        if self._chain_id is None:
            self._chain_id = await self.w3.eth.chain_id
        max_fee, tip = await self._fees()
        base: dict[str, Any] = {
            "from": self.address, "value": value, "chainId": self._chain_id,
            "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip,
        }
        if gas is not None:
            base["gas"] = gas
        try:
            if isinstance(fn, dict):
                params = {**base, **fn}
                if "gas" not in params:
                    params["gas"] = await self.w3.eth.estimate_gas(params)  # type: ignore[arg-type]
            else:
                params = dict(await fn.build_transaction(base))
        except ChainError:
            raise
        except Exception as exc:
            raise_chain_error(exc, "could not build transaction")
        params.pop("from", None)
        if gas is None:
            params["gas"] = int(params["gas"] * 1.2) + 10_000  # estimation is exact for the current state only
        return params

    def _sign(self, params: dict[str, Any]) -> tuple[bytes, str]:
        signed = Account.sign_transaction(params, self.account.private_key)
        raw = bytes(signed.raw_transaction)
        return raw, "0x" + keccak(raw).hex()

    async def _submit(self, params: dict[str, Any]) -> str:
        raw, tx_hash = self._sign(params)
        try:
            await self.w3.eth.send_raw_transaction(raw)
        except Web3RPCError as exc:
            text = str(exc).lower()
            if "already known" in text or "known transaction" in text:
                return tx_hash  # a retried send that had reached the node the first time
            if "nonce too low" in text:
                # Either an earlier attempt of *this* tx landed (retry after a lost answer), or our counter is stale.
                with contextlib.suppress(TransactionNotFound):
                    await self.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
                    return tx_hash
                self._next_nonce = None
            raise ChainError(f"node refused transaction: {exc}") from exc
        return tx_hash

    # ------------------------------------------------------------ receipts, bumps, fillers

    def _ensure_watcher(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name=f"tx-watch-{self.address}")

    async def _watch(self) -> None:
        last_block = -1
        while self._pending:
            try:
                block = await self.w3.eth.block_number
                if block != last_block:
                    last_block = block
                    await self._collect_receipts()
                    await self._resend_dropped()
                await self._bump_stale()
            except ChainError as exc:  # RPC pool down: keep waiting, the pool heals itself
                log.warning("receipt watcher: %s", exc)
            await asyncio.sleep(self._poll_interval)

    def _resolve(self, nonce: int) -> None:
        """Forget a settled nonce; the next lowest one's overdue clock starts now (it was blocked behind)."""
        was_lowest = bool(self._pending) and nonce == min(self._pending)
        if self._pending.pop(nonce, None) is not None:
            self._room.release()
        if was_lowest and self._pending:
            nxt = self._pending[min(self._pending)]
            nxt.sent_at = max(nxt.sent_at, time.monotonic())

    async def _collect_receipts(self) -> None:
        pending = list(self._pending.values())

        async def fetch(p: PendingTx) -> None:
            try:
                receipt = await self.w3.eth.get_transaction_receipt(p.tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                return
            self._resolve(p.nonce)
            receipt = dict(receipt)
            if receipt.get("status") == 1:
                p.future.set_result(receipt)
            else:
                p.future.set_exception(await self._revert_reason(p, receipt))

        await asyncio.gather(*(fetch(p) for p in pending))

    async def _revert_reason(self, p: PendingTx, receipt: dict[str, Any]) -> TxReverted:
        """Replay the reverted call at its block to read the reason string."""
        call = {k: p.params[k] for k in ("to", "data", "value") if k in p.params}
        call["from"] = self.address
        try:
            await self.w3.eth.call(call, block_identifier=receipt["blockNumber"])  # type: ignore[arg-type]
        except Exception as exc:
            reverted = as_tx_reverted(exc, tx_hash=p.tx_hash)
            if reverted is not None:
                return reverted
        return TxReverted("Reverted", tx_hash=p.tx_hash)

    async def _resend_dropped(self) -> None:
        """Re-send, unchanged, pending transactions the node has forgotten (checked once they are a bit old)."""
        now = time.monotonic()
        old = [p for p in self._pending.values() if now - p.sent_at >= self._drop_check_after][:128]

        async def known(p: PendingTx) -> bool:
            try:
                await self.w3.eth.get_transaction(p.tx_hash)  # type: ignore[arg-type]
                return True
            except TransactionNotFound:
                return False

        found = await asyncio.gather(*(known(p) for p in old))
        for p, is_known in zip(old, found, strict=True):
            if is_known or p.nonce not in self._pending:
                continue
            async with self._lock:
                try:
                    await self._submit(p.params)
                    log.info("re-sent dropped tx nonce %d (%s)", p.nonce, p.tx_hash)
                except ChainError as exc:
                    log.warning("re-send of dropped nonce %d refused: %s", p.nonce, exc)
            p.sent_at = max(p.sent_at, now - self._drop_check_after / 2)

    async def _bump_stale(self) -> None:
        """Re-send the lowest pending nonce when it is overdue; higher nonces only wait behind it."""
        if not self._pending:
            return
        now = time.monotonic()
        p = self._pending[min(self._pending)]
        if now - p.sent_at < self._receipt_timeout:
            return
        if p.bumps >= self._max_bumps:
            await self._fill_nonce(p)
            return
        factor = 100 + self._fee_bump_percent
        params = {
            **p.params,
            "maxFeePerGas": p.params["maxFeePerGas"] * factor // 100,
            "maxPriorityFeePerGas": p.params["maxPriorityFeePerGas"] * factor // 100,
        }
        async with self._lock:
            try:
                p.tx_hash = await self._submit(params)
            except ChainError as exc:
                log.warning("fee bump of nonce %d refused: %s", p.nonce, exc)
        p.params, p.sent_at, p.bumps = params, now, p.bumps + 1
        log.warning("tx nonce %d not mined in %.1f s; re-sent with +%d%% fees", p.nonce, self._receipt_timeout,
                    self._fee_bump_percent)

    async def _fill_nonce(self, p: PendingTx) -> None:
        """Give up on ``p`` and occupy its nonce with a 0-value self-transfer so later nonces still mine."""
        factor = 100 + self._fee_bump_percent
        filler = {
            "to": self.address, "value": 0, "data": b"", "gas": 21_000, "nonce": p.nonce,
            "chainId": p.params["chainId"],
            "maxFeePerGas": p.params["maxFeePerGas"] * factor // 100,
            "maxPriorityFeePerGas": p.params["maxPriorityFeePerGas"] * factor // 100,
        }
        async with self._lock:
            try:
                filler_hash = await self._submit(filler)
            except ChainError as exc:
                log.error("could not fill dropped nonce %d: %s", p.nonce, exc)
                filler_hash = None
        self._resolve(p.nonce)
        if filler_hash:
            log.error("tx %s dropped after %d fee bumps; nonce %d filled by %s",
                      p.tx_hash, p.bumps, p.nonce, filler_hash)
        p.future.set_exception(TxDropped(f"transaction {p.tx_hash} (nonce {p.nonce}) was not mined; nonce filled"))


R = TypeVar("R")


class BatchQueue(Generic[R]):
    """Collects records and flushes them as one transaction on size or time.

    ``flush`` receives the list of records and returns whatever the callers should get (usually the receipt).
    ``put`` returns a future resolved with that result (or its exception) once the record's batch is flushed.
    """

    def __init__(self, flush: Callable[[list[R]], Awaitable[Any]], *, max_size: int = 50, max_delay: float = 1.0):
        self._flush_fn = flush
        self._max_size = max_size
        self._max_delay = max_delay
        self._items: list[tuple[R, asyncio.Future[Any]]] = []
        self._timer: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self.batches_sent = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, record: R) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._items.append((record, fut))
        if len(self._items) >= self._max_size:
            self._start_flush()
        elif self._timer is None:
            self._timer = loop.create_task(self._flush_later())
        return fut

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._max_delay)
        self._timer = None
        self._start_flush()

    def _start_flush(self) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
            self._timer = None
        while self._items:
            batch, self._items = self._items[: self._max_size], self._items[self._max_size :]
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _run(self, batch: list[tuple[R, asyncio.Future[Any]]]) -> None:
        try:
            result = await self._flush_fn([record for record, _ in batch])
        except Exception as exc:  # every caller of this batch learns why it failed
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.batches_sent += 1
        for _, fut in batch:
            if not fut.done():
                fut.set_result(result)

    async def drain(self) -> None:
        """Flush what is queued and wait for every batch in flight."""
        self._start_flush()
        while self._flushes:
            await asyncio.gather(*list(self._flushes), return_exceptions=True)
