"""Property: over random funding, PoC cycles (random batches, failed validations) with switch_epoch, and withdrawals,
the reward funds are conserved to the wei and every settlement pays min(R × w / W (× bonus), what is left)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from epochs_helpers import SMOL, TINY, mine_to, next_poc_start, register_host_with_nodes, switch_height
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.epochs import EpochsClient
from dinfer.chain.contracts.registry import HardwareNode, RegistryClient
from dinfer.chain.deploy import bind, deploy_contract
from dinfer.chain.txqueue import TxSender
from dinfer.crypto import Keypair
from dinfer.errors import TxReverted
from support import events

BPS = 10_000
ROOT = b"\x44" * 32
HOSTS = (1, 2, 6)  # chain.accounts indices of the three hosts
NODES = ((0, "a"), (0, "b"), (1, "a"), (1, "b"), (2, "a"))  # (host, node): "a" serves SmolLM, "b" the tiny model
OUTSIDER = 4  # never a participant
GAS = 1_000_000  # explicit gas: py-evm's estimation re-executes every call many times
SWITCH_GAS = 10_000_000


@dataclass(frozen=True)
class Phase:
    """Some fundings, one PoC cycle ended by switch_epoch, then some withdrawals."""

    funds: tuple[tuple[int, int], ...]  # (payer account index, wei)
    batches: tuple[tuple[int, int], ...]  # (NODES index, nonce count)
    failed: tuple[int, ...]  # NODES indices whose batch another host fails
    withdrawals: tuple[int, ...]  # HOSTS index, or len(HOSTS) for the outsider


phases = st.builds(
    Phase,
    funds=st.lists(st.tuples(st.integers(0, 9), st.integers(1, 3 * 10**16)), max_size=2).map(tuple),
    batches=st.lists(st.tuples(st.integers(0, len(NODES) - 1), st.integers(1, 50)), unique_by=lambda b: b[0],
                     max_size=len(NODES)).map(tuple),
    failed=st.lists(st.integers(0, len(NODES) - 1), unique=True, max_size=2).map(tuple),
    withdrawals=st.lists(st.integers(0, len(HOSTS)), max_size=2).map(tuple),
)


@dataclass
class _Prepared:
    snapshot: int
    registry: str
    epochs: str


_prepared: dict[int, _Prepared] = {}


async def _prepare(base: Any) -> _Prepared:
    """Epochs + PoC, three hosts with nodes and a shorter epoch, deployed once on top of the suite's base chain."""
    backend: EthTesterBackend = base.backend
    backend.tester.revert_to_snapshot(base.snapshot)
    owner = TxSender(backend.w3, backend.accounts[0], poll_interval=0.01)
    registry = RegistryClient(bind(backend.w3, "Registry", base.registry_address), owner)
    await registry.propose_param("epoch_length_blocks", 30)
    epochs = EpochsClient(await deploy_contract(backend.w3, owner, "Epochs", registry.address), owner)
    poc = await deploy_contract(backend.w3, owner, "PoC", epochs.address, registry.address)
    await epochs.set_poc(poc.address)
    for h, index in enumerate(HOSTS):
        nodes = [HardwareNode(node, (SMOL if node == "a" else TINY,), "cpu", 10 + h) for i, node in NODES if i == h]
        await register_host_with_nodes(registry, TxSender(backend.w3, backend.accounts[index], poll_interval=0.01),
                                       nodes)
    return _Prepared(backend.tester.take_snapshot(), registry.address, epochs.address)


class _Books:
    """The test's own ledger of the reward funds, checked against the contract after every step."""

    def __init__(self, backend: EthTesterBackend, epochs: EpochsClient, accounts: list[Keypair]) -> None:
        self.backend, self.epochs, self.accounts = backend, epochs, accounts
        self.funded = 0
        self.withdrawn = 0

    async def check(self) -> None:
        pool = await self.epochs.reward_pool()
        owed = sum([await self.epochs.rewards_of(a.address) for a in self.accounts])
        assert self.funded == pool + owed + self.withdrawn
        assert await self.backend.w3.eth.get_balance(self.epochs.address) == pool + owed


