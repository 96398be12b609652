"""State machine over Validation and the Inference escrow it charges: run (start + finish) / validate (pass, fail) /
dispute + tie-break / withdraw earnings or settle debt, plus calls by parties that may not make them.

Every validator is sampled (rate 10000) and two confirmed invalid inferences reach the threshold, so disputes,
confirmations, debts and INVALID slashing all happen in short sequences. The reference model follows
docs/contracts.md "Validation" (fees of validator_share_bps from the executor's earnings, refund before fees, the
shortfall as debt) and predicts every outcome or exact revert. After every step, to the wei: the Inference
contract's ETH == the client's balance + Σ host earnings (validations only move wei between those; debts are
claims, never wei) and each equals the model. An inference is invalidated (refunded) once, each validator is paid at
most once per inference as a sampled validator, an executor is slashed for invalidity at most once per epoch, and a
stranger cannot validate, invalidate or charge (named revert, state unchanged).
Replaces test_validation_conservation.py (its invariant is the first one above).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, initialize, invariant, multiple, precondition, rule
from inference_ledger import COLLATERAL, ETH
from test_inference_machine import build_ledger, ledger_for
from tests.contracts.machine_support import (
    GAS,
    ChainMachine,
    OncePerEpoch,
    World,
    machine_settings,
    mined_refusal,
    prepare_world,
    refused,
    run_machine,
)
from validation_helpers import tiebreaker

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.epochs import MemberStatus
from dinfer.chain.contracts.inference import (
    FinishRecord,
    InferenceStatus,
    StartRecord,
    ValidationClient,
    ValidationOutcome,
    start_batch_args,
)
from dinfer.chain.deploy import bind
from dinfer.selection import pick_executor
from support import events

STRANGER = 9
SHARE_BPS, THRESHOLD, WINDOW = 500, 2, 100  # validator_share_bps (genesis), invalid_threshold (set here), window
MAX_RUNS = 5  # finished inferences per example: the steps go to validating them


@dataclass
class Done:
    """The model of one finished inference and its validation state."""

    start: StartRecord
    executor: str
    cost: int
    finish_block: int
    status: InferenceStatus = InferenceStatus.FINISHED
    outcome: ValidationOutcome = ValidationOutcome.NONE
    validated: set[str] = field(default_factory=set)
    first_invalid: str = ""
    tiebreaker: str = ""
    dispute_block: int = 0

    @property
    def iid(self) -> bytes:
        return self.start.inference_id


class ValidationMachine(ChainMachine):
    done = Bundle("done")

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.ledger = ledger_for(world, self.sender)
        lg = self.ledger
        self.validation = ValidationClient(bind(self.w3, "Validation", world.data["validation"]))
        self.stranger = self.accounts[STRANGER]
        self.client_balance = ETH
        self.earnings = {m: 0 for m in lg.group}
        self.debts = {m: 0 for m in lg.group}
        self.owed: dict[tuple[str, str], list[int]] = {}  # (executor, creditor) → [refund, fee]
        self.invalid_count = {m: 0 for m in lg.group}
        self.active = {m: True for m in lg.group}
        self.invalid_slashes = OncePerEpoch("invalidity")
        self.runs = 0

    # ------------------------------------------------------------ model of lib_escrow.charge

    def charge(self, executor: str, creditor: str, amount: int, to_client: bool) -> None:
        paid = min(amount, self.earnings[executor])
        self.earnings[executor] -= paid
        if to_client:
            self.client_balance += paid
        else:
            self.earnings[creditor] += paid
        if amount > paid:
            self.debts[executor] += amount - paid
            self.owed.setdefault((executor, creditor), [0, 0])[0 if to_client else 1] += amount - paid

    def fee(self, d: Done) -> int:
        return d.cost * SHARE_BPS // 10_000

    # ------------------------------------------------------------ rules

    @initialize(target=done, completion=st.integers(0, 10))
    def first_run(self, completion: int) -> Any:
        return self.run_inference(completion)

    @precondition(lambda self: self.runs < MAX_RUNS)
    @rule(target=done, completion=st.integers(0, 10))
    def run_inference(self, completion: int) -> Any:
        """A started and finished inference (10 prompt tokens + ``completion``), executor by the spec."""
        lg = self.ledger

        async def go() -> Done | None:
            active = [self.active[m] for m in lg.group]
            rec = await lg.record(prompt=10, max_tokens=20, active=active)
            if pick_executor(rec.inference_id, lg.weights, active, lg.max_draws)[0] is None:
                return None
            await self.sender(lg.ta).transact(lg.inference.contract.functions.start_inferences(
                *start_batch_args([rec])), gas=GAS)
            receipt = await self.sender(lg.member(rec.executor)).transact(
                lg.inference.contract.functions.finish_inferences(
                    [FinishRecord(rec.inference_id, 10, completion).to_chain()]), gas=GAS)
            assert lg.inference.outcome(receipt, "finish").applied == (rec.inference_id,)
            cost = (10 + completion) * lg.price
            self.earnings[rec.executor] += cost
            self.client_balance -= cost
            return Done(rec, rec.executor, cost, receipt["blockNumber"])

        d = self.run(go())
        self.runs += 1
        return multiple() if d is None else multiple(d)

    def expected_validate(self, d: Done, who: str, block: int) -> str | None:
        tiebreak = d.outcome == ValidationOutcome.DISPUTED and who == d.tiebreaker
        anchor = d.dispute_block if tiebreak else d.finish_block
        if d.status != InferenceStatus.FINISHED:
            return "NotFinished"
        if who == d.executor:
            return "SelfValidation"
        if not tiebreak and who in d.validated:
            return "AlreadyValidated"
        if block > anchor + WINDOW:
            return "ValidationWindowClosed"
        if who not in self.active or not self.active[who]:
            return "NotSelected"
        return None

    async def _validate(self, d: Done, who: str, ok: bool) -> None:
        block = await self.block_number() + 1
        expected = self.expected_validate(d, who, block)
        client = self.validation.with_sender(self.sender(self.ledger.member(who)))
        if expected is not None:
            await refused(expected, client.validate(d.iid, ok, 500_000))
            return
        tiebreak = d.outcome == ValidationOutcome.DISPUTED and who == d.tiebreaker
        receipt = await self.sender(self.ledger.member(who)).transact(
            self.validation.contract.functions.validate(d.iid, ok, 500_000), gas=GAS)
        fee = self.fee(d)
        if tiebreak:
            if ok:
                d.outcome = ValidationOutcome.CONTRADICTED
            else:
                d.outcome = ValidationOutcome.CONFIRMED_INVALID
                await self._confirm(d, receipt)
            if fee:
                self.charge(d.executor, who, fee, False)
        else:
            d.validated.add(who)
            if not ok and d.outcome == ValidationOutcome.NONE:  # opens the dispute; the opener is paid on confirmation
                d.first_invalid, d.dispute_block = who, block
                active = [self.active[m] for m in self.ledger.group]
                d.tiebreaker = tiebreaker(self.ledger, d.iid, d.executor, who, active) or ""
                d.outcome = ValidationOutcome.DISPUTED if d.tiebreaker else ValidationOutcome.NO_TIEBREAKER
                state = await self.validation.validation_of(d.iid)
                assert (state.outcome, state.tiebreaker if d.tiebreaker else "") == (d.outcome, d.tiebreaker)
            elif fee:
                self.charge(d.executor, who, fee, False)
        await self.check_parties(d, who)

    async def _confirm(self, d: Done, receipt: dict[str, Any]) -> None:
        """Confirmed invalid: refund the client first, pay the opener, count, and at the threshold INVALID +
        slash once per epoch."""
        lg = self.ledger
        d.status = InferenceStatus.INVALIDATED
        self.charge(d.executor, lg.client.address, d.cost, True)
        fee = self.fee(d)
        if fee:
            self.charge(d.executor, d.first_invalid, fee, False)
        self.invalid_count[d.executor] += 1
        slashed = events(self.validation.contract, receipt, "InvalidSlashed")
        for e in slashed:
            self.invalid_slashes.record(e["epoch"], e["executor"], e["amount"])
            assert await lg.registry.collateral_of(e["executor"]) == COLLATERAL - self.invalid_slashes.total(
                e["executor"])
        if self.invalid_count[d.executor] >= THRESHOLD and self.active[d.executor]:
            assert [e["executor"] for e in slashed] == [d.executor]
            self.active[d.executor] = False
            assert await lg.epochs.status_of(1, d.executor) == MemberStatus.INVALID
        elif self.invalid_count[d.executor] > THRESHOLD:
            assert not slashed  # once per epoch
        assert (await lg.inference.get_inference(d.iid)).status == InferenceStatus.INVALIDATED

    async def check_parties(self, d: Done, who: str) -> None:
        inf = self.ledger.inference
        assert await inf.debt_of(d.executor) == self.debts[d.executor]
        assert await inf.earnings(who) == self.earnings[who]
        state = await self.validation.validation_of(d.iid)
        assert state.outcome == d.outcome

    @rule(d=done, vi=st.integers(0, 3), ok=st.sampled_from([True, False, False]))
    def validate(self, d: Done, vi: int, ok: bool) -> None:
        self.run(self._validate(d, self.ledger.group[vi], ok))

    @rule(d=done, vi=st.integers(0, 3), verdict=st.sampled_from([False, False, True]))
    def dispute(self, d: Done, vi: int, verdict: bool) -> None:
        """A failed validation (opening the dispute when none is open), then the tie-breaker's ``verdict``."""

        async def go() -> None:
            if d.outcome == ValidationOutcome.NONE:
                others = [m for m in self.ledger.group if m != d.executor]
                await self._validate(d, others[vi % len(others)], False)
            if d.outcome == ValidationOutcome.DISPUTED:
                await self._validate(d, d.tiebreaker, verdict)

        self.run(go())

    @rule(mi=st.integers(0, 3), ci=st.integers(0, 4), settle=st.booleans())
    def payout(self, mi: int, ci: int, settle: bool) -> None:
        """``settle_debt(member, creditor)`` by anyone, or the member's own ``withdraw_earnings``."""
        if settle:
            self.settle_debt(mi, ci)
        else:
            self.withdraw_earnings(mi)

    def withdraw_earnings(self, mi: int) -> None:
        member = self.ledger.members[mi]

        async def go() -> None:
            client = self.ledger.as_(member)
            if self.earnings[member.address] == 0:
                await refused("NothingToWithdraw", client.withdraw_earnings())
            elif self.debts[member.address]:
                await refused("OutstandingDebt", client.withdraw_earnings())  # creditors are paid first
            else:
                await self.sender(member).transact(self.ledger.inference.contract.functions.withdraw_earnings(),
                                                   gas=GAS)
                self.earnings[member.address] = 0

        self.run(go())

    def settle_debt(self, ei: int, ci: int) -> None:
        lg = self.ledger
        executor = lg.group[ei]
        creditor = [*lg.group, lg.client.address][ci]
        refund_owed, fee_owed = self.owed.get((executor, creditor), [0, 0])
        refund = min(refund_owed, self.earnings[executor])
        fee = min(fee_owed, self.earnings[executor] - refund)

        async def go() -> None:
            if refund + fee == 0:
                await refused("NothingToSettle", lg.inference.settle_debt(executor, creditor))
                return
            await self.sender(self.stranger).transact(
                lg.inference.contract.functions.settle_debt(executor, creditor), gas=GAS)
            self.owed[(executor, creditor)] = [refund_owed - refund, fee_owed - fee]
            self.debts[executor] -= refund + fee
            self.earnings[executor] -= refund + fee
            if refund:
                self.client_balance += refund
            if fee:
                self.earnings[creditor] += fee
            assert await lg.inference.owed(executor, creditor) == (refund_owed - refund, fee_owed - fee)
            assert await lg.inference.debt_of(executor) == self.debts[executor]

        self.run(go())

    @rule(d=done, what=st.sampled_from(["validate", "invalidate", "pay_validator"]))
    def stranger_acts(self, d: Done, what: str) -> None:
        """Validation needs a group member; invalidate / pay_validator are Validation's alone."""
        inf = self.ledger.inference.contract.functions
        fn, reason = {
            "validate": (self.validation.contract.functions.validate(d.iid, False, 0), "NotSelected"),
            "invalidate": (inf.invalidate(d.iid, True), "NotValidation"),
            "pay_validator": (inf.pay_validator(d.executor, self.stranger.address, 1), "NotValidation"),
        }[what]
        if what == "validate" and d.status != InferenceStatus.FINISHED:
            reason = "NotFinished"

        async def read() -> tuple[Any, ...]:
            lg = self.ledger
            return (await lg.inference.get_inference(d.iid), await self.validation.validation_of(d.iid),
                    await lg.inference.earnings(d.executor), await lg.inference.earnings(self.stranger.address))

        self.run(mined_refusal(reason, self.sender(self.stranger), fn, read))

    # ------------------------------------------------------------ invariant

    @invariant()
    def funds_conserved(self) -> None:
        async def check() -> None:
            inf = self.ledger.inference
            held = await self.eth_balance(inf.address)
            client = await inf.balance_of(self.ledger.client.address)
            earnings = {m: await inf.earnings(m) for m in self.earnings}
            assert held == client + sum(earnings.values())  # nothing stays STARTED here
            assert (client, earnings) == (self.client_balance, self.earnings)
            assert sum(self.debts.values()) == sum(sum(v) for v in self.owed.values())

        self.run(check())


@pytest.fixture(scope="module")
def validation_world(_base_chain, genesis) -> World:  # type: ignore[no-untyped-def]
    """The ledger with every validator sampled and an invalid threshold of 2, deployed once per module."""

    async def build(backend: EthTesterBackend, sender_for: Any) -> dict[str, Any]:
        data = await build_ledger(_base_chain, genesis, backend, sender_for, validation_rate_bps=10_000,
                                  invalid_threshold=THRESHOLD)
        data["validation"] = await data["ledger"].inference.validation_address()
        return data

    return prepare_world(_base_chain, build)


def test_validation_machine(validation_world: World) -> None:
    run_machine(lambda: ValidationMachine(validation_world), machine_settings(fast=6, full=100, steps=20,
                                                                              full_steps=50))
