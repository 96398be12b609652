"""Property: Sessions conserves funds over random sequences of create / proof / complete / timeout / withdraw.

After every step, to the wei: the contract's ETH == deposits of ACTIVE sessions + unwithdrawn host earnings +
unwithdrawn refunds + the treasury balance. A reference model predicts every outcome (accepted, or the exact
revert), every settlement and every balance; each withdrawal pays its caller exactly once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import eth  # noqa: F401  (py-evm raises the recursion limit on import: do it before hypothesis runs)
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.contracts.sessions import SessionsClient, SessionState
from dinfer.chain.deploy import bind, deploy_sessions
from dinfer.chain.txqueue import TxSender
from dinfer.crypto import Keypair
from dinfer.errors import TxReverted

MODEL = "dinfer/tiny-random-llama"
MIN_PROVEN, RATE, FEE_BPS, DISPUTE_BLOCKS = 100, 1_000, 1_000, 10
GAS = 400_000

deposit_tokens = st.one_of(st.integers(100, 20_000), st.integers(100_000, 10**6))
create = st.tuples(st.just("create"), st.integers(0, 1), st.integers(0, 1), deposit_tokens,
                   st.sampled_from([1, 7, 10**9]), st.integers(10, 600), st.integers(1, 600))
steps = st.lists(
    st.one_of(
        create,
        st.tuples(st.just("proof"), st.integers(0, 7), st.integers(50, 6_000), st.booleans(),
                  st.sampled_from([True, True, True, False])),
        st.tuples(st.just("proof"), st.integers(0, 7), st.integers(100, 1_500), st.booleans(), st.just(True)),
        st.tuples(st.just("edge"), st.integers(0, 7), st.integers(-1, 1)),
        st.tuples(st.just("complete"), st.integers(0, 7), st.booleans()),
        st.tuples(st.just("timeout"), st.integers(0, 7)),
        st.tuples(st.just("withdraw"), st.sampled_from(["earnings", "refund", "treasury"]), st.integers(0, 1)),
        st.tuples(st.just("wait"), st.integers(1, 400), st.integers(0, 12)),
    ),
    min_size=3,
    max_size=12,
)


@dataclass
class Job:
    job_id: int
    client: Keypair
    host: Keypair
    price: int
    deposit: int
    max_duration: int
    proof_interval: int
    start: int
    last_proof_time: int
    last_proof_block: int
    cumulative: int = 0
    state: SessionState = SessionState.ACTIVE


@dataclass
class Ledger:
    jobs: list[Job] = field(default_factory=list)
    earnings: dict[str, int] = field(default_factory=dict)
    refunds: dict[str, int] = field(default_factory=dict)
    treasury: int = 0
    settled_to: dict[str, int] = field(default_factory=dict)
    """Everything ever credited to an account (earnings or refunds)."""
    paid_to: dict[str, int] = field(default_factory=dict)
    """Everything ever withdrawn by an account."""


class World:
    """One chain state: Sessions deployed, two hosts registered, two clients; a clock we set per transaction."""

    def __init__(self, chain: EthTesterBackend, registry_address: str) -> None:
        self.chain = chain
        a = chain.accounts
        self.owner, self.hosts, self.clients, self.treasury = a[0], [a[1], a[2]], [a[3], a[4]], a[5]
        self.senders = {k.address: TxSender(chain.w3, k, poll_interval=0.01) for k in a[:6]}
        self.registry = RegistryClient(bind(chain.w3, "Registry", registry_address), self.senders[self.owner.address])
        self.sessions: SessionsClient

    def as_(self, who: Keypair) -> SessionsClient:
        return SessionsClient(self.sessions.contract, self.senders[who.address])

    async def setup(self) -> str:
        """Register both hosts and deploy Sessions; returns its address."""
        collateral = await self.registry.param("min_collateral_wei")
        for host in self.hosts:
            await self.registry.with_sender(self.senders[host.address])._transact(
                "register_host", "http://h.test", "{}", value=collateral)
        self.sessions = SessionsClient(await deploy_sessions(self.chain.w3, self.senders[self.owner.address],
                                                             self.registry.address))
        return self.sessions.address

    def bind(self, sessions_address: str) -> None:
        self.sessions = SessionsClient(bind(self.chain.w3, "Sessions", sessions_address))

    async def tick(self, seconds: int = 1) -> tuple[int, int]:
        """Pin the next block's timestamp `seconds` ahead; returns (its timestamp, its number)."""
        ts = (await self.chain.w3.eth.get_block("pending"))["timestamp"] + seconds - 1
        await self.chain.set_next_timestamp(ts)  # a no-op for seconds=1: the pending block is already at ts
        return ts, (await self.chain.w3.eth.get_block("latest"))["number"] + 1


