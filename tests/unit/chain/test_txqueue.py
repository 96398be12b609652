"""TxSender and BatchQueue on a real anvil: bursts, reverts, drops and fee bumps, batching."""

from __future__ import annotations

import asyncio

import pytest

from dinfer.chain.anvil import AnvilProcess
from dinfer.chain.backends import connect
from dinfer.chain.deploy import deploy_contract
from dinfer.chain.txqueue import BatchQueue, TxSender
from dinfer.errors import TxDropped, TxReverted
from dinfer.genesis import load_genesis


@pytest.fixture
async def w3(anvil: AnvilProcess):  # type: ignore[no-untyped-def]
    w3 = connect([anvil.url])
    yield w3
    await w3.provider.disconnect()


async def _registry(w3, sender: TxSender):  # type: ignore[no-untyped-def]
    from dinfer.chain.deploy import registry_constructor_args

    return await deploy_contract(w3, sender, "Registry", *registry_constructor_args(load_genesis(), sender.address))


async def test_burst_of_200_without_nonce_gaps(anvil: AnvilProcess, w3) -> None:  # type: ignore[no-untyped-def]
    key = anvil.accounts[1]
    sender = TxSender(w3, key, poll_interval=0.05)
    start = await w3.eth.get_transaction_count(key.address)
    pendings = await asyncio.gather(
        *(sender.send({"to": anvil.accounts[2].address, "value": i + 1, "gas": 21_000}) for i in range(200))
    )
    assert sorted(p.nonce for p in pendings) == list(range(start, start + 200))
    receipts = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in pendings)), timeout=60)
    assert all(r["status"] == 1 for r in receipts)
    assert await w3.eth.get_transaction_count(key.address) == start + 200
    await sender.close()


async def test_revert_by_estimation_uses_no_nonce(anvil: AnvilProcess, w3) -> None:  # type: ignore[no-untyped-def]
    owner = TxSender(w3, anvil.accounts[0], poll_interval=0.05)
    registry = await _registry(w3, owner)
    outsider = TxSender(w3, anvil.accounts[3], poll_interval=0.05)
    before = await w3.eth.get_transaction_count(outsider.address)
    with pytest.raises(TxReverted.named("NotOwner")):
        await outsider.send(registry.functions.set_treasury(outsider.address))
    ok = await outsider.send({"to": owner.address, "value": 1, "gas": 21_000})
    assert ok.nonce == before
    await ok.wait()
    await owner.close()
    await outsider.close()


async def test_mined_revert_does_not_block_the_rest(anvil: AnvilProcess, w3) -> None:  # type: ignore[no-untyped-def]
    owner = TxSender(w3, anvil.accounts[0], poll_interval=0.05)
    registry = await _registry(w3, owner)
    outsider = TxSender(w3, anvil.accounts[3], poll_interval=0.05)
    # an explicit gas limit skips estimation, so the revert happens on chain
    bad = await outsider.send(registry.functions.set_treasury(outsider.address), gas=100_000)
    good = [await outsider.send({"to": owner.address, "value": 1, "gas": 21_000}) for _ in range(5)]
    with pytest.raises(TxReverted.named("NotOwner")) as info:
        await bad.wait()
    assert info.value.tx_hash == bad.tx_hash
    assert all(r["status"] == 1 for r in await asyncio.gather(*(g.wait() for g in good)))
    assert [g.nonce for g in good] == list(range(bad.nonce + 1, bad.nonce + 6))
    await owner.close()
    await outsider.close()


async def _pause_mining(w3) -> None:  # type: ignore[no-untyped-def]
    await w3.provider.make_request("evm_setAutomine", [False])
    await w3.provider.make_request("evm_setIntervalMining", [0])


async def _resume_mining(w3) -> None:  # type: ignore[no-untyped-def]
    await w3.provider.make_request("evm_mine", [])
    await w3.provider.make_request("evm_setIntervalMining", [1])


async def test_dropped_tx_is_resent_with_bumped_fee(anvil: AnvilProcess, w3) -> None:  # type: ignore[no-untyped-def]
    sender = TxSender(w3, anvil.accounts[1], receipt_timeout=0.3, poll_interval=0.05, fee_bump_percent=25,
                      max_bumps=10, drop_check_after=60)
    await _pause_mining(w3)
    pending = await sender.send({"to": anvil.accounts[2].address, "value": 7, "gas": 21_000})
    first_hash, first_fee = pending.tx_hash, pending.params["maxFeePerGas"]
    await w3.provider.make_request("anvil_dropTransaction", [first_hash])
    await asyncio.sleep(0.45)  # past the receipt timeout: the watcher re-sends
    await _resume_mining(w3)
    receipt = await asyncio.wait_for(pending.wait(), timeout=20)
    assert receipt["status"] == 1
    assert pending.bumps >= 1 and pending.tx_hash != first_hash
    assert pending.params["maxFeePerGas"] >= first_fee * 125 // 100
    await sender.close()


