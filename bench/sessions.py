"""Sessions: proof gas per 1k tokens, WebSocket compression, concurrent sessions held open by one host.

1. Gas (py-evm in process, exact ``gasUsed``): one session, the client signs an EIP-712 receipt every
   ``checkpoint_tokens`` (Registry, 100) and the host submits ``submit_proof_of_work`` with the latest receipt
   every ``session_proof_checkpoints`` checkpoints (the node default, and 50). Baseline: one receipt-backed proof
   per 100 tokens. Figure: gas per 1 000 proven tokens over the whole run (the first proof of a session pays
   ~34 k more for fresh storage words; it is included). Goal: ≤ 1/20 of the baseline.
2. Compression: a real devnet host (one host, one ML node) and ``SessionClient`` talking to it through a TCP relay
   that counts every byte both ways; the same conversation (several streamed turns with ``max_tokens``) with and
   without permessage-deflate. The full run serves SmolLM2-135M-Instruct (real sentences); ``--tiny`` serves the
   tiny random test model (random tokens compress worst, so its ratio is a lower bound).
3. Concurrent sessions: N session jobs on chain for that host, N ``SessionClient``s opened (``session_init``)
   16 at a time and held open, then every client pings at once; reports open time, ping p50/p99 and the host
   process's RSS growth. Bounded: N sockets, 120 s per phase.

``python -m bench.sessions`` (or ``make bench``) runs the full sizes and writes bench/results/sessions.json;
``python -m bench.sessions --tiny`` runs small sizes and only prints (a smoke run that proves the script works).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Timer, write_result
from dinfer.chain.anvil import free_port
from dinfer.chain.backends import EthTesterBackend, connect
from dinfer.chain.contracts.registry import RegistryClient
from dinfer.chain.contracts.sessions import SessionsClient
from dinfer.chain.deploy import bind, deploy_contract, deploy_sessions, registry_constructor_args
from dinfer.chain.txqueue import TxSender
from dinfer.config import DevnetSettings, NodeSettings
from dinfer.crypto import Keypair, sign_receipt
from dinfer.devnet import Devnet
from dinfer.genesis import load_genesis
from dinfer.sdk.sessions import SessionClient, SessionOptions, create_job

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
TINY_MODEL = "dinfer/tiny-random-llama"
GOAL_RATIO = 1 / 20
PHASE_TIMEOUT_S = 120.0
OPEN_CONCURRENCY = 16
CONVERSATION = [
    "Hi! I'm planning a weekend trip to the mountains. What should I pack for two days of hiking?",
    "Good list. The forecast says it might rain on Saturday afternoon. How should I change my plans?",
    "Which of those items matter most if I can only carry a small daypack?",
    "Thanks. Can you suggest a simple lunch I can prepare the night before?",
    "Last question: how do I tell if a trail is too difficult for a beginner?",
]


@dataclass(frozen=True)
class Sizes:
    proven_tokens: int
    """Tokens proven per gas scenario (a multiple of every proof size)."""
    turns: int
    max_tokens: int
    sessions: int
    model: str


FULL = Sizes(proven_tokens=20_000, turns=5, max_tokens=96, sessions=200, model=SMOLLM2)
TINY = Sizes(proven_tokens=2_000, turns=2, max_tokens=16, sessions=8, model=TINY_MODEL)


# ---------------------------------------------------------------- 1. proof gas (py-evm)


async def _proof_gas(chain: EthTesterBackend, sessions: SessionsClient, host: SessionsClient, client: Keypair,
                     model: str, price: int, total: int, checkpoint: int, per_proof: int) -> dict[str, Any]:
    """Prove ``total`` tokens of a fresh session, one receipt-backed proof per ``per_proof`` tokens."""
    job = await create_job(sessions, host=host.sender.address, model=model,  # type: ignore[union-attr]
                           deposit=total * price, price_per_token=price, max_duration=86_400, proof_interval=3_600)
    receipts_signed, gas = 0, []
    for cumulative in range(checkpoint, total + 1, checkpoint):
        receipt = sign_receipt(chain.chain_id, sessions.address, job, cumulative, client.private_key)
        receipts_signed += 1
        if cumulative % per_proof == 0:
            tx = await host.submit_proof_of_work(job, per_proof, receipt, gas=300_000)
            gas.append(int(tx["gasUsed"]))
    assert await sessions.get_token_usage(job) == total, "every token must be proven"
    return {"tokens_per_proof": per_proof, "proofs": len(gas), "receipts_signed": receipts_signed,
            "gas_total": sum(gas), "gas_first_proof": gas[0], "gas_later_proof_mean": statistics.mean(gas[1:] or gas),
            "gas_per_1k_tokens": sum(gas) * 1000 / total,
            "steady_gas_per_1k_tokens": statistics.mean(gas[1:] or gas) * 1000 / per_proof}


async def measure_gas(sizes: Sizes) -> dict[str, Any]:
    chain = await EthTesterBackend.start()
    owner, host_key, client = chain.accounts[0], chain.accounts[1], chain.accounts[2]
    genesis = load_genesis()
    owner_tx = TxSender(chain.w3, owner, poll_interval=0.01)
    # Registry + Sessions only: proofs touch nothing else (and the bench does not depend on the ledger's wiring)
    registry_contract = await deploy_contract(chain.w3, owner_tx, "Registry",
                                              *registry_constructor_args(genesis, owner.address))
    for m in genesis.models:
        await owner_tx.transact(registry_contract.functions.register_model(m.to_chain()))
    sessions_contract = await deploy_sessions(chain.w3, owner_tx, registry_contract.address)
    host_tx = TxSender(chain.w3, host_key, poll_interval=0.01)
    client_tx = TxSender(chain.w3, client, poll_interval=0.01)
    registry = RegistryClient(registry_contract, host_tx)
    params = await registry.params()
    await registry.register_host("http://bench-host", "{}", params.min_collateral_wei)
    sessions = SessionsClient(sessions_contract, client_tx)
    host = SessionsClient(sessions_contract, host_tx)
    model = genesis.models[0]
    checkpoint = params.checkpoint_tokens
    every = NodeSettings.model_fields["session_proof_checkpoints"].default
    runs = {}
    for label, per_proof in (("baseline_every_checkpoint", checkpoint), ("node_default", every * checkpoint),
                             ("every_50_checkpoints", 50 * checkpoint)):
        total = sizes.proven_tokens - sizes.proven_tokens % per_proof
        runs[label] = await _proof_gas(chain, sessions, host, client, model.id, model.price_per_token, total,
                                       checkpoint, per_proof)
    for sender in (owner_tx, host_tx, client_tx):
        await sender.close()
    base = runs["baseline_every_checkpoint"]
    for run in runs.values():
        run["ratio_to_baseline"] = run["gas_per_1k_tokens"] / base["gas_per_1k_tokens"]
        run["steady_ratio_to_baseline"] = run["steady_gas_per_1k_tokens"] / base["steady_gas_per_1k_tokens"]
    return {"checkpoint_tokens": checkpoint, "session_proof_checkpoints_default": every, "runs": runs}


# ---------------------------------------------------------------- 2 + 3. a devnet host


class CountingRelay:
    """A TCP relay to ``target`` that counts the bytes of every connection, both directions."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = 0
        self.down = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if upstream:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    def reset(self) -> None:
        self.up = self.down = 0

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def _conversation(sessions: SessionsClient, client: Keypair, job: int, url: str, sizes: Sizes,
                        compression: bool) -> dict[str, Any]:
    options = SessionOptions(compression=compression)
    session = await SessionClient.attach(sessions, client, job, url=url, options=options)
    chunks, tokens = 0, 0
    try:
        for text in CONVERSATION[: sizes.turns]:
            stream = session.send_prompt(text, max_tokens=sizes.max_tokens, temperature=0.0)
            async for _ in stream:
                chunks += 1
            assert stream.result is not None
            tokens += stream.result.usage.total_tokens
    finally:
        await session.close()
    return {"chunks": chunks, "tokens": tokens, "receipts": len(session.receipts.signed)}


