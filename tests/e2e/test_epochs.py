"""A full epoch cycle on anvil with real host nodes and ML nodes (issue: epochs, PoC, groups, timeslots, settlement).

Layout: host0 one ML node (model A), host1 two (A, A), host2 two (A, B) — host2 alone covers every model. A fourth,
cheating "host" (this test process) registers one node, commits an inflated nonce count in the first PoC cycle and
serves its real (fewer) leaves; the honest hosts' validators must catch it. The test then checks, against the chain:
the stages in order, one batch per mining node (none from POC_SLOT nodes), weights = nonces × throughput_per_nonce
(or the preserved genesis weight), the new groups, frozen snapshots, a chat served during PoC by a host that kept a
POC_SLOT node (the order's first member, without one, skipped and the contract accepting that skipped list), and
rewards with the coverage bonus for exactly host2.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from network import (
    TINY,
    BackgroundDevnet,
    make_settings,
    order_of,
    request_with_first,
    running,
    signed_chat,
    wait_status,
)

from dinfer import merkle
from dinfer.chain.backends import connect
from dinfer.chain.contracts.epochs import EpochsClient, PoCBatch, model_key
from dinfer.chain.contracts.registry import HardwareNode, RegistryClient
from dinfer.chain.deploy import bind
from dinfer.chain.events import ChainEvent, EventPoller, SqliteCursorStore
from dinfer.chain.txqueue import TxSender
from dinfer.crypto import Keypair
from dinfer.devnet import HOST_INDEX_BASE
from dinfer.mlnode.poc import PoCKernel, params_for_model

pytestmark = pytest.mark.e2e

MODEL_B = "dinfer/tiny-b"
PRICE_B = 300_000_000
TPN = 100
# 240 blocks of 0.5 s: the devnet (3 hosts, 5 ML nodes) must be up before the first cycle; its start took 57 s on
# a quiet 2-core machine, so 120 s leaves about twice that.
STAGES = {"epoch_length_blocks": 240, "poc_generate_blocks": 16, "poc_validate_blocks": 12,
          "model_loading_blocks": 6, "end_of_epoch_blocks": 4}
CHEAT_NODE = "cheat-ml0"
CHEAT_FACTOR = 10


def _genesis(path: Path) -> Path:
    model = ('[[models]]\nid = "{id}"\nhf_repo = "{id}"\nhf_commit = "generated-by-dinfer-tests"\n'
             'model_args = ["--n_ctx", "512"]\nvram_mib = 16\nthroughput_per_nonce = {tpn}\n'
             "units_of_compute_per_token = 1\nprice_per_token = {price}\n\n")
    path.write_text('mlnode_version = "v0.1.0"\n\n[params]\ngovernance_delay_blocks = 0\n\n'
                    + model.format(id=TINY, tpn=TPN, price=100_000_000)
                    + model.format(id=MODEL_B, tpn=TPN, price=PRICE_B))
    return path


class CheaterLeaves:
    """The cheating host's public URL: serves its real leaves (fewer than the count it committed)."""

    def __init__(self) -> None:
        self.leaves: dict[int, dict[str, Any]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                body = outer.leaves.get(int(parts[3])) if len(parts) == 5 and parts[3].isdigit() else None
                raw = json.dumps(body or {"error": "unknown"}).encode()
                self.send_response(200 if body else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def cycle_net(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[BackgroundDevnet]:
    tmp = tmp_path_factory.mktemp("epochs")
    settings = make_settings(tmp / "devnet", tiny_model, hosts=3, params=STAGES, genesis=_genesis(tmp / "g.toml"),
                             layout=[[TINY], [TINY, TINY], [TINY, MODEL_B]], model_paths={MODEL_B: tiny_model},
                             host_poc_stop_margin_blocks=6)  # 3 s at 0.5 s blocks: room for stop + seal + mining
    with running(settings) as net:
        yield net


class Chain:
    """Chain access for the test, run on the devnet's loop."""

    def __init__(self, net: BackgroundDevnet) -> None:
        self.net = net
        self.w3 = connect([net.info.rpc_url])

    def run(self, coro: Any, timeout: float = 120) -> Any:
        return self.net.run(coro, timeout)

    def epochs(self, key: str | None = None) -> EpochsClient:
        sender = TxSender(self.w3, Keypair.from_private_key(key), poll_interval=0.1) if key else None
        return EpochsClient(bind(self.w3, "Epochs", self.net.info.contracts.address("Epochs")), sender)

    def registry(self, key: str | None = None) -> RegistryClient:
        sender = TxSender(self.w3, Keypair.from_private_key(key), poll_interval=0.1) if key else None
        return RegistryClient(bind(self.w3, "Registry", self.net.info.contracts.address("Registry")), sender)

    def height(self) -> int:
        async def get() -> int:
            return int(await self.w3.eth.block_number)

        return self.run(get())

    def wait_height(self, target: int, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while self.height() < target:
            assert time.monotonic() < deadline, f"block {target} not reached"
            time.sleep(0.2)

    def events(self, contract_name: str, address: str, tmp: Path) -> list[ChainEvent]:
        seen: list[ChainEvent] = []

        async def handle(ev: ChainEvent) -> None:
            seen.append(ev)

        async def main() -> None:
            store = SqliteCursorStore(tmp / f"cursor-{contract_name}-{time.monotonic_ns()}.sqlite")
            try:
                await EventPoller(self.w3, [bind(self.w3, contract_name, address)], store, "probe", handle).poll_once()
            finally:
                await store.close()

        self.run(main())
        return seen


def _cheat(chain: Chain, key: str, poc_start: int, r_target: float, served: CheaterLeaves) -> tuple[int, int]:
    """Commit CHEAT_FACTOR × the real valid nonces; serve only the real leaves. Returns (real, claimed)."""
    address = Keypair.from_private_key(key).address

    async def main() -> tuple[int, int]:
        block = await chain.w3.eth.get_block(poc_start - 1)
        kernel = PoCKernel(bytes(block["hash"]), address, params_for_model(TPN))
        dist = kernel.distances(np.arange(2000))
        nonces = [int(n) for n in np.nonzero(dist < r_target)[0]]
        distances = [float(dist[n]) for n in nonces]
        root = merkle.merkle_root([merkle.leaf_hash(n, d) for n, d in zip(nonces, distances, strict=True)])
        served.leaves[poc_start] = {"host": address, "node_id": CHEAT_NODE, "poc_start": poc_start,
                                    "nonce_count": len(nonces), "nonces": nonces, "distances": distances,
                                    "merkle_root": "0x" + root.hex()}
        epochs = chain.epochs(key)
        await epochs.submit_poc_batch(await epochs.current_epoch() + 1, CHEAT_NODE, TINY,
                                      len(nonces) * CHEAT_FACTOR, root)
        return len(nonces), len(nonces) * CHEAT_FACTOR

    return chain.run(main())



def test_full_epoch_cycle(cycle_net: BackgroundDevnet, tmp_path: Path) -> None:
    net, chain = cycle_net, Chain(cycle_net)
    hosts = [net.host(i) for i in range(3)]
    addresses = [h["address"] for h in hosts]
    base = hosts[0]["url"]
    leaves_server = CheaterLeaves()
    try:
        cheater_key = net.net.anvil.accounts[HOST_INDEX_BASE + 3].private_key  # type: ignore[union-attr]
        cheater = Keypair.from_private_key(cheater_key).address

        async def register_cheater() -> None:
            reg = chain.registry(cheater_key)
            await reg.register_host(leaves_server.url, "{}", 10**18)
            await reg.submit_hardware_diff([HardwareNode(CHEAT_NODE, (TINY,), "cpu", 100)], [])
            await chain.epochs(net.info.owner_key).fund_rewards(10**17)

        chain.run(register_cheater())

        now = httpx.get(f"{base}/v1/epochs/current", timeout=10).json()
        assert now["epoch"] == 1 and now["stage"] == "INFERENCE"
        genesis, length = now["genesis_block"], STAGES["epoch_length_blocks"]
        poc_start = genesis + length
        assert now["height"] < poc_start, "the devnet took longer to start than one epoch: raise epoch_length_blocks"
        assert {g["model"] for g in now["groups"]} == {TINY, MODEL_B}
        assert now["poc_window"] == {"start": genesis + STAGES["epoch_length_blocks"],
                                     "end": genesis + STAGES["epoch_length_blocks"] + STAGES["poc_generate_blocks"]
                                     + STAGES["poc_validate_blocks"]}
        tiny = next(g for g in now["groups"] if g["model"] == TINY)
        eligible = dict(zip(tiny["members"], tiny["poc_eligible"], strict=True))
        assert sum(eligible.values()) == 1, eligible  # min_poc_slot_nodes = 1: one TINY node keeps serving
        no_slot = next(m for m, e in eligible.items() if not e)

        # --- POC_GENERATE: the cheater commits; a chat is served by a POC_SLOT node meanwhile
        chain.wait_height(poc_start + 1)
        stage_seen = [httpx.get(f"{base}/v1/epochs/current", timeout=10).json()["stage"]]
        r_target = 1_300_000 / 1e6
        real, claimed = _cheat(chain, cheater_key, poc_start, r_target, leaves_server)
        assert real > 0
        # the order starts with a member without a POC_SLOT node: it is skipped, the request lands on the slot host
        body, headers = request_with_first(net.info.demo_client_key, addresses[0], tiny, no_slot, max_tokens=4)
        chat = httpx.post(f"{base}/v1/chat/completions", content=body, headers=headers, timeout=120)
        assert chat.status_code == 200, chat.text
        during = httpx.get(f"{base}/v1/epochs/current", timeout=10).json()
        assert during["stage"] == "POC_GENERATE" and during["in_poc"]
        slot_host = next(m for m, e in eligible.items() if e)
        assert chat.headers["x-dinfer-executor"] == slot_host
        order = order_of(headers, tiny)
        expected_skipped = order[: order.index(slot_host)]
        assert no_slot in expected_skipped
        on_chain = wait_status(base, chat.headers["x-dinfer-inference-id"], "FINISHED")
        assert on_chain["executor"] == slot_host and on_chain["skipped"] == expected_skipped

        # --- follow the stages until the switch is done and models are loaded again
        switch_height = poc_start + STAGES["poc_generate_blocks"] + STAGES["poc_validate_blocks"]
        deadline = time.monotonic() + 240
        while True:
            now = httpx.get(f"{base}/v1/epochs/current", timeout=10).json()
            if now["stage"] != stage_seen[-1]:
                stage_seen.append(now["stage"])
            if now["epoch"] == 2 and now["stage"] == "INFERENCE":
                break
            assert time.monotonic() < deadline, f"no switch to epoch 2: {now}"
            time.sleep(0.2)
        stages = ["POC_GENERATE", "POC_VALIDATE", "SET_NEW_VALIDATORS", "MODEL_LOADING", "INFERENCE"]
        assert [s for s in stages if s in stage_seen] == [s for s in stage_seen if s in stages]
        assert {"POC_GENERATE", "POC_VALIDATE", "INFERENCE"} <= set(stage_seen)

        async def read_chain() -> dict[str, Any]:
            ep = chain.epochs()
            batches = await ep.get_poc_batches(poc_start)
            weights = {(b.host, b.node_id): await ep.calculate_node_weight(poc_start, b.host, b.node_id)
                       for b in batches}
            groups = {m: await ep.get_group(2, model_key(m)) for m in (TINY, MODEL_B)}
            ml_nodes = {(m, p): await ep.get_ml_nodes(1, m, p) for m in (TINY, MODEL_B) for p in addresses}
            return {"batches": batches, "weights": weights, "groups": groups, "ml_nodes1": ml_nodes,
                    "switch": await ep.epoch_start_block(2)}

        state = chain.run(read_chain())
        batches: list[PoCBatch] = state["batches"]
        assert state["switch"] >= switch_height

        # --- batches: one per mining node, none from POC_SLOT nodes; the cheater caught
        by_node = {(b.host, b.node_id): b for b in batches}
        slot1 = {(p, n.node_id) for (_, p), nodes in state["ml_nodes1"].items() for n in nodes if n.poc_slot}
        for model in (TINY, MODEL_B):  # min_poc_slot_nodes = 1: one node per model kept serving through PoC
            assert sum(n.poc_slot for (m, _), nodes in state["ml_nodes1"].items() if m == model for n in nodes) == 1
        all_nodes = {(h["address"], ml["node_id"]) for h in hosts for ml in h["mlnodes"]}
        assert set(by_node) == (all_nodes - slot1) | {(cheater, CHEAT_NODE)}
        cheat = by_node[(cheater, CHEAT_NODE)]
        assert cheat.nonce_count == claimed and cheat.fails > cheat.passes
        assert state["weights"][(cheater, CHEAT_NODE)] == 0
        for key, b in by_node.items():
            if key[0] != cheater:
                assert b.passes >= 2 and b.fails == 0, b
                assert state["weights"][key] == b.nonce_count * TPN

        # --- weights and groups: hand-computed from the batches and the preserved genesis weights
        node_model = {(h["address"], ml["node_id"]): ml["model"] for h in hosts for ml in h["mlnodes"]}
        preserved = {(p, n.node_id): n.poc_weight for (_, p), nodes in state["ml_nodes1"].items() for n in nodes}
        for model in (TINY, MODEL_B):
            expected: dict[str, int] = {}
            for key, m in node_model.items():
                if m == model:
                    w = preserved[key] if key in slot1 else by_node[key].nonce_count * TPN
                    expected[key[0]] = expected.get(key[0], 0) + w
            group = state["groups"][model]
            assert dict(zip(group.members, group.weights, strict=True)) == {a: w for a, w in expected.items() if w}
            assert cheater not in group.members

        # --- settlement of epoch 1: the coverage bonus to exactly host2
        settled = [e for e in chain.events("Epochs", net.info.contracts.address("Epochs"), tmp_path)
                   if e.name == "RewardSettled" and e.args["epoch"] == 1]
        assert {e.args["participant"] for e in settled} == set(addresses)
        assert {e.args["participant"]: e.args["coverage_bonus"] for e in settled} == {
            addresses[0]: False, addresses[1]: False, addresses[2]: True}
        assert all(e.args["amount"] > 0 for e in settled)

        # --- endpoint payloads: leaves behind an on-chain root, current epoch, pricing vs governance
        mined = next(k for k in by_node if k[0] == addresses[0] or k[0] == addresses[1])
        owner_url = next(h["url"] for h in hosts if h["address"] == mined[0])
        leaves = httpx.get(f"{owner_url}/v1/poc/batches/{poc_start}/{mined[1]}", timeout=10).json()
        assert len(leaves["nonces"]) == by_node[mined].nonce_count
        root = merkle.merkle_root([merkle.leaf_hash(n, d) for n, d in zip(leaves["nonces"], leaves["distances"],
                                                                             strict=True)])
        assert root == by_node[mined].merkle_root
        assert httpx.get(f"{owner_url}/v1/poc/batches/{poc_start}/no-such-node", timeout=10).status_code == 404

        async def raise_price() -> None:
            reg = chain.registry(net.info.owner_key)
            model = await reg.get_governance_model(MODEL_B)
            await reg.update_model(dataclasses.replace(model, price_per_token=PRICE_B * 2))

        chain.run(raise_price())
        pricing = {p["model"]: p["price_per_token"] for p in httpx.get(f"{base}/v1/pricing").json()["data"]}
        governance = {p["model"]: p["price_per_token"]
                      for p in httpx.get(f"{base}/v1/governance/pricing").json()["data"]}
        assert pricing[MODEL_B] == PRICE_B and governance[MODEL_B] == PRICE_B * 2
        current = httpx.get(f"{base}/v1/epochs/current", timeout=10).json()
        assert current["snapshot"][MODEL_B]["price_per_token"] == PRICE_B
        assert {g["model"] for g in current["groups"]} == {TINY, MODEL_B}
        models = {m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"]}
        assert models == {TINY, MODEL_B}

        # --- inference works in the new epoch on reloaded ML nodes (while they still load after the switch, the TA
        # answers 503 "no ML node ... is ready": the designed answer, so the client retries, bounded)
        deadline = time.monotonic() + 90
        for attempt in itertools.count():
            body, headers = signed_chat(net.info.demo_client_key, addresses[0], f"after the switch ({attempt})",
                                        max_tokens=4)
            after = httpx.post(f"{base}/v1/chat/completions", content=body, headers=headers, timeout=120)
            if after.status_code != 503 or "is ready" not in after.text or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        assert after.status_code == 200, after.text
        assert after.headers["x-dinfer-epoch"] == "2"

        # --- the host pulls its reward with the CLI (exactly what settlement credited)
        amount = next(e.args["amount"] for e in settled if e.args["participant"] == addresses[2])
        cli = [sys.executable, "-m", "dinfer.cli", "host", "rewards", "--rpc", net.info.rpc_url,
               "--deployment", str(net.net.state_dir / "deployment.json"), "--key", hosts[2]["key"], "--json"]
        shown = subprocess.run([*cli, "--withdraw"], capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["rewards_wei"] == amount
        again = subprocess.run([*cli, "--withdraw"], capture_output=True, text=True, timeout=120)
        assert again.returncode == 1 and "no epoch rewards" in again.stderr and "Traceback" not in again.stderr
    finally:
        leaves_server.close()
        asyncio.run_coroutine_threadsafe(chain.w3.provider.disconnect(), net.loop).result(10)
