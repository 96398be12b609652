"""State machine over Inference (escrow, records, downtime) and the Epochs status it drives.

Rules: deposit / withdraw / start / duplicate start / finish / duplicate finish / expire (too early; then a
report_downtime re-evaluation) / reassign / withdraw earnings / advance epoch / governance re-activation, plus calls by
parties that may not make them (a stranger's finish, reassign, start batch, status change, epoch move, invalidation:
each refused by name, state unchanged). The world makes downtime slashing frequent (no grace, p0 = 1 %) so that a
re-activated executor's next miss meets the once-per-epoch flag.

After every step, to the wei: the contract's ETH == Σ client balances + Σ reservations of STARTED inferences + Σ
host earnings, and each of those equals the reference model, which predicts every acceptance and rejection. A
finished inference is paid once (a duplicate finish emits DuplicateFinish and moves nothing), records only go
STARTED → FINISHED | EXPIRED, an executor is slashed for downtime at most once per epoch (and its collateral drops
by exactly what the ExecutorSlashed events say), and withdrawals pay their caller exactly once.
Replaces test_conservation.py (its invariants are the first two above).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
from eth_utils import keccak
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, initialize, invariant, multiple, precondition, rule
from inference_ledger import COLLATERAL, ETH, Ledger, make_ledger
from tests.contracts.machine_support import (
    GAS,
    ChainMachine,
    OncePerEpoch,
    World,
    gas_paid,
    machine_settings,
    mined_refusal,
    prepare_world,
    refused,
    run_machine,
)

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.epochs import EpochsClient, MemberStatus
from dinfer.chain.contracts.inference import (
    FinishRecord,
    InferenceClient,
    InferenceStatus,
    ReassignRecord,
    StartRecord,
    start_batch_args,
)
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.deploy import bind
from dinfer.genesis import Genesis
from dinfer.selection import next_active_after, pick_executor
from dinfer.stats import critical_values, pack_critical_values, z_alpha_e4
from support import events

STRANGER = 9  # chain.accounts index: not a host, not a client, not the owner
EXPIRATION = 20  # genesis expiration_blocks
P0_BPS, ALPHA_BPS = 100, 500  # MissedStatTest here: one miss in up to 5 assignments fails it


@dataclass
class Rec:
    """The model of one started inference."""

    start: StartRecord
    client: str
    executor: str
    reserved_tokens: int
    start_block: int
    epoch: int
    status: InferenceStatus = InferenceStatus.STARTED
    reassigned: bool = False

    @property
    def iid(self) -> bytes:
        return self.start.inference_id


def ledger_for(world: World, sender_for: Any) -> Ledger:
    """The module's ledger re-bound to this example's senders (the contracts are the snapshot's)."""
    base: Ledger = world.data["ledger"]
    owner = sender_for(base.owner)
    w3 = world.backend.w3
    return replace(
        base,
        chain=world.backend,
        sender_for=sender_for,
        registry=RegistryClient(bind(w3, "Registry", base.registry.address), owner),
        epochs=EpochsClient(bind(w3, "Epochs", base.epochs.address), owner),
        inference=InferenceClient(bind(w3, "Inference", base.inference.address), owner),
    )


async def build_ledger(base: Any, genesis: Genesis, backend: EthTesterBackend, sender_for: Any,
                       **params: int) -> dict[str, Any]:
    """Registry + Epochs + Inference (+ Validation), four executors, a TA, a client with 1 ETH; ``params`` set
    by governance (the test genesis applies them at once)."""
    a = backend.accounts
    actors = type("Actors", (), dict(owner=a[0], host=a[1], host2=a[2], client=a[3], non_owner=a[4], treasury=a[5]))
    registry = RegistryClient(bind(backend.w3, "Registry", base.registry_address), sender_for(a[0]))
    ledger = await make_ledger(backend, registry, genesis, actors, sender_for)
    for name, value in params.items():
        await registry.propose_param(name, value)
    return {"ledger": ledger}


class InferenceMachine(ChainMachine):
    records = Bundle("records")

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.ledger = ledger_for(world, self.sender)
        lg = self.ledger
        self.stranger = self.accounts[STRANGER]
        self.clients = [lg.client, lg.non_owner]
        self.balances = {lg.client.address: ETH, lg.non_owner.address: 0}
        self.earnings = {m: 0 for m in lg.group}
        self.active = {m: True for m in lg.group}
        self.epoch = 1
        self.recs: list[Rec] = []
        self.downtime = OncePerEpoch("downtime")

    # ------------------------------------------------------------ helpers

    def as_(self, who: Any) -> InferenceClient:
        return self.ledger.as_(who)

    @property
    def inference(self) -> InferenceClient:
        return self.ledger.inference

    def statuses(self) -> list[bool]:
        return [self.active[m] for m in self.ledger.group]

    async def observe(self, receipt: dict[str, Any]) -> None:
        """Downtime slashes in any receipt: at most once per (epoch, executor); the executor is INACTIVE after."""
        for e in events(self.inference.contract, receipt, "ExecutorSlashed"):
            self.downtime.record(e["epoch"], e["executor"], e["amount"])
            assert e["epoch"] == self.epoch
            self.active[e["executor"]] = False
            assert await self.ledger.epochs.status_of(self.epoch, e["executor"]) == MemberStatus.INACTIVE
            collateral = await self.ledger.registry.collateral_of(e["executor"])
            assert collateral == COLLATERAL - self.downtime.total(e["executor"])

    async def check_record(self, rec: Rec) -> None:
        info = await self.inference.get_inference(rec.iid)
        assert (info.status, info.executor, info.reassigned) == (rec.status, rec.executor, rec.reassigned)

    async def mine_until(self, block: int) -> None:
        """Mine so that the next transaction lands at ``block`` or later."""
        gap = block - (await self.block_number() + 1)
        if gap > 0:
            await self.backend.mine(gap)

    def price(self) -> int:
        return self.ledger.price

    # ------------------------------------------------------------ client escrow

    @rule(ci=st.integers(0, 1), amount=st.integers(1, 10**13))
    def deposit(self, ci: int, amount: int) -> None:
        who = self.clients[ci]
        self.run(self.sender(who).transact(self.inference.contract.functions.deposit(), value=amount, gas=GAS))
        self.balances[who.address] += amount

    @rule(ci=st.integers(0, 1), pct=st.integers(1, 110))
    def withdraw(self, ci: int, pct: int) -> None:
        """Up to all of the unreserved balance (more: InsufficientBalance); the client is paid exactly once."""
        who = self.clients[ci]
        amount = self.balances[who.address] * pct // 100 + (1 if pct > 100 else 0)

        async def go() -> None:
            if amount == 0:
                await refused("ZeroAmount", self.as_(who).withdraw(0))
                return
            if amount > self.balances[who.address]:
                await refused("InsufficientBalance", self.as_(who).withdraw(amount))
                return
            before = await self.eth_balance(who.address)
            receipt = await self.sender(who).transact(self.inference.contract.functions.withdraw(amount), gas=GAS)
            assert await self.eth_balance(who.address) == before + amount - gas_paid(receipt)
            self.balances[who.address] -= amount

        self.run(go())

    # ------------------------------------------------------------ records

    @initialize(target=records, prompt=st.integers(0, 3000), max_tokens=st.integers(1, 3000))
    def first_start(self, prompt: int, max_tokens: int) -> Any:
        return self.start(0, prompt, max_tokens)

    @rule(target=records, ci=st.integers(0, 1), prompt=st.integers(0, 3000), max_tokens=st.integers(1, 3000))
    def start(self, ci: int, prompt: int, max_tokens: int) -> Any:
        client = self.clients[ci]
        lg = self.ledger

        async def go() -> Rec | None:
            rec = await lg.record(client=client, prompt=prompt, max_tokens=max_tokens, active=self.statuses())
            executor, _ = pick_executor(rec.inference_id, lg.weights, self.statuses(), lg.max_draws)
            reserve = (prompt + max_tokens) * self.price()
            expected = ("InsufficientBalance" if reserve > self.balances[client.address]
                        else "NoActiveExecutor" if executor is None else None)
            receipt = await self.sender(lg.ta).transact(
                self.inference.contract.functions.start_inferences(*start_batch_args([rec])), gas=GAS)
            outcome = self.inference.outcome(receipt, "start")
            if expected is not None:
                assert outcome.rejected == {rec.inference_id: expected}
                return None
            assert outcome.applied == (rec.inference_id,), outcome
            self.balances[client.address] -= reserve
            model = Rec(rec, client.address, rec.executor, prompt + max_tokens, receipt["blockNumber"], self.epoch)
            self.recs.append(model)
            return model

        model = self.run(go())
        return multiple() if model is None else multiple(model)

    def duplicate_start(self, rec: Rec) -> None:
        """The same signed request again: rejected DuplicateInference, nothing reserved twice."""

        async def go() -> None:
            receipt = await self.sender(self.ledger.ta).transact(
                self.inference.contract.functions.start_inferences(*start_batch_args([rec.start])), gas=GAS)
            assert self.inference.outcome(receipt, "start").rejected == {rec.iid: "DuplicateInference"}
            assert await self.inference.balance_of(rec.client) == self.balances[rec.client]

        self.run(go())

    @rule(rec=records, prompt=st.integers(0, 3000), completion=st.integers(0, 3000))
    def finish(self, rec: Rec, prompt: int, completion: int) -> None:
        """By the current executor: paid once; again after that: DuplicateFinish, nothing moves."""
        executor = self.ledger.member(rec.executor)

        async def go() -> None:
            receipt = await self.sender(executor).transact(
                self.inference.contract.functions.finish_inferences(
                    [FinishRecord(rec.iid, prompt, completion).to_chain()]), gas=GAS)
            outcome = self.inference.outcome(receipt, "finish")
            tokens = prompt + completion
            if rec.status == InferenceStatus.FINISHED:
                assert outcome.duplicates == (rec.iid,) and not outcome.applied
            elif rec.status != InferenceStatus.STARTED:
                assert outcome.rejected == {rec.iid: "InferenceNotStarted"}
            elif tokens > rec.reserved_tokens:
                assert outcome.rejected == {rec.iid: "TokensExceedReserve"}
            else:
                assert outcome.applied == (rec.iid,)
                cost = tokens * self.price()
                self.earnings[rec.executor] += cost
                self.balances[rec.client] += rec.reserved_tokens * self.price() - cost
                rec.status = InferenceStatus.FINISHED
                await self.check_record(rec)
            assert await self.inference.earnings(rec.executor) == self.earnings[rec.executor]
            assert await self.inference.balance_of(rec.client) == self.balances[rec.client]

        self.run(go())

    @rule(rec=records, what=st.sampled_from(["finish", "reassign", "expire_early", "start_again"]))
    def refused_on_record(self, rec: Rec, what: str) -> None:
        """A stranger's finish or reassign, an expiry before its block, the same start again: refused by name,
        nothing changes."""
        {"finish": self.stranger_finishes, "reassign": self.stranger_reassigns, "expire_early": self.expire_too_early,
         "start_again": self.duplicate_start}[what](rec)

    def stranger_finishes(self, rec: Rec) -> None:
        """A non-member's finish of any record: NotExecutor (or a no-op duplicate), no wei moves."""

        async def go() -> None:
            expected = {InferenceStatus.STARTED: "NotExecutor", InferenceStatus.FINISHED: None}.get(
                rec.status, "InferenceNotStarted")
            receipt = await self.sender(self.stranger).transact(
                self.inference.contract.functions.finish_inferences([FinishRecord(rec.iid, 1, 1).to_chain()]),
                gas=GAS)
            outcome = self.inference.outcome(receipt, "finish")
            assert not outcome.applied
            assert outcome.rejected == ({rec.iid: expected} if expected else {})
            assert await self.inference.earnings(self.stranger.address) == 0
            await self.check_record(rec)

        self.run(go())

    @rule(rec=records)
    def expire(self, rec: Rec) -> None:
        """After expiration_blocks: refund and a miss (maybe a slash); twice or a finished one: InferenceNotStarted."""

        async def go() -> None:
            if rec.status != InferenceStatus.STARTED:
                await refused("InferenceNotStarted", self.inference.expire(rec.iid))
                return
            await self.mine_until(rec.start_block + EXPIRATION)
            receipt = await self.sender(self.stranger).transact(
                self.inference.contract.functions.expire(rec.iid), gas=GAS)
            rec.status = InferenceStatus.EXPIRED
            self.balances[rec.client] += rec.reserved_tokens * self.price()
            await self.observe(receipt)
            await self.check_record(rec)
            # anyone may ask for a re-evaluation (report_downtime): it never slashes twice in one epoch
            fn = self.inference.contract.functions.report_downtime(rec.executor)
            await self.observe(await self.sender(self.stranger).transact(fn, gas=GAS))

        self.run(go())

    def expire_too_early(self, rec: Rec) -> None:
        """Mined before its expiry block: ExpireTooEarly, the record and the client's balance unchanged."""

        async def go() -> None:
            if rec.status != InferenceStatus.STARTED or await self.block_number() + 1 >= rec.start_block + EXPIRATION:
                return
            fn = self.inference.contract.functions.expire(rec.iid)
            await mined_refusal("ExpireTooEarly", self.sender(self.stranger), fn, self._read(rec))

        self.run(go())

    def _read(self, rec: Rec) -> Any:
        async def read() -> tuple[Any, ...]:
            info = await self.inference.get_inference(rec.iid)
            return (info.status, info.executor, await self.inference.balance_of(rec.client),
                    await self.inference.earnings(rec.executor))
        return read

    @rule(rec=records)
    def reassign(self, rec: Rec) -> None:
        """The TA moves a STARTED record to the next ACTIVE member; the failed executor gets a miss."""
        if rec.status != InferenceStatus.STARTED:
            return
        lg = self.ledger

        async def go() -> None:
            i = next_active_after(rec.iid, lg.weights, self.statuses(), lg.group.index(rec.executor), lg.max_draws)
            if i is None:
                return
            receipt = await self.sender(lg.ta).transact(self.inference.contract.functions.reassign(
                [ReassignRecord(rec.iid, rec.executor, lg.group[i]).to_chain()]), gas=GAS)
            assert self.inference.outcome(receipt, "reassign").applied == (rec.iid,)
            rec.executor, rec.reassigned, rec.start_block = lg.group[i], True, receipt["blockNumber"]
            await self.observe(receipt)
            await self.check_record(rec)

        self.run(go())

    def stranger_reassigns(self, rec: Rec) -> None:
        """Only the record's TA may reassign: a stranger's batch rejects it NotTA and nothing changes."""

        async def go() -> None:
            i = (self.ledger.group.index(rec.executor) + 1) % len(self.ledger.group)
            receipt = await self.sender(self.stranger).transact(self.inference.contract.functions.reassign(
                [ReassignRecord(rec.iid, rec.executor, self.ledger.group[i]).to_chain()]), gas=GAS)
            assert self.inference.outcome(receipt, "reassign").rejected == {rec.iid: "NotTA"}
            await self.check_record(rec)

        self.run(go())

    # ------------------------------------------------------------ hosts, epochs, downtime

    @rule(mi=st.integers(0, 3))
    def withdraw_earnings(self, mi: int) -> None:
        member = self.ledger.members[mi]

        async def go() -> None:
            amount = self.earnings[member.address]
            if amount == 0:
                await refused("NothingToWithdraw", self.as_(member).withdraw_earnings())
                return
            before = await self.eth_balance(member.address)
            receipt = await self.sender(member).transact(
                self.inference.contract.functions.withdraw_earnings(), gas=GAS)
            assert await self.eth_balance(member.address) == before + amount - gas_paid(receipt)
            self.earnings[member.address] = 0

        self.run(go())

    @precondition(lambda self: self.epoch < 3)
    @rule()
    def advance_epoch(self) -> None:
        """Governance moves the epoch and forms the same group: statuses are ACTIVE again."""
        lg = self.ledger

        async def go() -> None:
            await lg.epochs.sender.transact(lg.epochs.contract.functions.advance_epoch(), gas=GAS)
            self.epoch += 1
            await lg.epochs.sender.transact(lg.epochs.contract.functions.add_group_members(
                self.epoch, lg.model, lg.group, lg.weights), gas=GAS)
            self.active = {m: True for m in lg.group}

        self.run(go())

    @precondition(lambda self: not all(self.active.values()))
    @rule(mi=st.integers(0, 3))
    def reactivate(self, mi: int) -> None:
        """Governance sets a slashed executor ACTIVE again; its next miss this epoch must not slash it again."""
        member = [m for m in self.ledger.group if not self.active[m]][mi % sum(not a for a in self.active.values())]
        fn = self.ledger.epochs.contract.functions.governance_set_status([member], int(MemberStatus.ACTIVE))
        self.run(self.ledger.epochs.sender.transact(fn, gas=GAS))
        self.active[member] = True

    @rule(mi=st.integers(0, 3), what=st.sampled_from(["set_status", "advance_epoch", "start", "invalidate"]))
    def stranger_governs(self, mi: int, what: str) -> None:
        """Status, epoch, start batches and invalidation belong to Inference / the owner / hosts / Validation."""
        lg = self.ledger
        member = lg.group[mi]
        if what == "set_status":
            fn, reason = lg.epochs.contract.functions.set_status(member, int(MemberStatus.INACTIVE)), "NotInference"
        elif what == "advance_epoch":
            fn, reason = lg.epochs.contract.functions.advance_epoch(), "NotOwner"
        elif what == "invalidate":
            iid = self.recs[-1].iid if self.recs else keccak(b"none")
            fn, reason = self.inference.contract.functions.invalidate(iid, True), "NotValidation"
        else:
            fn, reason = self.inference.contract.functions.start_inferences([], [], []), "NotHost"

        async def read() -> tuple[Any, ...]:
            return (await lg.epochs.current_epoch(), await lg.epochs.status_of(self.epoch, member),
                    await self.inference.earnings(member), await self.inference.balance_of(lg.client.address))

        self.run(mined_refusal(reason, self.sender(self.stranger), fn, read))

    # ------------------------------------------------------------ invariant

    @invariant()
    def funds_conserved(self) -> None:
        async def check() -> None:
            held = await self.eth_balance(self.inference.address)
            balances = {c: await self.inference.balance_of(c) for c in self.balances}
            earnings = {m: await self.inference.earnings(m) for m in self.earnings}
            reserved = sum(r.reserved_tokens for r in self.recs if r.status == InferenceStatus.STARTED) * self.price()
            assert held == sum(balances.values()) + reserved + sum(earnings.values())
            assert balances == self.balances
            assert earnings == self.earnings

        self.run(check())


@pytest.fixture(scope="module")
def ledger_world(_base_chain, genesis) -> World:  # type: ignore[no-untyped-def]
    """The ledger with no downtime grace and p0 = 1 % (about every miss fails MissedStatTest and slashes at once),
    deployed once per module."""

    async def build(backend: EthTesterBackend, sender_for: Any) -> dict[str, Any]:
        data = await build_ledger(_base_chain, genesis, backend, sender_for, downtime_grace_blocks=0,
                                  missed_p0_bps=P0_BPS)
        table = pack_critical_values(critical_values(P0_BPS, ALPHA_BPS))
        await data["ledger"].inference._transact("set_missed_test", table, P0_BPS, ALPHA_BPS, z_alpha_e4(ALPHA_BPS))
        return data

    return prepare_world(_base_chain, build)


def test_inference_machine(ledger_world: World) -> None:
    run_machine(lambda: InferenceMachine(ledger_world), machine_settings(fast=5, full=100, steps=25, full_steps=60))
