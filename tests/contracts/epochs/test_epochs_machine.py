"""State machine over the Epochs reward funds: fund / PoC cycle ended by switch_epoch (too early and again: refused) /
withdraw rewards / governance INVALID and clear, plus a stranger setting statuses or moving the epoch.

After every step, to the wei: everything funded == reward pool + Σ credited rewards + Σ withdrawn, and the contract's
ETH == pool + Σ credited rewards. Every settlement pays min(R × w / W (× coverage bonus), what is left) in participant
order, 0 to a participant INVALID in the ended epoch, and each epoch is settled once (a second switch in the same
cycle is refused AlreadySwitched and changes nothing). Withdrawals pay exactly what was credited, once. A stranger's
set_status (NotInference), governance status, epoch move or group change (NotOwner) is refused and changes nothing.
Replaces test_rewards_conservation.py (same world, settlement formula and books, as rules on a snapshot).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from epochs_helpers import SMOL, TINY, address_of, mine_to, next_poc_start, register_host_with_nodes, switch_height
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule
from tests.contracts.machine_support import (
    GAS,
    ChainMachine,
    World,
    gas_paid,
    machine_settings,
    mined_refusal,
    prepare_world,
    refused,
    run_machine,
)

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.epochs import EpochsClient, MemberStatus, model_key
from dinfer.chain.contracts.registry import HardwareNode, RegistryClient
from dinfer.chain.deploy import bind, deploy_contract
from support import events

BPS = 10_000
ROOT = b"\x44" * 32
HOSTS = (1, 2, 6)  # chain.accounts indices of the three hosts
NODES = ((0, "a"), (0, "b"), (1, "a"), (1, "b"), (2, "a"))  # (host, node): "a" serves SmolLM, "b" the tiny model
OUTSIDER = 4  # never a participant
STRANGER = 9
SWITCH_GAS = 10_000_000


def batch_lists(min_size: int = 0) -> st.SearchStrategy[list[tuple[int, int]]]:
    """PoC batches of one cycle: (NODES index, nonce count), at most one per node."""
    return st.lists(st.tuples(st.integers(0, len(NODES) - 1), st.integers(1, 50)), unique_by=lambda b: b[0],
                    min_size=min_size, max_size=len(NODES))


@dataclass
class Books:
    """The test's own ledger of the reward funds."""

    funded: int = 0
    withdrawn: int = 0