async def attempt(expected: str | None, fn: Any, *args: Any) -> dict[str, Any] | None:
    """Call ``fn(*args)``; it must succeed when ``expected`` is None, else revert with exactly that reason.

    A predicted success skips gas estimation (py-evm's estimate is a binary search: ~5× the cost of the
    transaction); a predicted refusal is caught by estimation, as the node's own clients would see it."""
    event(f"{fn.__name__}: {expected or 'accepted'}")  # shown by --hypothesis-show-statistics
    if expected is None:
        return await fn(*args, gas=GAS)
    try:
        await fn(*args)
    except TxReverted as exc:
        assert exc.reason == expected
        return None
    raise AssertionError(f"expected revert {expected}")


def settle(ledger: Ledger, job: Job, state: SessionState) -> None:
    cost = job.cumulative * job.price
    fee = cost * FEE_BPS // 10_000
    job.state = state
    for who, amount in ((job.host.address, cost - fee), (job.client.address, job.deposit - cost)):
        book = ledger.earnings if who == job.host.address else ledger.refunds
        book[who] = book.get(who, 0) + amount
        ledger.settled_to[who] = ledger.settled_to.get(who, 0) + amount
    ledger.treasury += fee


async def step(world: World, ledger: Ledger, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "wait":
        if op[2]:
            await world.chain.mine(op[2])
        await world.tick(op[1])
        return
    if kind == "create":
        _, ci, hi, tokens, price, max_duration, interval = op
        client, host = world.clients[ci], world.hosts[hi]
        interval = min(interval, max_duration)
        ts, number = await world.tick()
        receipt = await world.as_(client).create_session(host.address, MODEL, price, max_duration, interval,
                                                         deposit=tokens * price, gas=GAS)
        job_id = world.sessions.job_id_of(receipt)
        assert job_id == len(ledger.jobs) + 1
        ledger.jobs.append(Job(job_id, client, host, price, tokens * price, max_duration, interval, ts, ts, number))
        return
    if kind == "withdraw":
        _, what, i = op
        who = {"earnings": world.hosts, "refund": world.clients, "treasury": world.clients}[what][i]
        book = {"earnings": ledger.earnings, "refund": ledger.refunds}.get(what)
        amount = ledger.treasury if book is None else book.get(who.address, 0)
        payee = world.treasury if book is None else who
        before = await world.chain.w3.eth.get_balance(payee.address)
        fn = {"earnings": "withdraw_earnings", "refund": "withdraw_refund", "treasury": "sweep_treasury"}[what]
        await world.tick()
        receipt = await attempt(None if amount else "NothingToWithdraw", getattr(world.as_(who), fn))
        if receipt is not None:
            gas = receipt["gasUsed"] * receipt["effectiveGasPrice"] if payee is who else 0
            assert await world.chain.w3.eth.get_balance(payee.address) == before + amount - gas  # paid exactly once
            ledger.paid_to[payee.address] = ledger.paid_to.get(payee.address, 0) + amount
            if book is None:
                ledger.treasury = 0
            else:
                book[who.address] = 0
        return
    if not ledger.jobs:
        return
    job = ledger.jobs[op[1] % len(ledger.jobs)]
    active = job.state == SessionState.ACTIVE
    if kind == "edge":  # an unsigned claim at the time bound, one token under or one over
        ts = (await world.chain.w3.eth.get_block("pending"))["timestamp"]
        bound = 2 * RATE * (min(ts, job.start + job.max_duration) - job.start)
        kind, op = "proof", ("proof", op[1], max(bound - job.cumulative + op[2], 0), False, True)
    if kind == "proof":
        _, _, tokens, signed, by_host = op
        ts, number = await world.tick()
        new_total = job.cumulative + tokens
        bound = 2 * RATE * (min(ts, job.start + job.max_duration) - job.start)
        expected = ("SessionNotActive" if not active else "NotSessionHost" if not by_host
                    else "BelowMinProvenTokens" if tokens < MIN_PROVEN
                    else "ClaimExceedsDeposit" if new_total > job.deposit // job.price
                    else "ClaimAboveTimeBound" if not signed and new_total > bound else None)
        proof = (await world.sessions.receipt_domain()).sign(job.job_id, new_total, job.client.private_key) \
            if signed else b""
        sender = job.host if by_host else job.client
        if await attempt(expected, world.as_(sender).submit_proof_of_work, job.job_id, tokens, proof) is not None:
            job.cumulative, job.last_proof_time, job.last_proof_block = new_total, ts, number
    elif kind == "complete":
        by_client = op[2]
        ts, number = await world.tick()
        expected = ("SessionNotActive" if not active
                    else "DisputeWindowOpen" if not by_client and number < job.last_proof_block + DISPUTE_BLOCKS
                    else None)
        sender = job.client if by_client else job.host
        if await attempt(expected, world.as_(sender).complete_session, job.job_id) is not None:
            settle(ledger, job, SessionState.COMPLETED)
    elif kind == "timeout":
        ts, _ = await world.tick()
        due = ts > job.start + job.max_duration or ts > job.last_proof_time + 3 * job.proof_interval
        expected = "SessionNotActive" if not active else None if due else "SessionNotExpired"
        if await attempt(expected, world.as_(world.treasury).trigger_session_timeout, job.job_id) is not None:
            settle(ledger, job, SessionState.TIMED_OUT)


async def check(world: World, ledger: Ledger) -> None:
    s = world.sessions
    held = await world.chain.w3.eth.get_balance(s.address)
    escrowed = sum(j.deposit for j in ledger.jobs if j.state == SessionState.ACTIVE)
    earnings = [await s.earnings(h.address) for h in world.hosts]
    refunds = [await s.refunds(c.address) for c in world.clients]
    treasury = await s.treasury_balance()
    assert held == escrowed + sum(earnings) + sum(refunds) + treasury
    assert earnings == [ledger.earnings.get(h.address, 0) for h in world.hosts]
    assert refunds == [ledger.refunds.get(c.address, 0) for c in world.clients]
    assert treasury == ledger.treasury
    for account in (*world.hosts, *world.clients):  # nobody is paid more than was ever credited to them
        paid = ledger.paid_to.get(account.address, 0)
        owed = ledger.earnings.get(account.address, 0) + ledger.refunds.get(account.address, 0)
        assert paid + owed == ledger.settled_to.get(account.address, 0)


async def drain(world: World, ledger: Ledger) -> None:
    """Close what is open and withdraw everything: the contract ends empty and everyone got exactly their due."""
    for i, job in enumerate(ledger.jobs):
        if job.state == SessionState.ACTIVE:
            await step(world, ledger, ("complete", i, True))
    for i in range(2):
        for what in ("earnings", "refund", "treasury"):
            await step(world, ledger, ("withdraw", what, i))
    await check(world, ledger)
    for job in ledger.jobs:
        session = await world.sessions.get_session(job.job_id)
        assert (session.cumulative_tokens, session.state) == (job.cumulative, job.state)
        assert session.cumulative_tokens * session.price_per_token <= session.deposit
    assert await world.chain.w3.eth.get_balance(world.sessions.address) == 0
    assert sum(ledger.paid_to.values()) == sum(j.deposit for j in ledger.jobs)


@pytest.fixture(scope="module")
def ready(_base_chain) -> tuple[Any, str]:  # type: ignore[no-untyped-def]
    """A snapshot with both hosts registered and Sessions deployed (set up once; each example reverts to it)."""

    async def build() -> tuple[Any, str]:
        _base_chain.backend.tester.revert_to_snapshot(_base_chain.snapshot)
        world = World(_base_chain.backend, _base_chain.registry_address)
        address = await world.setup()
        for sender in world.senders.values():
            await sender.close()
        return _base_chain.backend.tester.take_snapshot(), address

    return asyncio.run(build())


async def run(backend: EthTesterBackend, registry_address: str, ready: tuple[Any, str], sequence: list[tuple]) -> None:  # type: ignore[type-arg]
    backend.tester.revert_to_snapshot(ready[0])
    world = World(backend, registry_address)
    world.bind(ready[1])
    ledger = Ledger()
    for op in sequence:
        await step(world, ledger, op)
        await check(world, ledger)
    await drain(world, ledger)
    for sender in world.senders.values():
        await sender.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=create, sequence=steps)
def test_funds_conserved(_base_chain, ready, first: tuple, sequence: list[tuple]) -> None:  # type: ignore[no-untyped-def, type-arg]
    asyncio.run(run(_base_chain.backend, _base_chain.registry_address, ready, [first, *sequence]))
