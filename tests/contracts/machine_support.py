"""Shared machinery of the contract state machines (hypothesis ``RuleBasedStateMachine`` over the py-evm chain).

Speed is the point of this module: a module deploys its contracts once on top of the suite's base chain and takes
an EVM snapshot (``prepare_world``); every example reverts to it (~1 ms) and gets fresh ``TxSender``s (their nonce
caches would be stale after a revert) on a private event loop. Transactions that a rule expects to succeed carry an
explicit gas limit: py-evm's estimation is a binary search that costs several executions.

A refusal a rule *predicts* goes through gas estimation (``refused``), which is how the node's own clients meet it;
an *authorisation* rule mines the forbidden transaction (``mined_refusal``) so that the chain really executed and
rolled it back, and then compares a state read before and after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import eth  # noqa: F401  (py-evm raises the recursion limit on import: do it before hypothesis runs)
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.txqueue import TxSender
from dinfer.crypto import Keypair
from dinfer.errors import TxReverted
from support import FULL_PROFILE, examples

T = TypeVar("T")
GAS = 1_500_000
"""Explicit gas for transactions a rule expects to be mined (skips py-evm's slow estimation)."""


@dataclass
class World:
    """One module's deployment: the chain, the snapshot every example starts from, and what the build returned."""

    backend: EthTesterBackend
    snapshot: Any
    data: dict[str, Any] = field(default_factory=dict)


def prepare_world(base: Any, build: Callable[[EthTesterBackend, Callable[[Keypair], TxSender]],
                                              Awaitable[dict[str, Any]]]) -> World:
    """Revert the suite's base chain (``_base_chain``), run ``build(backend, sender_for)`` once, snapshot the result.

    ``build`` deploys and configures; what it returns (addresses, constants) is kept in ``World.data``.
    """
    backend: EthTesterBackend = base.backend

    async def go() -> dict[str, Any]:
        backend.tester.revert_to_snapshot(base.snapshot)
        senders: dict[str, TxSender] = {}

        def sender_for(k: Keypair) -> TxSender:
            return senders.setdefault(k.address, TxSender(backend.w3, k, poll_interval=0.005))

        try:
            return await build(backend, sender_for)
        finally:
            for s in senders.values():
                await s.close()

    data = asyncio.run(go())
    return World(backend, backend.tester.take_snapshot(), data)


def machine_settings(fast: int, full: int, steps: int, full_steps: int | None = None) -> settings:
    """``fast`` examples of at most ``steps`` rules in ``make test``; ``full`` (× ``full_steps``) in test-full.

    The fast profile is derandomized: the same sequences every run, so its time is bounded and it cannot flake;
    the full profile draws fresh sequences (and shrinks any failure as usual).
    """
    return settings(
        max_examples=examples(fast, full),
        stateful_step_count=(full_steps or steps) if FULL_PROFILE else steps,
        deadline=None,
        derandomize=not FULL_PROFILE,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def run_machine(factory: Callable[[], RuleBasedStateMachine], config: settings) -> None:
    """Run a machine whose constructor needs fixtures (hypothesis' ``TestCase`` attribute cannot take any)."""
    run_state_machine_as_test(factory, settings=config)


class ChainMachine(RuleBasedStateMachine):
    """Base of the contract machines: the chain reverted to the module's snapshot, a private loop, fresh senders."""

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world
        self.backend = world.backend
        self.w3 = world.backend.w3
        self.accounts = world.backend.accounts
        self.loop = asyncio.new_event_loop()
        self.backend.tester.revert_to_snapshot(world.snapshot)
        # py-evm stamps new blocks with the wall clock: an empty block makes "latest" current again, so signed
        # timestamps taken from it stay inside the request window however long ago the snapshot was taken
        self.backend.tester.mine_blocks(1)
        self._senders: dict[str, TxSender] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def sender(self, account: Keypair) -> TxSender:
        """One ``TxSender`` per account per example (nonces are cached per sender)."""
        if account.address not in self._senders:
            self._senders[account.address] = TxSender(self.w3, account, poll_interval=0.005)
        return self._senders[account.address]

    async def eth_balance(self, address: str) -> int:
        return int(await self.w3.eth.get_balance(address))  # type: ignore[arg-type]

    async def block_number(self) -> int:
        return int(await self.w3.eth.block_number)

    def teardown(self) -> None:
        async def close() -> None:
            for s in self._senders.values():
                await s.close()

        try:
            self.run(close())
        finally:
            self.loop.close()


def gas_paid(receipt: dict[str, Any]) -> int:
    """Wei the sender paid for a mined transaction (to check a withdrawal paid its caller exactly once)."""
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


async def refused(reason: str, action: Awaitable[Any]) -> None:
    """``action`` must revert with exactly ``reason``."""
    try:
        await action
    except TxReverted as exc:
        assert exc.reason == reason, f"expected revert {reason}, got {exc.reason}"
        return
    raise AssertionError(f"expected revert {reason}, the call succeeded")


async def mined_refusal(reason: str, sender: TxSender, fn: Any, read: Callable[[], Awaitable[Any]],
                        value: int = 0) -> None:
    """Mine ``fn`` from ``sender`` (explicit gas: no estimation stops it), expect ``reason``, and require that
    ``read()`` — the state the forbidden call would touch — is the same before and after."""
    before = await read()
    await refused(reason, sender.transact(fn, value=value, gas=GAS))
    after = await read()
    assert after == before, f"state changed by a refused call ({reason}): {before} -> {after}"


class OncePerEpoch:
    """Slashing ledger: every (epoch, who) may be slashed at most once; raises on a second slash."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.seen: dict[tuple[int, str], int] = {}

    def record(self, epoch: int, who: str, amount: int) -> None:
        key = (int(epoch), str(who))
        assert key not in self.seen, f"{self.what}: {who} slashed twice in epoch {epoch}"
        self.seen[key] = int(amount)

    def total(self, who: str) -> int:
        return sum(a for (_, w), a in self.seen.items() if w == who)
