"""Proof-of-Compute: nonces/s of one ML node on this machine, and the wall time of one devnet epoch cycle.

Run: ``.venv/bin/python -m bench.poc`` or ``make bench`` (writes ``bench/results/poc.json``).

1. **Nonces/s per ML node**: a real ML node process (``dinfer mlnode run``) gets ``POST /api/v1/pow/init/generate``
   with ``max_nonces`` and no callback, for the kernel of each genesis model (``params_for_model`` of its
   ``throughput_per_nonce``) at the genesis ``poc_r_target_ppm``; the figure is what its ``/api/v1/pow/status``
   reports when the job is DONE (nonces processed / elapsed), plus the share of valid nonces.
2. **Epoch cycle**: a devnet (3 hosts × 1 ML node, tiny model, 0.5 s blocks, epoch 120 blocks: generate 16,
   validate 10, model loading 4) runs through its first PoC cycle. Measured from the first POC_GENERATE block to the
   moment every host is back in INFERENCE on the new epoch with its ML nodes serving: wall seconds, blocks, batches
   and validations on chain, and the gas of ``switch_epoch``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/poc.py` as well as `python -m bench.run_all`
    sys.path.insert(0, str(REPO))

from bench.common import write_result  # noqa: E402
from dinfer.chain.anvil import free_port  # noqa: E402
from dinfer.chain.backends import connect  # noqa: E402
from dinfer.chain.contracts.epochs import EpochsClient  # noqa: E402
from dinfer.chain.deploy import bind  # noqa: E402
from dinfer.config import DevnetSettings, ProtocolParams  # noqa: E402
from dinfer.devnet import Devnet  # noqa: E402
from dinfer.genesis import load_genesis  # noqa: E402
from dinfer.mlnode.poc import params_for_model  # noqa: E402

NONCES = {100: 60_000, 1000: 8_000}
"""max_nonces per throughput_per_nonce: a few seconds each on 2 cores."""
CYCLE = {"epoch_length_blocks": 120, "poc_generate_blocks": 16, "poc_validate_blocks": 10,
         "model_loading_blocks": 4, "end_of_epoch_blocks": 2}
BLOCK_TIME_S = 0.5
TINY = "dinfer/tiny-random-llama"


def _wait(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ML node exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not answering after {timeout_s} s")


def bench_nonces() -> list[dict[str, Any]]:
    """nonces/s of one ML node process per genesis model kernel."""
    genesis = load_genesis()
    r_target = ProtocolParams().poc_r_target_ppm / 1e6
    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="dinfer-bench-poc-"))
    log = (state / "mlnode.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "dinfer.cli", "mlnode", "run", "--port", str(port),
                             "--node-id", "bench-ml0"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    out: list[dict[str, Any]] = []
    try:
        _wait(f"{base}/livez", proc)
        for model in genesis.models:
            tpn = model.throughput_per_nonce
            p = params_for_model(tpn)
            body = {"block_hash": "0x" + "ab" * 32, "public_key": "0xbench", "node_id": "bench-ml0",
                    "r_target": r_target, "block_height": 1, "batch_size": 256, "max_nonces": NONCES.get(tpn, 8_000),
                    "params": {"dim": p.dim, "seq_len": p.seq_len, "n_heads": p.n_heads, "ffn_mult": p.ffn_mult}}
            httpx.post(f"{base}/api/v1/pow/init/generate", json=body, timeout=30).raise_for_status()
            deadline = time.monotonic() + 300
            while True:
                status = httpx.get(f"{base}/api/v1/pow/status", timeout=10).json()
                if status["status"] in ("DONE", "FAILED", "STOPPED"):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("PoC generation did not finish in 300 s")
                time.sleep(0.2)
            if status["status"] != "DONE":
                raise RuntimeError(f"PoC generation ended {status['status']}: {status.get('last_error')}")
            out.append({"model": model.id, "throughput_per_nonce": tpn, "params": p.__dict__,
                        "nonces": status["nonces_processed"], "valid": status["valid_nonces"],
                        "valid_share": round(status["valid_nonces"] / status["nonces_processed"], 4),
                        "nonces_per_s": status["nonces_per_s"], "r_target": r_target})
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()
    return out


async def _cycle(tiny_model: Path, state: Path) -> dict[str, Any]:
    base = free_port()
    while not 20000 < base < 60000:
        base = free_port()
    settings = DevnetSettings(hosts=3, anvil_port=free_port(), base_port=base - base % 10, block_time_s=BLOCK_TIME_S,
                              state_dir=state, model=TINY, model_path=tiny_model, params=CYCLE,
                              host_poc_stop_margin_blocks=6)
    async with Devnet(settings) as net:
        assert net.info is not None
        url = net.info.hosts[0]["url"]
        w3 = connect([net.info.rpc_url])
        epochs = EpochsClient(bind(w3, "Epochs", net.info.contracts.address("Epochs")))
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                first = (await http.get(f"{url}/v1/epochs/current")).json()
                length, genesis = CYCLE["epoch_length_blocks"], first["genesis_block"]
                height = int(await w3.eth.block_number)
                poc_start = genesis + length * max(1, -(-(height + 1 - genesis) // length))  # next cycle start
                target_epoch = first["epoch"] + 1
                while int(await w3.eth.block_number) < poc_start:
                    await asyncio.sleep(0.05)
                t0, h0 = time.perf_counter(), int(await w3.eth.block_number)
                deadline = time.monotonic() + 300
                while True:
                    states = [(await http.get(f"{h['url']}/health")).json() for h in net.info.hosts]
                    now = (await http.get(f"{url}/v1/epochs/current")).json()
                    serving = all(any(s == "INFERENCE" for s in st["mlnodes"].values()) and TINY in st["serving"]
                                  for st in states)
                    all_back = all(all(s == "INFERENCE" for s in st["mlnodes"].values()) for st in states)
                    if now["epoch"] == target_epoch and serving and all_back:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no full cycle within 300 s: {now}")
                    await asyncio.sleep(0.1)
                wall, blocks = time.perf_counter() - t0, int(await w3.eth.block_number) - h0
            batches = await epochs.get_poc_batches(poc_start)
            switch_block = await epochs.epoch_start_block(target_epoch)
            block = await w3.eth.get_block(switch_block, full_transactions=True)
            switch_gas = 0
            for tx in block["transactions"]:
                if tx["to"] == net.info.contracts.address("Epochs"):
                    receipt = await w3.eth.get_transaction_receipt(tx["hash"])
                    switch_gas = max(switch_gas, int(receipt["gasUsed"]))
        finally:
            await w3.provider.disconnect()
    return {"wall_s": round(wall, 1), "blocks": blocks, "block_time_s": BLOCK_TIME_S, "stages": CYCLE,
            "batches": len(batches), "validations": sum(b.passes + b.fails for b in batches),
            "valid_nonces": sum(b.nonce_count for b in batches), "switch_epoch_gas": switch_gas}


def bench_cycle() -> dict[str, Any]:
    from tests.fixtures.tiny_gguf import write_tiny_gguf

    state = Path(tempfile.mkdtemp(prefix="dinfer-bench-cycle-"))
    return asyncio.run(_cycle(write_tiny_gguf(state / "tiny-llama.gguf"), state / "devnet"))


def main() -> None:
    nonces = bench_nonces()
    cycle = bench_cycle()
    summary: list[dict[str, Any]] = [
        {"metric": f"PoC nonces/s per ML node ({n['model']}, dim {n['params']['dim']})", "value": n["nonces_per_s"],
         "unit": "nonces/s", "note": f"{n['valid_share']:.1%} valid at r_target {n['r_target']}; ML node process, "
                                     "no callback, 2 cores"}
        for n in nonces
    ]
    summary.append({"metric": "devnet epoch cycle, PoC start → new epoch served", "value": cycle["wall_s"], "unit": "s",
                    "note": f"3 hosts, {cycle['blocks']} blocks of {BLOCK_TIME_S} s; {cycle['batches']} batches, "
                            f"{cycle['validations']} validations, switch_epoch {cycle['switch_epoch_gas']:,} gas"})
    path = write_result("poc", summary, {"nonces": nonces, "cycle": cycle})
    print(f"wrote {path}")
    for row in summary:
        print(f"  {row['metric']}: {row['value']} {row['unit']} ({row.get('note', '')})")


if __name__ == "__main__":
    main()
