"""The Inference test ledger: deployed contracts, an epoch group of four hosts, and signed-record helpers.

Actors (besides the suite's ``actors``): ``ta`` is a registered host that starts and reassigns inferences;
the group members are four registered hosts that act as executors.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from eth_utils import keccak

from dinfer.chain.backends import EthTesterBackend
from dinfer.chain.contracts.epochs import EpochsClient, MemberStatus, model_key
from dinfer.chain.contracts.inference import (
    FinishRecord,
    InferenceClient,
    StartRecord,
    deploy_ledger,
)
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.deploy import bind
from dinfer.chain.txqueue import TxSender
from dinfer.crypto import Keypair, sha256, sign_request
from dinfer.genesis import Genesis
from dinfer.selection import next_active_after, pick_executor
from support import build_once

ETH = 10**18
COLLATERAL = 10 * ETH
DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
WEIGHTS = [40, 30, 20, 10]
_bodies = itertools.count()


@dataclass
class Ledger:
    """The deployed contracts, the epoch group and role-named accounts; helpers build signed records."""

    chain: EthTesterBackend
    registry: RegistryClient
    epochs: EpochsClient
    inference: InferenceClient
    sender_for: Any
    owner: Keypair
    ta: Keypair
    client: Keypair
    non_owner: Keypair
    members: list[Keypair]
    """Funded executors (registered hosts) that can send finishes."""
    group: list[str]
    """Epoch-group member addresses in group order (the funded members first)."""
    weights: list[int]
    model: bytes
    price: int
    max_draws: int = 32
    params: dict[str, int] = field(default_factory=dict)

    def as_(self, who: Keypair) -> InferenceClient:
        return InferenceClient(self.inference.contract, self.sender_for(who))

    def member(self, address: str) -> Keypair:
        return next(m for m in self.members if m.address == address)

    async def block(self) -> dict[str, Any]:
        return dict(await self.chain.w3.eth.get_block("latest"))

    async def statuses(self) -> list[bool]:
        epoch = await self.epochs.current_epoch()
        return [await self.epochs.status_of(epoch, m) == MemberStatus.ACTIVE for m in self.group]

    async def plan(self, iid: bytes, active: list[bool] | None = None) -> tuple[str | None, list[str]]:
        """The Python spec's (executor, skipped) for this id over the current statuses (or ``active``)."""
        if active is None:
            active = await self.statuses()
        executor, skipped = pick_executor(iid, self.weights, active, self.max_draws)
        return (self.group[executor] if executor is not None else None), [self.group[i] for i in skipped]

    async def next_after(self, iid: bytes, failed: str) -> str | None:
        i = next_active_after(iid, self.weights, await self.statuses(), self.group.index(failed), self.max_draws)
        return None if i is None else self.group[i]

    async def record(
        self,
        *,
        client: Keypair | None = None,
        ta: Keypair | None = None,
        timestamp: int | None = None,
        prompt: int = 10,
        max_tokens: int = 20,
        model: bytes | None = None,
        executor: str | None = None,
        skipped: list[str] | None = None,
        where: Any = None,
        active: list[bool] | None = None,
    ) -> StartRecord:
        """A signed start record that follows the spec unless ``executor``/``skipped`` override it.

        ``where(executor, skipped) -> bool`` retries with fresh bodies until the spec's pick satisfies it;
        ``active`` (per group member) saves reading the statuses from the chain.
        """
        client = client or self.client
        ta = ta or self.ta
        if timestamp is None:
            timestamp = (await self.block())["timestamp"]
        if active is None:
            active = await self.statuses()
        for _ in range(500):
            body = f'{{"n": {next(_bodies)}}}'.encode()
            sig = sign_request(body, timestamp, ta.address, client.private_key)
            iid = keccak(sig)
            spec_executor, spec_skipped = await self.plan(iid, active)
            if where is None or where(spec_executor, spec_skipped):
                break
        else:
            raise AssertionError("no request body satisfied the wanted executor order")
        return StartRecord(
            body_hash=sha256(body),
            timestamp=timestamp,
            signature=sig,
            model_key=model or self.model,
            executor=executor if executor is not None else (spec_executor or self.members[0].address),
            skipped=tuple(spec_skipped if skipped is None else skipped),
            prompt_tokens_est=prompt,
            max_tokens=max_tokens,
        )

    async def start(self, *records: StartRecord, ta: Keypair | None = None) -> dict[str, Any]:
        return await self.as_(ta or self.ta).start_inferences(list(records))

    async def finish(
        self, rec: StartRecord, executor: str | None = None, prompt: int = 10, completion: int = 5
    ) -> dict[str, Any]:
        who = self.member(executor or rec.executor)
        return await self.as_(who).finish_inferences([FinishRecord(rec.inference_id, prompt, completion)])


async def register_host(registry: RegistryClient, sender: TxSender) -> None:
    await RegistryClient(registry.contract, sender).register_host("http://host", "{}", COLLATERAL)


async def make_ledger(chain, registry: RegistryClient, genesis: Genesis, actors, sender_for) -> Ledger:  # type: ignore[no-untyped-def]
    """Deploy the ledger on ``chain`` (built once per chain head, then restored from a snapshot: ``build_once``)."""
    owner_sender = sender_for(actors.owner)

    async def build() -> tuple[str, str]:
        epochs, inference = await deploy_ledger(chain.w3, owner_sender, registry)
        accounts = chain.accounts
        for who in [actors.host, actors.host2, accounts[6], accounts[7], accounts[8]]:
            await register_host(registry, sender_for(who))
        await epochs.add_group(await epochs.current_epoch(), model_key(DEFAULT_MODEL),
                               [m.address for m in _members(chain, actors)], WEIGHTS)
        await InferenceClient(inference.contract, sender_for(actors.client)).deposit(ETH)
        return epochs.address, inference.address

    epochs_address, inference_address = await build_once(chain, "inference-ledger", build)
    epochs = EpochsClient(bind(chain.w3, "Epochs", epochs_address), owner_sender)
    inference = InferenceClient(bind(chain.w3, "Inference", inference_address), owner_sender)
    members = _members(chain, actors)
    return Ledger(
        chain=chain,
        registry=registry,
        epochs=epochs,
        inference=inference,
        sender_for=sender_for,
        owner=actors.owner,
        ta=chain.accounts[8],
        client=actors.client,
        non_owner=actors.non_owner,
        members=members,
        group=[m.address for m in members],
        weights=list(WEIGHTS),
        model=model_key(DEFAULT_MODEL),
        price=genesis.model(DEFAULT_MODEL).price_per_token,
        max_draws=await registry.param("max_draws"),
    )


def _members(chain, actors) -> list[Keypair]:  # type: ignore[no-untyped-def]
    return [actors.host, actors.host2, chain.accounts[6], chain.accounts[7]]