class EpochsMachine(ChainMachine):
    def __init__(self, world: World) -> None:
        super().__init__(world)
        a = self.accounts
        self.owner = self.sender(a[0])
        self.registry = RegistryClient(bind(self.w3, "Registry", world.data["registry"]), self.owner)
        self.epochs = EpochsClient(bind(self.w3, "Epochs", world.data["epochs"]), self.owner)
        self.poc = bind(self.w3, "PoC", world.data["poc"])
        self.hosts = [a[i] for i in HOSTS]
        self.payees = [*self.hosts, a[OUTSIDER]]
        self.stranger = a[STRANGER]
        self.books = Books()
        self.reward = 0
        self.settled: set[int] = set()

    # ------------------------------------------------------------ rules

    @initialize(reward=st.sampled_from([10**15, 10**16, 4 * 10**16]), funding=st.integers(1, 6 * 10**16))
    def set_reward(self, reward: int, funding: int) -> None:
        """Governance sets the epoch reward; a funder seeds the pool."""
        self.reward = reward
        self.run(self.registry.propose_param("epoch_reward_wei", reward))
        self.fund(STRANGER, funding)

    @initialize(batches=batch_lists(min_size=1), then=batch_lists(), failed=st.lists(st.integers(0, len(NODES) - 1),
                unique=True, max_size=2), invalid=st.sampled_from([None, None, *range(len(HOSTS))]))
    def first_cycles(self, batches: list[tuple[int, int]], then: list[tuple[int, int]], failed: list[int],
                     invalid: int | None) -> None:
        """A first cycle forms the groups (the genesis epoch has no participants) that a second one settles."""
        self.poc_cycle(batches, [], None)
        self.poc_cycle(then, failed, invalid)

    @rule(payer=st.integers(0, 9), amount=st.integers(1, 3 * 10**16))
    def fund(self, payer: int, amount: int) -> None:
        fn = self.epochs.contract.functions.fund_rewards()
        self.run(self.sender(self.accounts[payer]).transact(fn, value=amount, gas=GAS))
        self.books.funded += amount

    @rule(batches=batch_lists(),
          failed=st.lists(st.integers(0, len(NODES) - 1), unique=True, max_size=2),
          invalid=st.sampled_from([None, None, None, *range(len(HOSTS))]))
    def poc_cycle(self, batches: list[tuple[int, int]], failed: list[int], invalid: int | None) -> None:
        """One PoC cycle (random batches, some failed by another host) ended by switch_epoch; check the payout. A
        switch before SET_NEW_VALIDATORS (WrongStage) or a second one in the cycle (AlreadySwitched) is refused."""

        async def go() -> None:
            g = await self.registry.param("poc_generate_blocks")
            start = await next_poc_start(self.epochs, self.registry, self.backend)
            epoch = await self.epochs.current_epoch()
            for node, nonces in batches:
                h, node_id = NODES[node]
                fn = self.poc.functions.submit_poc_batch(epoch + 1, node_id, SMOL if node_id == "a" else TINY, nonces,
                                                         ROOT)
                await self.sender(self.hosts[h]).transact(fn, gas=GAS)
            await mine_to(self.backend, start + g)
            for node in failed:
                if node in {b[0] for b in batches}:
                    h, node_id = NODES[node]
                    fn = self.poc.functions.submit_poc_validation(epoch + 1, self.hosts[h].address, node_id, 0, 4)
                    await self.sender(self.hosts[(h + 1) % len(HOSTS)]).transact(fn, gas=GAS)
            if invalid is not None:  # governance marks a participant of the ending epoch INVALID: it is paid 0
                fn = self.epochs.contract.functions.governance_set_status([self.hosts[invalid].address],
                                                                          int(MemberStatus.INVALID))
                await self.owner.transact(fn, gas=GAS)
            # POC_VALIDATE: too early to switch
            await mined_refusal("WrongStage", self.sender(self.stranger), self.epochs.contract.functions.switch_epoch(),
                                self._read_switch)
            pool_before = await self.epochs.reward_pool()
            await mine_to(self.backend, await switch_height(self.epochs, self.registry, self.backend))
            receipt = await self.epochs.switch_epoch(gas=SWITCH_GAS)
            assert epoch not in self.settled, f"epoch {epoch} settled twice"
            self.settled.add(epoch)
            await self.check_settlement(receipt, epoch, pool_before)
            # the same cycle again: refused, nothing settles twice
            await mined_refusal("AlreadySwitched", self.sender(self.stranger),
                                self.epochs.contract.functions.switch_epoch(), self._read_switch)

        self.run(go())

    async def check_settlement(self, receipt: dict[str, Any], ended: int, pool_before: int) -> None:
        """Every RewardSettled amount equals the hand formula, capped by what is left of the pool."""
        bonus = await self.registry.param("coverage_bonus_bps")
        settled = events(self.epochs.contract, receipt, "RewardSettled")
        participants = await self.epochs.participants(ended)
        assert [e["participant"] for e in settled] == participants
        assert {e["epoch"] for e in settled} <= {ended}
        weights = [await self.epochs.participant_weight(ended, p) for p in participants]
        total, r, left = sum(weights), min(self.reward, pool_before), pool_before
        for e, p, w in zip(settled, participants, weights, strict=True):
            full = (await self.epochs.participant_coverage(ended, p)).full
            invalid = await self.epochs.status_of(ended, p) == MemberStatus.INVALID
            amount = 0 if invalid else r * w // total * ((BPS + bonus) if full else BPS) // BPS
            assert (e["weight"], e["coverage_bonus"], e["amount"]) == (w, full, min(amount, left))
            left -= e["amount"]
        assert await self.epochs.reward_pool() == left

    async def _read_switch(self) -> tuple[int, int, int]:
        """What a switch changes: the epoch, the pool (settlement) and the switched cycle."""
        return (await self.epochs.current_epoch(), await self.epochs.reward_pool(), await self.epochs.switched_cycle())

    async def _read(self) -> tuple[Any, ...]:
        epoch = await self.epochs.current_epoch()
        return (epoch, await self.epochs.reward_pool(), [await self.epochs.rewards_of(h.address) for h in self.hosts],
                [await self.epochs.status_of(epoch, h.address) for h in self.hosts])

    @rule(who=st.integers(0, len(HOSTS)))
    def withdraw(self, who: int) -> None:
        account = self.payees[who]

        async def go() -> None:
            owed = await self.epochs.rewards_of(account.address)
            if owed == 0:
                await refused("NothingToWithdraw", self.epochs.with_sender(self.sender(account)).withdraw_rewards())
                return
            before = await self.eth_balance(account.address)
            receipt = await self.sender(account).transact(self.epochs.contract.functions.withdraw_rewards(), gas=GAS)
            assert events(self.epochs.contract, receipt, "RewardsWithdrawn") == [
                {"participant": account.address, "amount": owed}]
            assert await self.eth_balance(account.address) == before + owed - gas_paid(receipt)
            assert await self.epochs.rewards_of(account.address) == 0
            self.books.withdrawn += owed

        self.run(go())

    @rule(h=st.integers(0, len(HOSTS) - 1), clear=st.sampled_from([True, True, False]))
    def governance_invalid(self, h: int, clear: bool) -> None:
        """The owner marks a host INVALID (its next settlement pays 0, it leaves the next groups) or clears it."""
        host = self.hosts[h].address

        async def go() -> None:
            epoch = await self.epochs.current_epoch()
            invalid = await self.epochs.status_of(epoch, host) == MemberStatus.INVALID
            if clear and not invalid:
                await refused("NotInvalid", self.epochs.clear_invalid(host))
            elif clear:
                await self.owner.transact(self.epochs.contract.functions.clear_invalid(host), gas=GAS)
            else:
                fn = self.epochs.contract.functions.governance_set_status([host], int(MemberStatus.INVALID))
                await self.owner.transact(fn, gas=GAS)
                assert await self.epochs.status_of(epoch, host) == MemberStatus.INVALID

        self.run(go())

    @rule(h=st.integers(0, len(HOSTS) - 1),
          what=st.sampled_from(["set_status", "governance_set_status", "advance_epoch", "add_group_members"]))
    def stranger_governs(self, h: int, what: str) -> None:
        host = self.hosts[h].address
        f = self.epochs.contract.functions

        async def go() -> None:
            epoch = await self.epochs.current_epoch()
            fn, reason = {
                "set_status": (f.set_status(host, int(MemberStatus.INVALID)), "NotInference"),
                "governance_set_status": (f.governance_set_status([host], int(MemberStatus.INACTIVE)), "NotOwner"),
                "advance_epoch": (f.advance_epoch(), "NotOwner"),
                "add_group_members": (f.add_group_members(epoch + 1, model_key(SMOL), [address_of("x", 0)], [1]),
                                      "NotOwner"),
            }[what]
            await mined_refusal(reason, self.sender(self.stranger), fn, self._read)

        self.run(go())

    # ------------------------------------------------------------ invariant

    @invariant()
    def funds_conserved(self) -> None:
        async def check() -> None:
            pool = await self.epochs.reward_pool()
            owed = sum([await self.epochs.rewards_of(a.address) for a in self.payees])
            assert self.books.funded == pool + owed + self.books.withdrawn
            assert await self.eth_balance(self.epochs.address) == pool + owed

        self.run(check())