async def test_tx_dropped_for_good_gets_its_nonce_filled(anvil: AnvilProcess, w3) -> None:  # type: ignore[no-untyped-def]
    sender = TxSender(w3, anvil.accounts[1], receipt_timeout=1.0, poll_interval=0.05, max_bumps=0, drop_check_after=60)
    await _pause_mining(w3)
    doomed = await sender.send({"to": anvil.accounts[2].address, "value": 7, "gas": 21_000})
    await w3.provider.make_request("anvil_dropTransaction", [doomed.tx_hash])
    after = await sender.send({"to": anvil.accounts[2].address, "value": 8, "gas": 21_000})
    with pytest.raises(TxDropped):  # overdue and out of bumps: its nonce gets a filler
        await asyncio.wait_for(doomed.wait(), timeout=20)
    await _resume_mining(w3)
    receipt = await asyncio.wait_for(after.wait(), timeout=20)  # the later nonce still mines: no gap
    assert receipt["status"] == 1
    assert await w3.eth.get_transaction_count(sender.address) == after.nonce + 1
    await sender.close()


async def test_forgotten_tx_is_resent_unchanged(anvil: AnvilProcess, w3) -> None:  # type: ignore[no-untyped-def]
    """A node that silently drops a pool transaction (anvil under bursts) gets the same signed tx again."""
    sender = TxSender(w3, anvil.accounts[1], receipt_timeout=60, poll_interval=0.05, drop_check_after=0.3)
    await _pause_mining(w3)
    pending = await sender.send({"to": anvil.accounts[2].address, "value": 9, "gas": 21_000})
    await w3.provider.make_request("anvil_dropTransaction", [pending.tx_hash])
    for _ in range(4):  # blocks trigger the watcher's drop check
        await asyncio.sleep(0.2)
        await w3.provider.make_request("evm_mine", [])
    await _resume_mining(w3)
    receipt = await asyncio.wait_for(pending.wait(), timeout=20)
    assert receipt["status"] == 1
    assert pending.bumps == 0 and "0x" + bytes(receipt["transactionHash"]).hex() == pending.tx_hash
    await sender.close()


async def test_back_pressure_bounds_in_flight(anvil: AnvilProcess, w3) -> None:  # type: ignore[no-untyped-def]
    sender = TxSender(w3, anvil.accounts[1], poll_interval=0.05, max_in_flight=5)
    pendings = await asyncio.wait_for(asyncio.gather(
        *(sender.send({"to": anvil.accounts[2].address, "value": 1, "gas": 21_000}) for _ in range(12))
    ), timeout=30)
    assert sender.in_flight <= 5
    await asyncio.wait_for(asyncio.gather(*(p.wait() for p in pendings)), timeout=30)
    assert sender.in_flight == 0
    await sender.close()


async def test_batch_queue_flushes_on_size_and_time() -> None:
    flushed: list[list[int]] = []

    async def flush(records: list[int]) -> str:
        flushed.append(records)
        return f"batch-{len(flushed)}"

    queue: BatchQueue[int] = BatchQueue(flush, max_size=3, max_delay=0.1)
    futures = [queue.put(i) for i in range(7)]
    results = await asyncio.wait_for(asyncio.gather(*futures), timeout=2)
    assert flushed == [[0, 1, 2], [3, 4, 5], [6]]  # two by size, the last by time
    assert results == ["batch-1"] * 3 + ["batch-2"] * 3 + ["batch-3"]


async def test_batch_failure_reaches_every_caller_of_that_batch() -> None:
    async def flush(records: list[int]) -> None:
        raise TxReverted("Boom")

    queue: BatchQueue[int] = BatchQueue(flush, max_size=2, max_delay=0.05)
    futures = [queue.put(1), queue.put(2)]
    for fut in futures:
        with pytest.raises(TxReverted.named("Boom")):
            await fut
    await queue.drain()


async def test_batched_records_land_in_one_tx(anvil: AnvilProcess, w3) -> None:  # type: ignore[no-untyped-def]
    """Records → one tx per flush (here: hardware diffs of up to 16 nodes)."""
    from dinfer.chain.contracts.registry import HardwareNode, RegistryClient

    owner = TxSender(w3, anvil.accounts[0], poll_interval=0.05)
    contract = await _registry(w3, owner)
    genesis = load_genesis()
    for m in genesis.models:
        await owner.transact(contract.functions.register_model(m.to_chain()))
    host = RegistryClient(contract, TxSender(w3, anvil.accounts[1], poll_interval=0.05))
    await host.register_host("http://h", "{}", 10**18)

    async def flush(nodes: list[HardwareNode]):  # type: ignore[no-untyped-def]
        return await host.submit_hardware_diff(nodes, [])

    queue: BatchQueue[HardwareNode] = BatchQueue(flush, max_size=16, max_delay=0.2)
    receipts = await asyncio.gather(*(queue.put(HardwareNode(f"n{i}", (genesis.models[1].id,))) for i in range(20)))
    assert len({r["transactionHash"] for r in receipts}) == 2
    assert len(await host.get_nodes(anvil.accounts[1].address)) == 20
    await owner.close()
