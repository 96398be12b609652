"""Inference charges the epoch's snapshot price: a governance price change mid-epoch applies from the next switch."""

from __future__ import annotations

import dataclasses

import pytest
from epochs_helpers import SMOL, next_poc_start, switch_next

from contracts.inference.inference_ledger import Ledger, make_ledger
from dinfer.chain.contracts.registry import HardwareNode, RegistryClient
from dinfer.errors import TxReverted
from support import events

ROOT = b"\x33" * 32
NONCES = [40, 30, 20, 10]  # PoC nonce counts: epoch 2 weights keep epoch 1's 40/30/20/10 proportions


@pytest.fixture
async def ledger(chain, registry, genesis, actors, sender_for) -> Ledger:  # type: ignore[no-untyped-def]
    """Epochs + PoC + Inference; epoch 1's SmolLM group is four hosts weighted 40/30/20/10."""
    return await make_ledger(chain, registry, genesis, actors, sender_for)


async def start_and_finish(ledger: Ledger, prompt: int, completion: int) -> tuple[int, int]:
    """(reserved, cost) of one inference started and finished now."""
    rec = await ledger.record(prompt=prompt, max_tokens=completion)
    await ledger.start(rec)
    reserved = (await ledger.inference.get_inference(rec.inference_id)).reserved
    await ledger.finish(rec, prompt=prompt, completion=completion)
    return reserved, (await ledger.inference.get_inference(rec.inference_id)).cost


async def test_price_change_applies_from_the_next_snapshot(ledger: Ledger) -> None:
    epochs, registry, chain = ledger.epochs, ledger.registry, ledger.chain
    old = ledger.price
    assert await epochs.snapshot_price(1, ledger.model) == old
    model = await registry.get_governance_model(SMOL)
    await registry.update_model(dataclasses.replace(model, price_per_token=old * 3))
    assert (await registry.get_governance_model(SMOL)).price_per_token == old * 3

    # same epoch: the snapshot price, for an inference started and finished after the change
    assert await start_and_finish(ledger, 10, 5) == (15 * old, 15 * old)
    pending = await ledger.record(prompt=4, max_tokens=6)  # started in epoch 1, finished in epoch 2
    await ledger.start(pending)
    assert await epochs.snapshot_price(1, ledger.model) == old
    with pytest.raises(TxReverted.named("NoSnapshot")):
        await epochs.snapshot_price(2, ledger.model)

    # the members mine: epoch 2's group keeps the group order, weights scaled by throughput_per_nonce (1000)
    for member in ledger.members:
        await RegistryClient(registry.contract, ledger.sender_for(member)).submit_hardware_diff(
            [HardwareNode("n", (SMOL,), "cpu", 10)], []
        )
    await next_poc_start(epochs, registry, chain)
    for member, nonces in zip(ledger.members, NONCES, strict=True):
        await epochs.with_sender(ledger.sender_for(member)).submit_poc_batch(2, "n", SMOL, nonces, ROOT)
    receipt = await switch_next(epochs, registry, chain)
    assert {"epoch": 2, "model_key": ledger.model, "version": 2, "price_per_token": old * 3} in events(
        epochs.contract, receipt, "ModelSnapshotted"
    )
    group = await epochs.get_group(2, ledger.model)
    assert group.members == tuple(ledger.group) and group.weights == tuple(n * 1000 for n in NONCES)
    ledger.weights = list(group.weights)
    assert await epochs.snapshot_price(2, ledger.model) == old * 3
    assert (await epochs.get_epoch_model(2, SMOL)).price_per_token == old * 3
    assert (await epochs.get_epoch_model(1, SMOL)).price_per_token == old

    # epoch 2: the new price; the inference started in epoch 1 still settles at epoch 1's price
    assert await start_and_finish(ledger, 10, 5) == (15 * old * 3, 15 * old * 3)
    balance = await ledger.inference.balance_of(ledger.client.address)
    await ledger.finish(pending, prompt=4, completion=2)
    info = await ledger.inference.get_inference(pending.inference_id)
    assert (info.cost, await ledger.inference.balance_of(ledger.client.address) - balance) == (6 * old, 4 * old)