@pytest.fixture(scope="module")
def epochs_world(_base_chain) -> World:  # type: ignore[no-untyped-def]
    """Epochs + PoC, three hosts with nodes and a 30-block epoch, deployed once per module."""

    async def build(backend: EthTesterBackend, sender_for: Any) -> dict[str, Any]:
        owner = sender_for(backend.accounts[0])
        registry = RegistryClient(bind(backend.w3, "Registry", _base_chain.registry_address), owner)
        await registry.propose_param("epoch_length_blocks", 30)
        epochs = EpochsClient(await deploy_contract(backend.w3, owner, "Epochs", registry.address), owner)
        poc = await deploy_contract(backend.w3, owner, "PoC", epochs.address, registry.address)
        await epochs.set_poc(poc.address)
        for h, index in enumerate(HOSTS):
            nodes = [HardwareNode(node, (SMOL if node == "a" else TINY,), "cpu", 10 + h) for i, node in NODES if i == h]
            await register_host_with_nodes(registry, sender_for(backend.accounts[index]), nodes)
        return {"registry": registry.address, "epochs": epochs.address, "poc": poc.address}

    return prepare_world(_base_chain, build)


def test_epochs_machine(epochs_world: World) -> None:
    run_machine(lambda: EpochsMachine(epochs_world), machine_settings(fast=3, full=60, steps=6, full_steps=25))
