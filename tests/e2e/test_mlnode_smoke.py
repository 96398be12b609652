"""Smoke test with the real SmolLM2-135M-Instruct through ``dinfer mlnode run`` (CLI → app → llama.cpp)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest
from tests.fixtures.processes import mlnode_process
from tests.fixtures.servers import free_port

from dinfer.mlnode.models import SMOLLM2_ID

pytestmark = pytest.mark.e2e
QUESTION = {"messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlnode_process(free_port(), "v0.1.0", "smoke", tmp_path_factory.mktemp("smoke"), "--model", SMOLLM2_ID) as url:
        yield url


def test_smollm2_answers_and_usage_matches_the_engine(node: str) -> None:
    with httpx.Client(base_url=node, timeout=120) as c:
        state = c.get("/api/v1/state").json()
        assert state["state"] == "INFERENCE" and state["models"] == [SMOLLM2_ID]
        body = {**QUESTION, "max_tokens": 24, "temperature": 0}
        plain = c.post("/v1/chat/completions", json=body).json()
        assert "paris" in plain["choices"][0]["message"]["content"].lower()

        with c.stream(
            "POST", "/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
        ) as r:
            events = [orjson.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        streamed = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
        assert streamed == plain["choices"][0]["message"]["content"]
        assert events[-1]["usage"] == plain["usage"]

        # the engine's own count for the same request (non-streaming, where llama.cpp does report usage)
        engine_port = state["engines"][0]["port"]
        direct = httpx.post(f"http://127.0.0.1:{engine_port}/v1/chat/completions", json=body, timeout=120).json()
        assert direct["choices"][0]["message"]["content"] == streamed
        assert direct["usage"] == plain["usage"]
