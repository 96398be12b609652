"""PoC routes over real HTTP: generation on a worker thread posting batches to a real callback server, validation."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from tests.fixtures.servers import serve_app
from tests.unit.mlnode.helpers import get_json, mlnode, poll

from dinfer import merkle
from dinfer.mlnode.poc import DISTANCE_TOLERANCE, PoCKernel, PoCParams

BLOCK_HASH = "0x" + "5e" * 32
POW = {"block_hash": BLOCK_HASH, "block_height": 120, "public_key": "host-key", "r_target": 1.3}


@asynccontextmanager
async def callback_server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """The host node's side of the PoC callback: records every batch POSTed to ``/generated``."""
    received: list[dict[str, Any]] = []
    app = FastAPI()

    @app.post("/poc/generated")
    async def generated(request: Request) -> dict[str, bool]:
        received.append(await request.json())
        return {"ok": True}

    async with serve_app(app) as url:
        yield url + "/poc", received


async def test_generate_posts_batches_with_merkle_roots(tmp_path: Path) -> None:
    async with mlnode(tmp_path, node_id="node-9") as c, callback_server() as (url, received):
        body = {**POW, "batch_size": 250, "max_nonces": 2000, "start_nonce": 1000, "url": url}
        assert (await c.post("/api/v1/pow/init/generate", json=body)).status_code == 200
        status = await poll(lambda: get_json(c, "/api/v1/pow/status"), lambda s: s["status"] != "GENERATING")
        assert (status["status"], status["nonces_processed"], status["post_errors"]) == ("DONE", 2000, 0)
        assert status["batches_posted"] == len(received) > 0
        assert status["valid_nonces"] == sum(len(b["nonces"]) for b in received)

        kernel = PoCKernel(bytes.fromhex(BLOCK_HASH[2:]), "host-key")
        for batch in received:
            assert (batch["node_id"], batch["block_height"], batch["block_hash"]) == ("node-9", 120, BLOCK_HASH)
            assert all(1000 <= n < 3000 for n in batch["nonces"]) and all(d < 1.3 for d in batch["distances"])
            leaves = [merkle.leaf_hash(n, d) for n, d in zip(batch["nonces"], batch["distances"], strict=True)]
            assert batch["merkle_root"] == "0x" + merkle.merkle_root(leaves).hex()
            assert np.array_equal(kernel.distances(batch["nonces"]), np.float32(batch["distances"]))
        metrics = (await c.get("/metrics")).text
        assert "dinfer_mlnode_poc_nonces_total 2000.0" in metrics


async def test_event_loop_stays_responsive_and_stop_ends_generation(tmp_path: Path) -> None:
    async with mlnode(tmp_path) as c:
        heavy = {**POW, "batch_size": 512, "params": {"dim": 256, "seq_len": 32, "n_heads": 8}}
        assert (await c.post("/api/v1/pow/init/generate", json=heavy)).status_code == 200
        worst = 0.0
        for _ in range(10):
            t0 = time.perf_counter()
            assert (await c.get("/livez")).status_code == 200
            worst = max(worst, time.perf_counter() - t0)
        assert worst < 1.0, f"/livez took {worst:.2f}s during PoC"
        stopped = (await c.post("/api/v1/pow/stop")).json()
        assert stopped["status"] == "STOPPED"
        processed = stopped["nonces_processed"]
        assert (await get_json(c, "/api/v1/pow/status"))["nonces_processed"] == processed  # really stopped


async def test_unreachable_callback_is_counted_not_fatal(tmp_path: Path) -> None:
    async with mlnode(tmp_path, poc_callback_timeout_s=2) as c:
        body = {**POW, "batch_size": 500, "max_nonces": 1000, "url": "http://127.0.0.1:9/nowhere"}
        await c.post("/api/v1/pow/init/generate", json=body)
        status = await poll(lambda: get_json(c, "/api/v1/pow/status"), lambda s: s["status"] != "GENERATING")
        assert status["status"] == "DONE" and status["post_errors"] >= 1 and "nowhere" in status["last_error"]


async def test_validate_judges_each_nonce_and_its_merkle_proof(tmp_path: Path) -> None:
    params = PoCParams(dim=32, seq_len=4, n_heads=2)
    kernel = PoCKernel(bytes.fromhex(BLOCK_HASH[2:]), "host-key", params)
    dist = kernel.distances(range(400))
    valid = [int(n) for n in np.flatnonzero(dist < 1.3)][:20]
    claimed = [float(dist[n]) for n in valid]
    leaves = [merkle.leaf_hash(n, d) for n, d in zip(valid, claimed, strict=True)]
    root = "0x" + merkle.merkle_root(leaves).hex()
    proofs = [["0x" + h.hex() for h in merkle.merkle_proof(leaves, i)] for i in range(len(leaves))]
    tampered = list(claimed)
    tampered[3] -= 0.01
    body = {**POW, "params": {"dim": 32, "seq_len": 4, "n_heads": 2}, "nonces": valid, "distances": tampered}
    async with mlnode(tmp_path) as c:
        out = (await c.post("/api/v1/pow/init/validate", json={**body, "merkle_root": root, "proofs": proofs})).json()
        assert out["tolerance"] == DISTANCE_TOLERANCE and out["n_total"] == len(valid)
        assert [r["ok"] for r in out["results"]] == [i != 3 for i in range(len(valid))]
        assert [r["in_merkle_root"] for r in out["results"]] == [i != 3 for i in range(len(valid))]
        honest = (await c.post("/api/v1/pow/init/validate", json={**body, "distances": claimed})).json()
        assert honest["n_ok"] == len(valid)
        wrong_root = {**body, "distances": claimed, "merkle_root": "0x" + "00" * 32, "proofs": proofs}
        assert (await c.post("/api/v1/pow/init/validate", json=wrong_root)).json()["n_ok"] == 0


async def test_invalid_poc_parameters_are_4xx_naming_the_field(tmp_path: Path) -> None:
    cases = [
        ("generate", {**POW, "batch_size": 0}, "batch_size"),
        ("generate", {**POW, "batch_size": 10**6}, "poc_batch_size_max"),
        ("generate", {**POW, "r_target": -1}, "r_target"),
        ("generate", {**POW, "block_hash": "0xnothex"}, "block_hash"),
        ("generate", {**POW, "block_hash": "0x" + "zz" * 32}, "block_hash"),
        ("generate", {**POW, "params": {"dim": 30, "n_heads": 4}}, "n_heads"),
        ("generate", {**POW, "url": "ftp://host"}, "url"),
        ("generate", {k: v for k, v in POW.items() if k != "public_key"}, "public_key"),
        ("validate", {**POW, "nonces": [1, 2], "distances": [1.0]}, "differ in length"),
        ("validate", {**POW, "nonces": [-1], "distances": [1.0]}, "nonces"),
        (
            "validate",
            {**POW, "nonces": [1], "distances": [9.0], "merkle_root": "0x" + "00" * 32, "proofs": [[]]},
            "0, 4",
        ),
    ]
    async with mlnode(tmp_path) as c:
        for route, body, words in cases:
            resp = await c.post(f"/api/v1/pow/init/{route}", json=body)
            assert resp.status_code == 400, (body, resp.text)
            assert words in resp.json()["error"]["message"], (words, resp.text)
        assert (await get_json(c, "/api/v1/state"))["state"] == "UNKNOWN"
