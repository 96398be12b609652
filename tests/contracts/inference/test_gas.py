"""Gas per inference with batches of 50 (start + finish, signature and order check included) at n = 64.

Ten clients and four executors share the batch, so most balance words are touched cold once per tx, and each
executor's finish is its first of the epoch (it writes the executor's fresh statistics word). The steady-state
figure of issue #5's goal (<= 60,000) is `bench/chain_records.py`'s; this test bounds the cold case."""

from __future__ import annotations

from eth_utils import to_checksum_address
from inference_ledger import Ledger

from dinfer.chain.contracts.inference import FinishRecord
from dinfer.crypto import Keypair
from support import events

BATCH = 50
CLIENTS = 10
GROUP = 64


async def test_gas_per_inference_batched(ledger: Ledger) -> None:
    funded = [m.address for m in ledger.members]
    members = funded + [to_checksum_address(bytes([0xAA, i]) * 10) for i in range(GROUP - len(funded))]
    await ledger.epochs.add_group(2, ledger.model, members, [100] * GROUP, estimate=False)
    await ledger.epochs.advance_epoch()
    ledger.group, ledger.weights = members, [100] * GROUP  # only the four funded members can send finishes
    clients = [Keypair.generate() for _ in range(CLIENTS)]  # distinct clients: cold balance words, like real batches
    bank = ledger.sender_for(ledger.chain.accounts[9])
    for client in clients:
        await bank.transact({"to": client.address, "value": 10**18})
        await ledger.as_(client).deposit(10**17)
    records = [
        await ledger.record(
            client=clients[i % CLIENTS],
            prompt=50,
            max_tokens=200,
            where=lambda e, s: e in funded,
            active=[True] * GROUP,
        )
        for i in range(BATCH)
    ]
    start = await ledger.as_(ledger.ta).start_inferences(records, gas=8_000_000)
    assert len(events(ledger.inference.contract, start, "InferenceStarted")) == BATCH
    finish_gas = 0
    for executor in funded:
        mine = [FinishRecord(r.inference_id, 50, 100) for r in records if r.executor == executor]
        if mine:
            receipt = await ledger.as_(ledger.member(executor)).finish_inferences(mine, gas=8_000_000)
            assert len(events(ledger.inference.contract, receipt, "InferenceFinished")) == len(mine)
            finish_gas += receipt["gasUsed"]
    per_start = start["gasUsed"] / BATCH
    per_finish = finish_gas / BATCH
    print(
        f"gas per inference at n={GROUP}, batch {BATCH}, {CLIENTS} clients, {len(funded)} executors: "
        f"start {per_start:.0f} + finish {per_finish:.0f} = {per_start + per_finish:.0f}"
    )
    assert per_start < 50_000 and per_start + per_finish < 75_000
