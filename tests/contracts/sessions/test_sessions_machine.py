"""State machine over Sessions: open / claim / checkpoint (signed receipt) / replayed receipt / close / timeout /
withdraw / wait, plus calls by parties that may not make them.

After every step, to the wei: the contract's ETH == deposits of ACTIVE sessions + unwithdrawn host earnings +
unwithdrawn refunds + the treasury balance, and each of those equals the reference model. The model predicts every
outcome (accepted, or the exact revert) and every settlement; a replayed receipt is refused (a checkpoint is paid
once), a closed session never changes again (ACTIVE → COMPLETED | TIMED_OUT only), every withdrawal pays its caller
exactly what was credited, once, and a stranger's claim or close is refused on chain and leaves the session as it was.
Replaces test_sessions_conservation.py (same model and invariants, run as rules on a snapshot per example).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, initialize, invariant, precondition, rule
from tests.contracts.machine_support import (
    GAS,
    ChainMachine,
    World,
    gas_paid,
    machine_settings,
    mined_refusal,
    prepare_world,
    run_machine,
)

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.contracts.sessions import ReceiptDomain, Session, SessionsClient, SessionState
from dinfer.chain.deploy import bind, deploy_sessions
from dinfer.crypto import Keypair
from dinfer.errors import TxReverted

MODEL = "dinfer/tiny-random-llama"
MIN_PROVEN, RATE, FEE_BPS, DISPUTE_BLOCKS = 100, 1_000, 1_000, 10
"""Genesis min_proven_tokens, expected_tokens_per_sec, treasury_fee_bps, session_dispute_blocks."""
STRANGER = 9  # chain.accounts index of an account that is neither host nor client of any session


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
    proofs: int = 0
    state: SessionState = SessionState.ACTIVE
    receipt: tuple[int, bytes] | None = None
    """The last accepted signed checkpoint: (tokens claimed, signature)."""


@dataclass
class Books:
    """What the model says the contract owes."""

    earnings: dict[str, int] = field(default_factory=dict)
    refunds: dict[str, int] = field(default_factory=dict)
    treasury: int = 0
    settled_to: dict[str, int] = field(default_factory=dict)
    """Everything ever credited to an account (earnings or refunds)."""
    paid_to: dict[str, int] = field(default_factory=dict)
    """Everything ever withdrawn by an account."""

    def settle(self, job: Job, state: SessionState) -> None:
        cost = job.cumulative * job.price
        fee = cost * FEE_BPS // 10_000
        job.state = state
        for book, who, amount in ((self.earnings, job.host.address, cost - fee),
                                  (self.refunds, job.client.address, job.deposit - cost)):
            book[who] = book.get(who, 0) + amount
            self.settled_to[who] = self.settled_to.get(who, 0) + amount
        self.treasury += fee


def expected_claim(job: Job, ts: int, tokens: int, *, by_host: bool, signed: bool, valid: bool) -> str | None:
    """The contract's answer to a proof of work at block time ``ts`` (None: accepted), in its check order."""
    bound = 2 * RATE * (min(ts, job.start + job.max_duration) - job.start)
    new_total = job.cumulative + tokens
    if job.state != SessionState.ACTIVE:
        return "SessionNotActive"
    if not by_host:
        return "NotSessionHost"
    if tokens < MIN_PROVEN:
        return "BelowMinProvenTokens"
    if new_total > job.deposit // job.price:
        return "ClaimExceedsDeposit"
    if signed and not valid:
        return "InvalidReceipt"
    if not signed and new_total > bound:
        return "ClaimAboveTimeBound"
    return None


deposit_tokens = st.one_of(st.integers(100, 20_000), st.integers(100_000, 10**6))