async def measure_compression(net: Devnet, sessions: SessionsClient, client: Keypair, sizes: Sizes) -> dict[str, Any]:
    assert net.info is not None
    host = net.info.hosts[0]
    relay = CountingRelay(int(host["url"].rsplit(":", 1)[1]))
    relay_url = await relay.start()
    out: dict[str, Any] = {"model": sizes.model, "turns": sizes.turns, "max_tokens": sizes.max_tokens}
    try:
        for compression in (False, True):
            job = await create_job(sessions, host=host["address"], model=sizes.model, deposit=10**17,
                                   price_per_token=None, max_duration=3600, proof_interval=600)
            relay.reset()
            run = await asyncio.wait_for(_conversation(sessions, client, job, relay_url, sizes, compression),
                                         PHASE_TIMEOUT_S)
            out["deflate" if compression else "plain"] = {**run, "bytes_up": relay.up, "bytes_down": relay.down,
                                                          "bytes_total": relay.up + relay.down}
    finally:
        await relay.close()
    out["ratio"] = out["plain"]["bytes_total"] / out["deflate"]["bytes_total"]
    return out


def _rss_kib(pid: int | None) -> int:
    if pid is None:
        return 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def measure_concurrency(net: Devnet, sessions: SessionsClient, client: Keypair, sizes: Sizes) -> dict[str, Any]:
    assert net.info is not None
    host = net.info.hosts[0]
    pid = net.supervisor.processes["host0"].pid
    with Timer() as t_chain:
        jobs = await asyncio.wait_for(asyncio.gather(*(
            create_job(sessions, host=host["address"], model=sizes.model, deposit=10**15, price_per_token=None,
                       max_duration=3600, proof_interval=600) for _ in range(sizes.sessions))), PHASE_TIMEOUT_S)
    rss_before = _rss_kib(pid)
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    open_times: list[float] = []

    async def open_one(job: int) -> SessionClient:
        async with gate:
            started = time.perf_counter()
            session = await SessionClient.attach(sessions, client, job, url=host["url"], model=sizes.model)
            open_times.append(time.perf_counter() - started)
            return session

    clients: list[SessionClient] = []
    try:
        with Timer() as t_open:
            clients = list(await asyncio.wait_for(asyncio.gather(*(open_one(j) for j in jobs)), PHASE_TIMEOUT_S))
        rss_open = _rss_kib(pid)
        with Timer() as t_ping:
            pings = await asyncio.wait_for(asyncio.gather(*(c.ping() for c in clients)), PHASE_TIMEOUT_S)
        pings_ms = sorted(p * 1000 for p in pings)
        return {
            "sessions": len(clients), "create_jobs_s": t_chain.seconds, "open_all_s": t_open.seconds,
            "open_p50_ms": statistics.median(open_times) * 1000, "ping_all_s": t_ping.seconds,
            "ping_p50_ms": statistics.median(pings_ms), "ping_p99_ms": pings_ms[round(0.99 * (len(pings_ms) - 1))],
            "host_rss_kib_before": rss_before, "host_rss_kib_open": rss_open,
            "host_rss_kib_per_session": (rss_open - rss_before) / max(1, len(clients)),
        }
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def _tiny_model(state: Path) -> Path:
    """The tiny random GGUF of the test suite (written on the fly; no download)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.fixtures.tiny_gguf import write_tiny_gguf

    return write_tiny_gguf(state / "tiny-llama.gguf")


async def measure_host(sizes: Sizes, state: Path, model_path: Path | None) -> dict[str, Any]:
    base = free_port()
    base = 20000 + base % 30000
    settings = DevnetSettings(hosts=1, anvil_port=free_port(), base_port=base - base % 10, block_time_s=0.5,
                              state_dir=state, model=sizes.model, model_path=model_path, mlnode_threads=1,
                              host_rate_limit_per_minute=100_000)
    net = Devnet(settings)
    await net.start()
    assert net.info is not None
    w3 = connect([net.info.rpc_url])
    client = Keypair.from_private_key(net.info.demo_client_key)
    sender = TxSender(w3, client, poll_interval=0.1)
    try:
        sessions = SessionsClient(bind(w3, "Sessions", net.info.contracts.address("Sessions")), sender)
        compression = await measure_compression(net, sessions, client, sizes)
        concurrency = await measure_concurrency(net, sessions, client, sizes)
        return {"compression": compression, "concurrency": concurrency, "cpus": os.cpu_count()}
    finally:
        await sender.close()
        await w3.provider.disconnect()
        await net.stop()


# ---------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = sys.argv[1:] if argv is None else argv
    tiny = "--tiny" in args
    sizes = TINY if tiny else FULL
    gas = asyncio.run(measure_gas(sizes))
    state = Path(tempfile.mkdtemp(prefix="dinfer-bench-sessions-"))
    host = asyncio.run(measure_host(sizes, state, _tiny_model(state) if tiny else None))
    runs = gas["runs"]
    default, fifty = runs["node_default"], runs["every_50_checkpoints"]
    comp, conc = host["compression"], host["concurrency"]
    summary = [
        {"metric": f"proof gas per 1k tokens, proof every {gas['session_proof_checkpoints_default']} checkpoints "
                   "(node default)", "value": round(default["gas_per_1k_tokens"]), "unit": "gas",
         "goal": f"≤ 1/20 of baseline ({runs['baseline_every_checkpoint']['gas_per_1k_tokens'] / 20:,.0f})",
         "note": f"ratio {default['ratio_to_baseline']:.3f} (steady state {default['steady_ratio_to_baseline']:.3f})"},
        {"metric": "proof gas per 1k tokens, proof every 50 checkpoints", "value": round(fifty["gas_per_1k_tokens"]),
         "unit": "gas", "goal": "",
         "note": f"ratio {fifty['ratio_to_baseline']:.3f} (steady state {fifty['steady_ratio_to_baseline']:.3f})"},
        {"metric": "proof gas per 1k tokens, baseline proof per 100 tokens",
         "value": round(runs["baseline_every_checkpoint"]["gas_per_1k_tokens"]), "unit": "gas"},
        {"metric": "WS bytes plain / permessage-deflate", "value": round(comp["ratio"], 2), "unit": "×",
         "note": f"{comp['model']}, {comp['turns']} turns: {comp['plain']['bytes_total']:,} vs "
                 f"{comp['deflate']['bytes_total']:,} bytes"},
        {"metric": f"sessions held open by one host ({host['cpus']} cores)", "value": conc["sessions"],
         "unit": "sockets", "note": f"open all {conc['open_all_s']:.1f} s, ping p50 {conc['ping_p50_ms']:.1f} ms / "
                                    f"p99 {conc['ping_p99_ms']:.1f} ms, "
                                    f"{conc['host_rss_kib_per_session']:.0f} KiB RSS each"},
    ]
    result = {"sizes": sizes.__dict__, "gas": gas, **host}
    if not tiny:
        write_result("sessions", summary, result)
    print(json.dumps({"summary": summary, "details": result}, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
