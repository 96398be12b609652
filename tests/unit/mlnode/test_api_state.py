"""The ML node state machine over real HTTP: UNKNOWN / INFERENCE / POC / STOPPED / FAILED and the routes between."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

from tests.unit.mlnode.helpers import CHAT, get_json, mlnode, poll, process_gone, up

POW = {"block_hash": "0x" + "ab" * 32, "block_height": 7, "public_key": "host-key", "r_target": 1.3}


async def test_lifecycle_unknown_inference_stopped(tmp_path: Path, tiny_gguf_path: Path) -> None:
    async with mlnode(tmp_path, version="v0.3.9", node_id="n-7") as c:
        state = await get_json(c, "/api/v1/state")
        assert (state["state"], state["version"], state["node_id"], state["models"]) == ("UNKNOWN", "v0.3.9", "n-7", [])
        assert (await c.get("/livez")).status_code == 200
        assert (await c.get("/readyz")).status_code == 503
        early = await c.post("/v1/chat/completions", json=CHAT)
        assert early.status_code == 503 and early.headers["retry-after"] == "5"
        assert "no model loaded" in early.json()["error"]["message"]

        resp = await up(c, tiny_gguf_path)
        assert resp.status_code == 200 and resp.json()["state"] == "INFERENCE" and resp.json()["models"] == ["tiny"]
        assert (await c.get("/readyz")).status_code == 200
        health = await get_json(c, "/health")
        assert (health["status"], health["version"], health["models"]) == ("ok", "v0.3.9", ["tiny"])
        assert (await c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2})).status_code == 200

        pid = (await get_json(c, "/api/v1/state"))["engines"][0]["pid"]
        down = await c.post("/api/v1/inference/down")
        assert down.json()["state"] == "STOPPED" and down.json()["engines"] == []
        assert process_gone(pid)
        assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 503

        await up(c, tiny_gguf_path)
        assert (await c.post("/api/v1/stop")).json()["state"] == "STOPPED"
        assert (await c.get("/readyz")).status_code == 503


async def test_every_route_also_answers_under_its_version_prefix(tmp_path: Path, tiny_gguf_path: Path) -> None:
    async with mlnode(tmp_path, version="v0.3.10") as c:
        assert (
            await c.post("/v0.3.10/api/v1/inference/up", json={"model": "tiny", "model_path": str(tiny_gguf_path)})
        ).status_code == 200
        assert (await get_json(c, "/v0.3.10/api/v1/state"))["version"] == "v0.3.10"
        chat = await c.post("/v0.3.10/v1/chat/completions", json={**CHAT, "max_tokens": 2})
        assert chat.status_code == 200 and chat.json()["model"] == "tiny"
        assert (await c.get("/v0.3.10/health")).status_code == 200
        assert "dinfer_mlnode_state" in (await c.get("/v0.3.10/metrics")).text
        assert (await c.get("/v0.3.9/api/v1/state")).status_code == 404


async def test_two_concurrent_ups_one_wins_the_other_gets_409(tmp_path: Path, tiny_gguf_path: Path) -> None:
    async with mlnode(tmp_path) as c:
        first, second = await asyncio.gather(up(c, tiny_gguf_path), up(c, tiny_gguf_path))
        assert sorted([first.status_code, second.status_code]) == [200, 409]
        loser = first if first.status_code == 409 else second
        assert "in progress" in loser.json()["error"]["message"]
        assert (await get_json(c, "/api/v1/state"))["state"] == "INFERENCE"


async def test_async_up_reports_progress_and_blocks_a_second_up(tmp_path: Path, tiny_gguf_path: Path) -> None:
    async with mlnode(tmp_path) as c:
        started = await c.post("/api/v1/inference/up/async", json={"model": "tiny", "model_path": str(tiny_gguf_path)})
        assert started.status_code == 202 and started.json()["status"] == "LOADING"
        assert (await up(c, tiny_gguf_path)).status_code == 409
        done = await poll(lambda: get_json(c, "/api/v1/inference/up/status"), lambda s: s["status"] != "LOADING")
        assert (done["status"], done["state"], done["engines_ready"]) == ("DONE", "INFERENCE", 1)


async def test_bad_up_requests_leave_the_node_as_it_was(tmp_path: Path, tiny_gguf_path: Path) -> None:
    async with mlnode(tmp_path) as c:
        await up(c, tiny_gguf_path)
        cases = [
            ({"model": "no-such-model"}, 404, "unknown model 'no-such-model'"),
            ({"model": "tiny", "model_path": str(tmp_path / "nope.gguf")}, 404, "does not exist"),
            ({"model": "tiny", "model_path": str(tiny_gguf_path), "args": ["--port", "1"]}, 400, "--port"),
            ({"model": "tiny", "model_path": str(tiny_gguf_path), "args": ["--n_ctx"]}, 400, "no value"),
            ({"model": "tiny", "model_path": str(tiny_gguf_path), "dtype": "fp8"}, 400, "dtype"),
            ({"model": "bad model name"}, 400, "model"),
            ({"model": "tiny", "instances": 0}, 400, "instances"),
        ]
        for body, status, words in cases:
            resp = await c.post("/api/v1/inference/up", json=body)
            assert resp.status_code == status, (body, resp.text)
            assert words in resp.json()["error"]["message"], (body, resp.text)
        state = await get_json(c, "/api/v1/state")
        assert state["state"] == "INFERENCE" and state["engines"][0]["state"] == "READY"


async def test_engine_crash_fails_the_node_and_up_recovers(tmp_path: Path, tiny_gguf_path: Path) -> None:
    async with mlnode(tmp_path) as c:
        await up(c, tiny_gguf_path)
        pid = (await get_json(c, "/api/v1/state"))["engines"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        state = await poll(lambda: get_json(c, "/api/v1/state"), lambda s: s["state"] == "FAILED")
        assert "exited unexpectedly" in state["error"]
        assert (await c.get("/health")).status_code == 503
        refused = await c.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 503 and "inference/up recovers" in refused.json()["error"]["message"]
        assert (await up(c, tiny_gguf_path)).json()["state"] == "INFERENCE"
        assert (await c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2})).status_code == 200
        assert "dinfer_mlnode_engine_failures_total 1.0" in (await c.get("/metrics")).text


async def test_poc_pauses_inference_and_up_switches_back(tmp_path: Path, tiny_gguf_path: Path) -> None:
    async with mlnode(tmp_path, retry_after_s=11) as c:
        await up(c, tiny_gguf_path)
        gen = await c.post("/api/v1/pow/init/generate", json={**POW, "batch_size": 64})
        assert gen.status_code == 200 and gen.json()["status"] == "GENERATING"
        state = await get_json(c, "/api/v1/state")
        assert state["state"] == "POC" and state["engines"] == [] and state["models"] == []
        refused = await c.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "11"
        assert "POC" in refused.json()["error"]["message"]
        assert (await c.post("/api/v1/pow/init/generate", json=POW)).status_code == 409
        stopped = await c.post("/api/v1/pow/stop")
        assert stopped.json()["status"] == "STOPPED" and stopped.json()["nonces_processed"] > 0
        assert (await get_json(c, "/api/v1/state"))["state"] == "STOPPED"
        assert (await up(c, tiny_gguf_path)).json()["state"] == "INFERENCE"
        assert (await c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2})).status_code == 200


async def test_instances_and_models_dir(tmp_path: Path, tiny_gguf_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_gguf_path, models / "tiny-copy.gguf")
    async with mlnode(tmp_path, models_dir=models) as c:
        resp = await c.post("/api/v1/inference/up", json={"model": "tiny-copy", "instances": 2})
        assert resp.status_code == 200, resp.text
        engines = resp.json()["engines"]
        assert len(engines) == 2 and len({e["pid"] for e in engines}) == 2
        replies = await asyncio.gather(
            *(c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 3, "model": "tiny-copy"}) for _ in range(4))
        )
        assert all(r.status_code == 200 for r in replies)