class SessionsMachine(ChainMachine):
    jobs = Bundle("jobs")

    def __init__(self, world: World) -> None:
        super().__init__(world)
        a = self.accounts
        self.owner, self.hosts, self.clients, self.treasury = a[0], [a[1], a[2]], [a[3], a[4]], a[5]
        self.stranger = a[STRANGER]
        self.sessions = SessionsClient(bind(self.w3, "Sessions", world.data["sessions"]))
        self.domain = ReceiptDomain(world.data["chain_id"], world.data["sessions"])
        self.books = Books()
        self.all_jobs: list[Job] = []

    def as_(self, who: Keypair) -> SessionsClient:
        return SessionsClient(self.sessions.contract, self.sender(who))

    async def tick(self, seconds: int = 1) -> tuple[int, int]:
        """Pin the next block's timestamp ``seconds`` ahead; returns (its timestamp, its number)."""
        ts = (await self.w3.eth.get_block("pending"))["timestamp"] + seconds - 1
        await self.backend.set_next_timestamp(ts)  # a no-op for seconds=1: the pending block is already at ts
        return ts, await self.block_number() + 1

    async def attempt(self, expected: str | None, fn: Any, *args: Any) -> dict[str, Any] | None:
        """``fn(*args)`` must succeed (explicit gas) when ``expected`` is None, else refuse with exactly that reason
        at estimation, as the node's own clients would meet it."""
        event(f"{fn.__name__}: {expected or 'accepted'}")  # shown by --hypothesis-show-statistics
        if expected is None:
            return await fn(*args, gas=GAS)
        try:
            await fn(*args)
        except TxReverted as exc:
            assert exc.reason == expected, f"expected {expected}, got {exc.reason}"
            return None
        raise AssertionError(f"expected revert {expected}")

    async def check_job(self, job: Job) -> None:
        """The chain's record of ``job`` equals the model (status transitions are the model's)."""
        s = await self.sessions.get_session(job.job_id)
        assert (s.cumulative_tokens, s.proof_count, s.state) == (job.cumulative, job.proofs, job.state)
        assert (s.last_proof_time, s.last_proof_block) == (job.last_proof_time, job.last_proof_block)

    # ------------------------------------------------------------ rules

    @initialize(target=jobs, ci=st.integers(0, 1), hi=st.integers(0, 1), tokens=deposit_tokens,
                price=st.sampled_from([1, 7, 10**9]), max_duration=st.integers(10, 600), interval=st.integers(1, 600))
    def first_session(self, ci: int, hi: int, tokens: int, price: int, max_duration: int, interval: int) -> Job:
        return self.open_session(ci, hi, tokens, price, max_duration, interval)

    @rule(target=jobs, ci=st.integers(0, 1), hi=st.integers(0, 1), tokens=deposit_tokens,
          price=st.sampled_from([1, 7, 10**9]), max_duration=st.integers(10, 600), interval=st.integers(1, 600))
    def open_session(self, ci: int, hi: int, tokens: int, price: int, max_duration: int, interval: int) -> Job:
        client, host = self.clients[ci], self.hosts[hi]
        interval = min(interval, max_duration)

        async def go() -> Job:
            ts, number = await self.tick()
            receipt = await self.as_(client).create_session(host.address, MODEL, price, max_duration, interval,
                                                            deposit=tokens * price, gas=GAS)
            job_id = self.sessions.job_id_of(receipt)
            assert job_id == len(self.all_jobs) + 1
            return Job(job_id, client, host, price, tokens * price, max_duration, interval, ts, ts, number)

        job = self.run(go())
        self.all_jobs.append(job)
        return job

    async def _proof(self, job: Job, tokens: int, *, by_host: bool, signed: bool, replay: bool = False) -> None:
        ts, number = await self.tick()
        new_total = job.cumulative + tokens
        if replay:
            assert job.receipt is not None
            tokens, proof = job.receipt
            new_total = job.cumulative + tokens
            expected = expected_claim(job, ts, tokens, by_host=True, signed=True, valid=False)
        else:
            proof = self.domain.sign(job.job_id, new_total, job.client.private_key) if signed else b""
            expected = expected_claim(job, ts, tokens, by_host=by_host, signed=signed, valid=True)
        sender = job.host if by_host else job.client
        if await self.attempt(expected, self.as_(sender).submit_proof_of_work, job.job_id, tokens, proof):
            job.cumulative, job.proofs = new_total, job.proofs + 1
            job.last_proof_time, job.last_proof_block = ts, number
            if signed:
                job.receipt = (tokens, proof)
            await self.check_job(job)

    async def _share(self, job: Job, pct: int, *, time_bound: bool) -> int:
        """``pct`` % of what the job can still take now (the deposit, and for unsigned claims the time bound):
        mostly acceptable claims, some just over the limit."""
        ts = (await self.w3.eth.get_block("pending"))["timestamp"]
        room = job.deposit // job.price
        if time_bound:
            room = min(room, 2 * RATE * (min(ts, job.start + job.max_duration) - job.start))
        return max(room - job.cumulative, 0) * pct // 100

    @rule(job=jobs, pct=st.integers(1, 110), by_host=st.sampled_from([True, True, True, False]))
    def claim(self, job: Job, pct: int, by_host: bool) -> None:
        """An unsigned proof bounded by elapsed time (by the client instead of the host: NotSessionHost)."""

        async def go() -> None:
            tokens = await self._share(job, pct, time_bound=True)
            await self._proof(job, tokens, by_host=by_host, signed=False)

        self.run(go())

    @rule(job=jobs, pct=st.integers(1, 110))
    def checkpoint(self, job: Job, pct: int) -> None:
        """A proof carrying the client's signed receipt for the new cumulative count (lifts the time bound)."""

        async def go() -> None:
            await self._proof(job, await self._share(job, pct, time_bound=False), by_host=True, signed=True)

        self.run(go())

    @precondition(lambda self: any(j.receipt for j in self.all_jobs))
    @rule(pick=st.integers(0, 7))
    def replay_checkpoint(self, pick: int) -> None:
        """Re-submitting an accepted receipt must never pay again: it is refused and changes nothing."""
        signed = [j for j in self.all_jobs if j.receipt]
        self.run(self._proof(signed[pick % len(signed)], 0, by_host=True, signed=True, replay=True))

    @rule(job=jobs, delta=st.integers(-1, 1))
    def claim_at_time_bound(self, job: Job, delta: int) -> None:
        """An unsigned claim at the time bound: one token under, exactly, or one over."""

        async def go() -> None:
            ts = (await self.w3.eth.get_block("pending"))["timestamp"]
            bound = 2 * RATE * (min(ts, job.start + job.max_duration) - job.start)
            await self._proof(job, max(bound - job.cumulative + delta, 0), by_host=True, signed=False)

        self.run(go())

    @rule(job=jobs, tokens=st.integers(100, 1_000))
    def stranger_claims(self, job: Job, tokens: int) -> None:
        """Only the session's host may prove work: mined, refused, session unchanged."""
        reason = "SessionNotActive" if job.state != SessionState.ACTIVE else "NotSessionHost"
        fn = self.sessions.contract.functions.submit_proof_of_work(job.job_id, tokens, b"")
        self.run(mined_refusal(reason, self.sender(self.stranger), fn, self._read(job)))

    @rule(job=jobs)
    def stranger_closes(self, job: Job) -> None:
        """Only the client or the host may complete a session: mined, refused, session unchanged."""
        reason = "SessionNotActive" if job.state != SessionState.ACTIVE else "NotSessionParty"
        fn = self.sessions.contract.functions.complete_session(job.job_id)
        self.run(mined_refusal(reason, self.sender(self.stranger), fn, self._read(job)))

    def _read(self, job: Job) -> Any:
        async def read() -> tuple[Session, int, int, int]:
            return (await self.sessions.get_session(job.job_id), await self.sessions.earnings(job.host.address),
                    await self.sessions.refunds(job.client.address), await self.sessions.treasury_balance())
        return read

    @rule(job=jobs, by_client=st.booleans())
    def close(self, job: Job, by_client: bool) -> None:
        async def go() -> None:
            _, number = await self.tick()
            expected = ("SessionNotActive" if job.state != SessionState.ACTIVE
                        else "DisputeWindowOpen" if not by_client and number < job.last_proof_block + DISPUTE_BLOCKS
                        else None)
            sender = job.client if by_client else job.host
            if await self.attempt(expected, self.as_(sender).complete_session, job.job_id):
                self.books.settle(job, SessionState.COMPLETED)
                await self.check_job(job)

        self.run(go())

    @rule(job=jobs)
    def timeout(self, job: Job) -> None:
        async def go() -> None:
            ts, _ = await self.tick()
            due = ts > job.start + job.max_duration or ts > job.last_proof_time + 3 * job.proof_interval
            expected = "SessionNotActive" if job.state != SessionState.ACTIVE else None if due else "SessionNotExpired"
            if await self.attempt(expected, self.as_(self.stranger).trigger_session_timeout, job.job_id):
                self.books.settle(job, SessionState.TIMED_OUT)
                await self.check_job(job)

        self.run(go())

    async def _withdraw(self, what: str, i: int) -> None:
        who = {"earnings": self.hosts, "refund": self.clients, "treasury": self.clients}[what][i]
        book = {"earnings": self.books.earnings, "refund": self.books.refunds}.get(what)
        amount = self.books.treasury if book is None else book.get(who.address, 0)
        payee = self.treasury if book is None else who
        before = await self.eth_balance(payee.address)
        fn = {"earnings": "withdraw_earnings", "refund": "withdraw_refund", "treasury": "sweep_treasury"}[what]
        await self.tick()
        receipt = await self.attempt(None if amount else "NothingToWithdraw", getattr(self.as_(who), fn))
        if receipt is not None:
            gas = gas_paid(receipt) if payee is who else 0
            assert await self.eth_balance(payee.address) == before + amount - gas  # paid exactly once
            self.books.paid_to[payee.address] = self.books.paid_to.get(payee.address, 0) + amount
            if book is None:
                self.books.treasury = 0
            else:
                book[who.address] = 0

    @rule(what=st.sampled_from(["earnings", "refund", "treasury"]), i=st.integers(0, 1))
    def withdraw(self, what: str, i: int) -> None:
        self.run(self._withdraw(what, i))

    @rule(seconds=st.integers(1, 400), blocks=st.integers(0, 12))
    def wait(self, seconds: int, blocks: int) -> None:
        async def go() -> None:
            if blocks:
                await self.backend.mine(blocks)
            await self.tick(seconds)

        self.run(go())

    @precondition(lambda self: len(self.all_jobs) >= 2)
    @rule()
    def settle_everything(self) -> None:
        """Close what is open and withdraw everything: the contract ends empty and everyone got exactly their due."""

        async def go() -> None:
            for job in self.all_jobs:
                if job.state == SessionState.ACTIVE:
                    await self.tick()
                    await self.as_(job.client).complete_session(job.job_id, gas=GAS)
                    self.books.settle(job, SessionState.COMPLETED)
            for i in range(2):
                for what in ("earnings", "refund", "treasury"):
                    await self._withdraw(what, i)
            assert await self.eth_balance(self.sessions.address) == 0
            assert sum(self.books.paid_to.values()) == sum(j.deposit for j in self.all_jobs)

        self.run(go())

    # ------------------------------------------------------------ invariants

    @invariant()
    def funds_conserved(self) -> None:
        async def check() -> None:
            s = self.sessions
            held = await self.eth_balance(s.address)
            escrowed = sum(j.deposit for j in self.all_jobs if j.state == SessionState.ACTIVE)
            earnings = [await s.earnings(h.address) for h in self.hosts]
            refunds = [await s.refunds(c.address) for c in self.clients]
            treasury = await s.treasury_balance()
            assert held == escrowed + sum(earnings) + sum(refunds) + treasury
            assert earnings == [self.books.earnings.get(h.address, 0) for h in self.hosts]
            assert refunds == [self.books.refunds.get(c.address, 0) for c in self.clients]
            assert treasury == self.books.treasury
            for account in (*self.hosts, *self.clients):  # nobody is paid more than was ever credited to them
                paid = self.books.paid_to.get(account.address, 0)
                owed = self.books.earnings.get(account.address, 0) + self.books.refunds.get(account.address, 0)
                assert paid + owed == self.books.settled_to.get(account.address, 0)

        self.run(check())


@pytest.fixture(scope="module")
def sessions_world(_base_chain) -> World:  # type: ignore[no-untyped-def]
    """Both hosts registered and Sessions deployed, once per module; every example reverts to this snapshot."""

    async def build(backend: EthTesterBackend, sender_for: Any) -> dict[str, Any]:
        a = backend.accounts
        registry = RegistryClient(bind(backend.w3, "Registry", _base_chain.registry_address), sender_for(a[0]))
        collateral = await registry.param("min_collateral_wei")
        for host in (a[1], a[2]):
            await registry.with_sender(sender_for(host))._transact("register_host", "http://h.test", "{}",
                                                                   value=collateral)
        sessions = await deploy_sessions(backend.w3, sender_for(a[0]), registry.address)
        return {"sessions": sessions.address, "chain_id": backend.chain_id}

    return prepare_world(_base_chain, build)


def test_sessions_machine(sessions_world: World) -> None:
    run_machine(lambda: SessionsMachine(sessions_world), machine_settings(fast=5, full=100, steps=20, full_steps=50))
