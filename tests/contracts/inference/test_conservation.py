"""Property: funds are conserved over random sequences of deposit / start / finish / expire / reassign /
withdraw / withdraw_earnings — the contract's ETH always equals client balances + open reservations + host
earnings, and every client balance matches a model of the rules."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import SimpleNamespace

import eth  # noqa: F401  (py-evm raises the recursion limit on import: do it before hypothesis runs)
import py_ecc  # noqa: F401  (same)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inference_ledger import ETH, Ledger, make_ledger

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.inference import FinishRecord, InferenceStatus, ReassignRecord, StartRecord
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.deploy import bind, deploy_network
from dinfer.chain.txqueue import TxSender
from dinfer.genesis import load_genesis
from support import events

ops = st.lists(
    st.one_of(
        st.tuples(st.just("deposit"), st.integers(0, 1), st.integers(1, 10**13)),
        st.tuples(st.just("start"), st.integers(0, 1), st.integers(0, 3000), st.integers(1, 3000)),
        st.tuples(st.just("finish"), st.integers(0, 50), st.integers(0, 3000), st.integers(0, 3000)),
        st.tuples(st.just("expire"), st.integers(0, 50)),
        st.tuples(st.just("reassign"), st.integers(0, 50)),
        st.tuples(st.just("withdraw"), st.integers(0, 1), st.integers(1, 100)),
        st.tuples(st.just("earnings"), st.integers(0, 3)),
    ),
    min_size=4,
    max_size=14,
)


@dataclass
class Model:
    balances: dict[str, int]
    records: list[StartRecord]


async def fresh_ledger() -> tuple[EthTesterBackend, Ledger]:
    chain = await EthTesterBackend.start()
    a = chain.accounts
    actors = SimpleNamespace(owner=a[0], host=a[1], host2=a[2], client=a[3], non_owner=a[4], treasury=a[5])
    senders: dict[str, TxSender] = {}

    def sender_for(k):  # type: ignore[no-untyped-def]
        return senders.setdefault(k.address, TxSender(chain.w3, k, poll_interval=0.01))

    genesis = load_genesis()
    deployment = await deploy_network(chain.w3, sender_for(a[0]), genesis, treasury=a[5].address)
    registry = RegistryClient(bind(chain.w3, "Registry", deployment.address("Registry")), sender_for(a[0]))
    return chain, await make_ledger(chain, registry, genesis, actors, sender_for)


async def check_conserved(ledger: Ledger, model: Model) -> None:
    inf = ledger.inference
    held = await ledger.chain.w3.eth.get_balance(inf.address)
    clients = 0
    for client, expected in model.balances.items():
        actual = await inf.balance_of(client)
        assert actual == expected, client
        clients += actual
    reserved = 0
    for rec in model.records:
        info = await inf.get_inference(rec.inference_id)
        if info.status == InferenceStatus.STARTED:
            reserved += info.reserved
    earned = sum([await inf.earnings(m.address) for m in ledger.members])
    assert held == clients + reserved + earned


async def run(sequence: list[tuple]) -> None:  # type: ignore[type-arg]
    chain, ledger = await fresh_ledger()
    clients = [ledger.client, ledger.non_owner]
    model = Model({ledger.client.address: ETH, ledger.non_owner.address: 0}, [])
    expiration = await ledger.registry.param("expiration_blocks")
    for op in sequence:
        kind = op[0]
        if kind == "deposit":
            await ledger.as_(clients[op[1]]).deposit(op[2])
            model.balances[clients[op[1]].address] += op[2]
        elif kind == "start":
            rec = await ledger.record(client=clients[op[1]], prompt=op[2], max_tokens=op[3])
            receipt = await ledger.start(rec)
            if events(ledger.inference.contract, receipt, "InferenceStarted"):
                model.balances[clients[op[1]].address] -= (op[2] + op[3]) * ledger.price
                model.records.append(rec)
        elif kind in ("finish", "expire", "reassign") and model.records:
            rec = model.records[op[1] % len(model.records)]
            info = await ledger.inference.get_inference(rec.inference_id)
            if info.status != InferenceStatus.STARTED:
                continue
            if kind == "finish":
                receipt = await ledger.as_(ledger.member(info.executor)).finish_inferences(
                    [FinishRecord(rec.inference_id, op[2], op[3])]
                )
                if events(ledger.inference.contract, receipt, "InferenceFinished"):
                    model.balances[info.client] += info.reserved - (op[2] + op[3]) * ledger.price
            elif kind == "expire":
                await chain.mine(expiration)
                await ledger.inference.expire(rec.inference_id)
                model.balances[info.client] += info.reserved
            else:
                nxt = await ledger.next_after(rec.inference_id, info.executor)
                if nxt is not None:
                    await ledger.as_(ledger.ta).reassign([ReassignRecord(rec.inference_id, info.executor, nxt)])
        elif kind == "withdraw":
            who = clients[op[1]]
            amount = model.balances[who.address] * op[2] // 100
            if amount:
                await ledger.as_(who).withdraw(amount)
                model.balances[who.address] -= amount
        elif kind == "earnings":
            member = ledger.members[op[1]]
            if await ledger.inference.earnings(member.address):
                await ledger.as_(member).withdraw_earnings()
        await check_conserved(ledger, model)
    await chain.close()


@given(sequence=ops)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_funds_conserved(sequence: list[tuple]) -> None:  # type: ignore[type-arg]
    asyncio.run(run(sequence))
