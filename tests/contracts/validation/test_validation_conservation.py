"""Property: funds are conserved over random sequences of start / finish / validate (pass and fail, tie-breaks) /
withdraw_earnings / settle_debt — the Inference contract's ETH always equals client balances + open reservations +
host earnings; validations only move wei between those, and debts are claims, never wei."""

from __future__ import annotations

import asyncio

import eth  # noqa: F401  (py-evm raises the recursion limit on import: do it before hypothesis runs)
import py_ecc  # noqa: F401  (same)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_conservation import fresh_ledger  # tests/contracts/inference (on sys.path via validation_helpers)
from validation_helpers import VLedger

from dinfer.chain.contracts.inference import InferenceStatus, StartRecord, ValidationOutcome
from dinfer.errors import TxReverted

ops = st.lists(
    st.one_of(
        st.tuples(st.just("run"), st.integers(1, 200)),
        st.tuples(st.just("validate"), st.integers(0, 20), st.integers(0, 3), st.booleans()),
        st.tuples(st.just("tiebreak"), st.integers(0, 20), st.booleans()),
        st.tuples(st.just("earnings"), st.integers(0, 3)),
        st.tuples(st.just("settle"), st.integers(0, 3), st.integers(0, 4)),
    ),
    min_size=4,
    max_size=12,
)


async def check_conserved(vl: VLedger, records: list[StartRecord]) -> None:
    base = vl.base
    inf = base.inference
    held = await base.chain.w3.eth.get_balance(inf.address)
    clients = await inf.balance_of(base.client.address)
    reserved = 0
    for rec in records:
        info = await inf.get_inference(rec.inference_id)
        reserved += info.reserved if info.status == InferenceStatus.STARTED else 0
    earned = sum([await inf.earnings(m) for m in base.group])
    assert held == clients + reserved + earned


async def run(sequence: list[tuple]) -> None:  # type: ignore[type-arg]
    chain, base = await fresh_ledger()
    vl = VLedger(base, await base.inference.validation_client())
    await vl.set_param("validation_rate_bps", 10_000)
    await vl.set_param("invalid_threshold", 2)
    records: list[StartRecord] = []
    for op in sequence:
        kind = op[0]
        if kind == "run":
            records.append(await vl.finished(prompt=10, completion=op[1] % 11))
        elif kind in ("validate", "tiebreak") and records:
            rec = records[op[1] % len(records)]
            if kind == "validate":
                who, ok = base.members[op[2]], op[3]
            else:
                state = await vl.validation.validation_of(rec.inference_id)
                if state.outcome != ValidationOutcome.DISPUTED:
                    continue
                who, ok = base.member(state.tiebreaker), op[2]
            try:
                await vl.as_(who).validate(rec.inference_id, ok, 500_000)
            except (TxReverted.named("SelfValidation"), TxReverted.named("AlreadyValidated"),
                    TxReverted.named("NotFinished"), TxReverted.named("NotSelected")):
                pass  # refusals are part of the sequence: they must change nothing
        elif kind == "earnings":
            member = base.members[op[1]]
            if await base.inference.earnings(member.address) and not await base.inference.debt_of(member.address):
                await base.as_(member).withdraw_earnings()
        elif kind == "settle":
            executor = base.group[op[1]]
            creditor = [*base.group, base.client.address][op[2]]
            if sum(await base.inference.owed(executor, creditor)) and await base.inference.earnings(executor):
                await base.inference.settle_debt(executor, creditor)
        await check_conserved(vl, records)
    await chain.close()


@given(sequence=ops)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_funds_conserved_with_validations(sequence: list[tuple]) -> None:  # type: ignore[type-arg]
    asyncio.run(run(sequence))
