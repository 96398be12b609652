"""Chain write throughput on anvil (--block-time 1): one tx per record vs. batched records per tx.

A "record" here is one ML-node upsert in ``Registry.submit_hardware_diff`` (the Registry's batched write: up to 16
per tx). Both modes go through the same ``TxSender`` (nonce manager, async receipts) and the batched one through
``BatchQueue``; the clock runs from the first submission until the last receipt. Inference start/finish records have
their own benchmark (bench/chain_records.py).
"""

from __future__ import annotations

import asyncio
import sys

from bench.common import Timer, write_result
from dinfer.chain.anvil import AnvilProcess
from dinfer.chain.backends import connect
from dinfer.chain.contracts.registry import HardwareNode, RegistryClient
from dinfer.chain.deploy import bind, deploy_network
from dinfer.chain.txqueue import BatchQueue, TxSender
from dinfer.genesis import load_genesis

RECORDS = 320
BATCH = 16
NODE_IDS = 32  # a host may hold 32 nodes; records upsert them round-robin


async def _measure(records: int = RECORDS, block_time: float = 1.0) -> dict[str, float]:
    anvil = await AnvilProcess.start(block_time=block_time, accounts=4)
    w3 = connect([anvil.url])
    try:
        owner = TxSender(w3, anvil.accounts[0])
        genesis = load_genesis()
        deployment = await deploy_network(w3, owner, genesis)
        model = genesis.models[1].id
        contract = bind(w3, "Registry", deployment.address("Registry"))
        single = RegistryClient(contract, TxSender(w3, anvil.accounts[1]))
        batched = RegistryClient(contract, TxSender(w3, anvil.accounts[2]))
        await asyncio.gather(
            single.register_host("http://a", "{}", 10**18), batched.register_host("http://b", "{}", 10**18)
        )

        def node(i: int) -> HardwareNode:
            return HardwareNode(f"node-{i % NODE_IDS}", (model,), "cpu", i)

        # warm both accounts' node lists so both modes measure upserts of existing entries
        for client in (single, batched):
            for start in range(0, NODE_IDS, BATCH):
                await client.submit_hardware_diff([node(i) for i in range(start, start + BATCH)], [])

        with Timer() as t_single:
            pendings = await asyncio.gather(
                *(single._send("submit_hardware_diff", [node(i).to_chain()], []) for i in range(records))
            )
            receipts_single = await asyncio.gather(*(p.wait() for p in pendings))

        async def flush(batch: list[HardwareNode]):  # type: ignore[no-untyped-def]
            pending = await batched._send("submit_hardware_diff", [n.to_chain() for n in batch], [])
            return await pending.wait()

        queue: BatchQueue[HardwareNode] = BatchQueue(flush, max_size=BATCH, max_delay=0.5)
        with Timer() as t_batched:
            receipts_batched = await asyncio.gather(*(queue.put(node(i)) for i in range(records)))
        unique_batched = {r["transactionHash"]: r for r in receipts_batched}.values()
        gas_single = sum(r["gasUsed"] for r in receipts_single) / records
        gas_batched = sum(r["gasUsed"] for r in unique_batched) / records
        return {
            "records": records,
            "single_records_per_s": records / t_single.seconds,
            "batched_records_per_s": records / t_batched.seconds,
            "single_gas_per_record": gas_single,
            "batched_gas_per_record": gas_batched,
            "batched_txs": len(unique_batched),
            "block_time_s": block_time,
        }
    finally:
        await w3.provider.disconnect()
        anvil.stop()


def main() -> dict[str, float]:
    res = asyncio.run(_measure())
    write_result(
        "chain_throughput",
        [
            {"metric": "records/s, one tx per record", "value": round(res["single_records_per_s"], 1), "unit": "rec/s"},
            {"metric": "records/s, batched (16/tx)", "value": round(res["batched_records_per_s"], 1), "unit": "rec/s",
             "note": "anvil --block-time 1"},
            {"metric": "gas/record, one tx per record", "value": int(res["single_gas_per_record"]), "unit": "gas"},
            {"metric": "gas/record, batched", "value": int(res["batched_gas_per_record"]), "unit": "gas"},
        ],
        res,
    )
    print(res)
    return res


if __name__ == "__main__":
    main()
    sys.exit(0)