async def _check_settlement(epochs: EpochsClient, receipt: dict[str, Any], ended: int, pool_before: int,
                            reward: int, bonus: int) -> None:
    """Every RewardSettled amount equals the hand formula, capped by what is left of the pool."""
    settled = events(epochs.contract, receipt, "RewardSettled")
    participants = await epochs.participants(ended)
    assert [e["participant"] for e in settled] == participants
    weights = [await epochs.participant_weight(ended, p) for p in participants]
    total, r, left = sum(weights), min(reward, pool_before), pool_before
    for event, p, w in zip(settled, participants, weights, strict=True):
        full = (await epochs.participant_coverage(ended, p)).full
        amount = r * w // total * ((BPS + bonus) if full else BPS) // BPS
        assert (event["weight"], event["coverage_bonus"], event["amount"]) == (w, full, min(amount, left))
        left -= event["amount"]
    assert await epochs.reward_pool() == left


async def _run(base: Any, reward: int, plan: list[Phase]) -> None:
    backend: EthTesterBackend = base.backend
    key = id(backend)
    if key not in _prepared:
        _prepared[key] = await _prepare(base)
    prepared = _prepared[key]
    backend.tester.revert_to_snapshot(prepared.snapshot)
    senders = {i: TxSender(backend.w3, a, poll_interval=0.01) for i, a in enumerate(backend.accounts)}
    registry = RegistryClient(bind(backend.w3, "Registry", prepared.registry), senders[0])
    await registry.propose_param("epoch_reward_wei", reward)
    poc = await EpochsClient(bind(backend.w3, "Epochs", prepared.epochs), senders[0]).poc_contract()
    bonus = await registry.param("coverage_bonus_bps")
    g = await registry.param("poc_generate_blocks")
    epochs = EpochsClient(bind(backend.w3, "Epochs", prepared.epochs), senders[0])
    hosts = [backend.accounts[i] for i in HOSTS]
    books = _Books(backend, epochs, [*hosts, backend.accounts[OUTSIDER]])
    for phase in plan:
        for payer, amount in phase.funds:
            await senders[payer].transact(epochs.contract.functions.fund_rewards(), value=amount, gas=GAS)
            books.funded += amount
            await books.check()
        start = await next_poc_start(epochs, registry, backend)
        epoch = await epochs.current_epoch()
        for node, nonces in phase.batches:
            h, node_id = NODES[node]
            model = SMOL if node_id == "a" else TINY
            await senders[HOSTS[h]].transact(
                poc.functions.submit_poc_batch(epoch + 1, node_id, model, nonces, ROOT), gas=GAS
            )
        await mine_to(backend, start + g)
        submitted = {b[0] for b in phase.batches}
        for node in phase.failed:
            if node in submitted:
                h, node_id = NODES[node]
                validator = senders[HOSTS[(h + 1) % len(HOSTS)]]
                await validator.transact(
                    poc.functions.submit_poc_validation(epoch + 1, hosts[h].address, node_id, 0, 4), gas=GAS
                )
        pool_before = await epochs.reward_pool()
        await mine_to(backend, await switch_height(epochs, registry, backend))
        receipt = await epochs.switch_epoch(gas=SWITCH_GAS)
        await _check_settlement(epochs, receipt, epoch, pool_before, reward, bonus)
        await books.check()
        for who in phase.withdrawals:
            account = books.accounts[who]
            owed = await epochs.rewards_of(account.address)
            client = epochs.with_sender(senders[backend.accounts.index(account)])
            if owed == 0:
                with pytest.raises(TxReverted.named("NothingToWithdraw")):
                    await client.withdraw_rewards()
                continue
            receipt = await client.sender.transact(epochs.contract.functions.withdraw_rewards(), gas=GAS)
            assert events(epochs.contract, receipt, "RewardsWithdrawn") == [
                {"participant": account.address, "amount": owed}
            ]
            books.withdrawn += owed
            await books.check()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(reward=st.sampled_from([10**15, 10**16, 4 * 10**16]), plan=st.lists(phases, min_size=2, max_size=3))
def test_reward_funds_are_conserved(_base_chain, reward: int, plan: list[Phase]) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(_run(_base_chain, reward, plan))
